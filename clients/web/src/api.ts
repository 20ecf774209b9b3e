/** The HTTP calls the app makes, through the SDK's client (newest access token, one refresh on a 401). */

import type { ImrayClient } from "./sdk/index.js";
import type { ContactRequests, ConversationItem, Group, GroupSettings, Msg, PresenceItem, Upload, User } from "./wire.js";

export class Api {
  constructor(private readonly client: ImrayClient) {}

  async conversations(): Promise<ConversationItem[]> {
    return (await this.client.conversations()) as unknown as ConversationItem[];
  }

  /** The `limit` messages before `beforeSeq`, ascending. */
  async history(conv: string, beforeSeq: number, limit: number): Promise<Msg[]> {
    return (await this.client.history(conv, { beforeSeq, limit })) as Msg[];
  }

  async user(id: number): Promise<User> {
    return (await this.client.user(id)) as User;
  }

  /** The user with exactly this username (case ignored), or null (the SDK has no search call). */
  async userNamed(username: string): Promise<User | null> {
    const page = await this.client.authorized(async (token) => {
      const answer = await this.client.api.request("GET", "/api/users", { token, query: { prefix: username, limit: 20 } });
      return (await answer.json()) as { users: User[] };
    });
    return page.users.find((u) => u.username.toLowerCase() === username.toLowerCase()) ?? null;
  }

  async group(id: number): Promise<Group> {
    return (await this.client.group(id)) as Group;
  }

  async createGroup(name: string, members: number[]): Promise<Group> {
    return (await this.client.createGroup(name, members)) as Group;
  }

  /** Any JSON call the SDK has no method for (docs/protocol.md §5, §9, §10); undefined for a 204. */
  async call<T = unknown>(method: string, path: string, json?: unknown): Promise<T> {
    return this.client.authorized(async (token) => {
      const answer = await this.client.api.request(method, path, { token, json });
      return (answer.status === 204 ? undefined : await answer.json()) as T;
    });
  }

  // -- message lifecycle (§9) ----------------------------------------------------------------

  private messagePath(conv: string, seq: number): string {
    return `/api/conversations/${encodeURIComponent(conv)}/messages/${seq}`;
  }

  async recall(conv: string, seq: number): Promise<void> {
    await this.call("POST", `${this.messagePath(conv, seq)}/recall`, {});
  }

  async edit(conv: string, seq: number, body: string): Promise<void> {
    await this.call("PUT", this.messagePath(conv, seq), { body });
  }

  async react(conv: string, seq: number, emoji: string, on: boolean): Promise<void> {
    await this.call(on ? "PUT" : "DELETE", `${this.messagePath(conv, seq)}/reactions`, { emoji });
  }

  async deleteForMe(conv: string, seq: number): Promise<void> {
    await this.call("DELETE", this.messagePath(conv, seq));
  }

  // -- group administration (§10) --------------------------------------------------------------

  updateGroup(id: number, fields: GroupSettings): Promise<Group> {
    return this.call<Group>("PATCH", `/api/groups/${id}`, fields);
  }

  addMembers(id: number, userIds: number[]): Promise<Group> {
    return this.call<Group>("POST", `/api/groups/${id}/members`, { user_ids: userIds });
  }

  async removeMember(id: number, userId: number): Promise<void> {
    await this.call("DELETE", `/api/groups/${id}/members/${userId}`);
  }

  setRole(id: number, userId: number, role: "admin" | "member"): Promise<Group> {
    return this.call<Group>("PUT", `/api/groups/${id}/members/${userId}/role`, { role });
  }

  setMuted(id: number, userId: number, muted: boolean): Promise<Group> {
    return this.call<Group>("PUT", `/api/groups/${id}/members/${userId}/mute`, { muted });
  }

  transfer(id: number, userId: number): Promise<Group> {
    return this.call<Group>("POST", `/api/groups/${id}/owner`, { user_id: userId });
  }

  async dissolve(id: number): Promise<void> {
    await this.call("DELETE", `/api/groups/${id}`);
  }

  // -- contacts, presence and blocks (§5, §3) ----------------------------------------------------

  contacts(): Promise<{ contacts: (User & { user_id: number })[] }> {
    return this.call("GET", "/api/contacts");
  }

  contactRequests(): Promise<ContactRequests> {
    return this.call("GET", "/api/contacts/requests");
  }

  presence(): Promise<{ contacts: PresenceItem[] }> {
    return this.call("GET", "/api/contacts/presence");
  }

  async askContact(userId: number): Promise<void> {
    await this.call("POST", "/api/contacts/requests", { user_id: userId });
  }

  async answerRequest(userId: number, accept: boolean): Promise<void> {
    await this.call("POST", `/api/contacts/requests/${userId}/${accept ? "accept" : "decline"}`);
  }

  async cancelRequest(userId: number): Promise<void> {
    await this.call("DELETE", `/api/contacts/requests/${userId}`);
  }

  async removeContact(userId: number): Promise<void> {
    await this.call("DELETE", `/api/contacts/${userId}`);
  }

  blocks(): Promise<{ user_ids: number[] }> {
    return this.call("GET", "/api/users/me/blocks");
  }

  async block(userId: number, on: boolean): Promise<void> {
    await this.call(on ? "PUT" : "DELETE", `/api/users/me/blocks/${userId}`);
  }

  me(): Promise<User> {
    return this.client.me() as Promise<User>;
  }

  setNickname(nickname: string): Promise<User> {
    return this.call<User>("PATCH", "/api/users/me", { nickname });
  }

  setAvatar(file: File): Promise<User> {
    const form = new FormData();
    form.append("file", file, file.name);
    return this.client.authorized(async (token) =>
      (await (await this.client.api.request("PUT", "/api/users/me/avatar", { token, body: form })).json()) as User);
  }

  /** An avatar's bytes, read with the bearer token from the gateway's /app/users/{id}/avatar: the
   * same answer as the avatar_url the server gave (/api/users/{id}/avatar), but never a redirect to
   * an object store on another origin, which the page's fetch could not read. */
  async blobAt(url: string): Promise<Blob> {
    const path = new URL(url, location.href).pathname.replace(/^\/api\/users\/(\d+)\/avatar$/, "/app/users/$1/avatar");
    return this.client.authorized(async (token) => {
      const answer = await this.client.api.request("GET", path, { token });
      if (!answer.ok) throw new Error(`avatar: HTTP ${answer.status}`);
      return answer.blob();
    });
  }

  upload(file: File): Promise<Upload> {
    return this.client.uploadFile(file, file.name);
  }

  /** A file's bytes and its name (from Content-Disposition), fetched with the bearer token from the
   * gateway's /app/files route: the same answer as /api/files, but never a redirect to an object store
   * on another origin (which a browser's fetch could not read without CORS headers there). */
  async fileBlob(fileId: string): Promise<{ blob: Blob; name: string }> {
    const answer = await this.client.authorized((token) =>
      this.client.api.request("GET", `/app/files/${encodeURIComponent(fileId)}`, { token }));
    const disposition = answer.headers.get("Content-Disposition") ?? "";
    const quoted = /filename\*=UTF-8''([^;]+)/i.exec(disposition);
    return { blob: await answer.blob(), name: quoted !== null ? decodeURIComponent(quoted[1]) : "file" };
  }
}

/** What an error says to a person: the server's `detail` when there is one. */
export function reasonOf(error: unknown): string {
  if (typeof error === "object" && error !== null && "detail" in error && typeof error.detail === "string") return error.detail;
  if (typeof error === "object" && error !== null && "error" in error && error.error === "invalid_grant") return "wrong username or password";
  return error instanceof Error ? error.message : String(error);
}
