/** HttpApi: imray's HTTP side over fetch, without state (tokens are passed in). */

import { ImrayHttpError } from "./errors.js";
import type { Msg } from "./events.js";

export const PUBLIC_CLIENT_ID = "imray-app";

/** The password and refresh grants' answer (RFC 6749 §5.1 plus imray's fields). */
export interface TokenResponse {
  access_token: string;
  token_type: string;
  expires_in: number;
  refresh_token: string;
  scope: string;
  user_id: number;
  socket_url: string;
  socket_node: string;
}

/** `POST /api/socket/assign`: a fresh pin for when the pinned node has gone. */
export interface AssignResponse {
  socket_url: string;
  socket_node: string;
  access_token: string;
  expires_in: number;
}

export interface User {
  id: number;
  username: string;
  nickname: string;
  avatar_url: string | null;
  [key: string]: unknown;
}

/** One item of `GET /api/conversations`. */
export interface Conversation {
  conv: string;
  last_seq: number;
  read_seq: number;
  unread: number;
  last_message: Msg | null;
  mentioned?: boolean;
  pinned?: boolean;
  muted?: boolean;
  updated_at?: number;
  cursor?: string;
  [key: string]: unknown;
}

export interface Group {
  id: number;
  conv: string;
  name: string;
  owner_id: number;
  members: number[];
  [key: string]: unknown;
}

export interface FileInfo {
  file_id: string;
  url: string;
  content_type: string;
  size: number;
}

export interface HistoryOptions {
  afterSeq?: number;
  beforeSeq?: number;
  /** 1..200 (the server's default is 50). */
  limit?: number;
}

export interface RequestOptions {
  token?: string;
  query?: Record<string, string | number | undefined>;
  /** A JSON body. */
  json?: unknown;
  /** An `application/x-www-form-urlencoded` body (the OAuth2 endpoints). */
  form?: Record<string, string | undefined>;
  /** Any other body (FormData for uploads). */
  body?: BodyInit;
}

export interface HttpOptions {
  fetch?: typeof fetch;
  clientId?: string;
  /** Each request's deadline (default 30 s): the SDK never waits forever. */
  timeoutMs?: number;
}

export class HttpApi {
  readonly baseUrl: string;
  readonly clientId: string;
  private readonly fetchFn: typeof fetch;
  private readonly timeoutMs: number;

