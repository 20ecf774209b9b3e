/** The login kept in sessionStorage, so a reload of the tab stays signed in (closing the tab forgets it). */

import type { ImrayClient, TokenResponse } from "./sdk/index.js";

const KEY = "imray.login";

export interface StoredLogin {
  username: string;
  tokens: TokenResponse;
}

export function loadLogin(): StoredLogin | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    return raw === null ? null : (JSON.parse(raw) as StoredLogin);
  } catch {
    return null;
  }
}

/** Keep the client's current tokens (they rotate on every renewal: an old refresh token would end the login). */
export function saveClient(client: ImrayClient, username: string): void {
  if (client.state === "closed" && sessionStorage.getItem(KEY) === null) return;  // logged out
  const tokens: TokenResponse = {
    access_token: client.accessToken,
    token_type: "Bearer",
    expires_in: Math.max(0, Math.floor((client.expiresAt - Date.now()) / 1000)),
    refresh_token: client.refreshToken,
    scope: "",
    user_id: client.userId,
    socket_url: client.socketUrl,
    socket_node: client.socketNode,
  };
  sessionStorage.setItem(KEY, JSON.stringify({ username, tokens } satisfies StoredLogin));
}

export function forgetLogin(): void {
  sessionStorage.removeItem(KEY);
}
