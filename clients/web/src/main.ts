/** The web app's entry: resume the login kept in this tab, or show the sign-in page. */

import { ChatApp } from "./chat-app.js";
import { showLogin } from "./login-view.js";
import { ImrayClient } from "./sdk/index.js";
import { forgetLogin, loadLogin, saveClient } from "./session.js";

function run(client: ImrayClient, username: string): void {
  saveClient(client, username);
  const app = new ChatApp(client, username, () => {
    forgetLogin();
    showLogin(run);
  });
  app.start().catch(() => {
    // The kept login no longer works (revoked, expired refresh token): sign in again.
    void client.close();
    forgetLogin();
    showLogin(run);
  });
}

const kept = loadLogin();
if (kept !== null) run(ImrayClient.fromTokens(location.origin, kept.tokens), kept.username);
else showLogin(run);