  constructor(baseUrl: string, options: HttpOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.clientId = options.clientId ?? PUBLIC_CLIENT_ID;
    this.fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  register(username: string, password: string, nickname?: string): Promise<User> {
    return this.json("POST", "/api/users", { json: { username, password, ...(nickname !== undefined ? { nickname } : {}) } });
  }

  /** The password grant. */
  login(username: string, password: string): Promise<TokenResponse> {
    return this.json("POST", "/oauth2/token", {
      form: { grant_type: "password", username, password, client_id: this.clientId },
    });
  }

  /** The refresh grant; `socketNode` keeps the new access token pinned to that node while it lives. */
  refresh(refreshToken: string, socketNode?: string): Promise<TokenResponse> {
    return this.json("POST", "/oauth2/token", {
      form: { grant_type: "refresh_token", refresh_token: refreshToken, client_id: this.clientId, socket_node: socketNode },
    });
  }

  /** Revokes the whole login (RFC 7009). */
  async revoke(refreshToken: string): Promise<void> {
    await this.json("POST", "/oauth2/revoke", { form: { token: refreshToken, client_id: this.clientId } });
  }

  assign(token: string): Promise<AssignResponse> {
    return this.json("POST", "/api/socket/assign", { token });
  }

  me(token: string): Promise<User> {
    return this.json("GET", "/api/users/me", { token });
  }

  user(token: string, userId: number): Promise<User> {
    return this.json("GET", `/api/users/${userId}`, { token });
  }

  /** The whole conversation list (every page, 200 at a time). */
  async conversations(token: string): Promise<Conversation[]> {
    const all: Conversation[] = [];
    let after: string | undefined;
    for (;;) {
      const page: Conversation[] = await this.json("GET", "/api/conversations", { token, query: { limit: 200, after } });
      all.push(...page);
      if (page.length < 200 || !page[page.length - 1]?.cursor) return all;
      after = page[page.length - 1]!.cursor;
    }
  }

  /** One page of a conversation's history, seq ascending. */
  async history(token: string, conv: string, options: HistoryOptions = {}): Promise<Msg[]> {
    const answer: { messages: Msg[] } = await this.json("GET", `/api/conversations/${encodeURIComponent(conv)}/messages`, {
      token,
      query: { after_seq: options.afterSeq, before_seq: options.beforeSeq, limit: options.limit },
    });
    if (!answer || !Array.isArray(answer.messages)) throw new ImrayHttpError(200, `GET history of ${conv}`, answer);
    return answer.messages;
  }

  createGroup(token: string, name: string, members: number[] = []): Promise<Group> {
    return this.json("POST", "/api/groups", { token, json: { name, members } });
  }

  addMembers(token: string, groupId: number, userIds: number[]): Promise<Group> {
    return this.json("POST", `/api/groups/${groupId}/members`, { token, json: { user_ids: userIds } });
  }

  async removeMember(token: string, groupId: number, userId: number): Promise<void> {
    await this.request("DELETE", `/api/groups/${groupId}/members/${userId}`, { token });
  }

  group(token: string, groupId: number): Promise<Group> {
    return this.json("GET", `/api/groups/${groupId}`, { token });
  }

  /** Uploads a file (multipart field `file`); send it with `kind` image or file and its `file_id`. */
  uploadFile(token: string, data: Blob | Uint8Array, filename: string, contentType = "application/octet-stream"): Promise<FileInfo> {
    const blob = data instanceof Blob ? data : new Blob([data as Uint8Array<ArrayBuffer>], { type: contentType });
    const form = new FormData();
    form.append("file", blob.type ? blob : new Blob([blob], { type: contentType }), filename);
    return this.json("POST", "/api/files", { token, body: form });
  }

  /** A file's bytes as a Blob (in a browser: `URL.createObjectURL(blob)` for an <img>). */
  async fileBlob(token: string, fileId: string): Promise<Blob> {
    const res = await this.request("GET", `/api/files/${encodeURIComponent(fileId)}`, { token });
    return res.blob();
  }

  /** Any call; a non-2xx answer rejects with ImrayHttpError. */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const url = new URL(this.baseUrl + path);
    for (const [key, value] of Object.entries(options.query ?? {})) if (value !== undefined) url.searchParams.set(key, String(value));
    const headers: Record<string, string> = { accept: "application/json" };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    let body: BodyInit | undefined = options.body;
    if (options.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.json);
    } else if (options.form) {
      const form = new URLSearchParams();
      for (const [key, value] of Object.entries(options.form)) if (value !== undefined) form.set(key, value);
      headers["content-type"] = "application/x-www-form-urlencoded";
      body = form.toString();
    }
    const what = `${method} ${path}`;
    let res: Response;
    try {
      res = await this.fetchFn(url, { method, headers, body, signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (err) {
      throw new ImrayHttpError(0, `${what} failed (${(err as Error).message ?? err})`, undefined);
    }
    if (!res.ok) throw new ImrayHttpError(res.status, what, await readBody(res));
    return res;
  }

  /** A call whose answer is JSON (an empty body gives undefined). */
  private async json<T>(method: string, path: string, options: RequestOptions): Promise<T> {
    const res = await this.request(method, path, options);
    const text = await res.text();
    if (!text) return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ImrayHttpError(res.status, `${method} ${path} answered with something that is not JSON`, text.slice(0, 200));
    }
  }
}

async function readBody(res: Response): Promise<unknown> {
  const text = await res.text().catch(() => "");
  try {
    return JSON.parse(text);
  } catch {
    return text.slice(0, 200);
  }
}
