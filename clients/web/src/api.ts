/** The HTTP calls the app makes, through the SDK's client (newest access token, one refresh on a 401). */

import type { ImrayClient } from "./sdk/index.js";
import type { ConversationItem, Group, Msg, Upload, User } from "./wire.js";

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
