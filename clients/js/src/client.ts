/** ImrayClient: one login, one socket, and every conversation delivered once, in order, with no gap
 * across reconnects, node loss, drains and token renewal (docs/sdk.md is the contract). */

import { ImrayError, ImrayHttpError } from "./errors.js";
import type { Ack, ClientState, EventMap, EventType, Frame, Handler, Msg } from "./events.js";
import { HttpApi, type FileInfo, type Group, type HistoryOptions, type HttpOptions, type TokenResponse, type User, type Conversation } from "./http.js";
import { Streams } from "./streams.js";

/** What the SDK needs of a WebSocket: the browser's, Node's (`--experimental-websocket`), or `ws`. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions extends HttpOptions {
  /** The WebSocket class (default `globalThis.WebSocket`). */
  WebSocket?: WebSocketConstructor;
  /** How long a held frame waits for the gap before it to fill live, before history is read (500 ms). */
  gapWaitMs?: number;
  /** Full-jitter backoff between attempts: random(0, min(cap, base * 2^attempt)) (200 ms, 10 s). */
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** The SDK's own ping every this often (10 s); no pong within `pongTimeoutMs` (20 s) is a lost connection. */
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  /** An open socket with no `auth_ok` within this long is a failed attempt (15 s). */
  authTimeoutMs?: number;
  /** Renew the access token at this fraction of `expires_in` (0.8). */
  renewFraction?: number;
  /** How often an `internal` / `rate_limited` send is tried again before it fails (5). */
  sendRetries?: number;
  /** The least wait before reconnecting after close 4029 (5 s). */
  rateLimitedWaitMs?: number;
}

export interface ConnectOptions {
  /** conv → last seq the application already has; without it the conversation list is the baseline. */
  seen?: Record<string, number> | Map<string, number>;
}

export interface SendOptions {
  kind?: string;
  fileId?: string;
  replyTo?: number;
  mentions?: number[];
  /** The client message id (default: 32 random hex characters); a resend with it is stored once. */
  id?: string;
}

const OPEN = 1;
const FATAL_CODES: Record<number, string> = { 4001: "unauthorized", 4009: "too_many_sessions" };
const RETRIED_SEND_ERRORS = new Set(["internal", "rate_limited"]);
const CLOSE_ERRORS = new Set(["unauthorized", "wrong_node", "token_expired", "too_many_sessions"]);
/** Conversations one resume frame may name (issue 21); the rest catch up through HTTP. */
const MAX_RESUME_CONVS = 1000;
/** An error frame with no id instead of resume_ok: the catch-up over the socket failed; read history. */
const RESUME_FAILED = new Set(["bad_request", "internal"]);
/** The server's default cap on frames before auth_ok (`socket_auth_frame_bytes`): an auth frame that
 * fits carries `seen` itself (one round trip); a bigger one announces the resume frame instead. */
const AUTH_FRAME_BYTES = 4096;
/** The close of a frame over the server's cap. */
const TOO_BIG = 1009;

/** One WebSocket and what the client knows about it. */
class Session {
  opened = false;
  authed = false;
  done = false;
  node: string | undefined;
  lastError: Frame | undefined;
  timers = new Set<ReturnType<typeof setTimeout>>();
  pingTimer: ReturnType<typeof setInterval> | undefined;
  pongTimer: ReturnType<typeof setTimeout> | undefined;
  /** Auth asked for a resume (issue 21), with `seen` in it or a resume frame to follow auth_ok;
   * `awaitingResume` until its resume_ok or failure. */
  resumeAsked = false;
  seenInAuth = false;
  awaitingResume = false;
  /** resume_ok, or undefined when the catch-up over the socket failed or the socket went first. */
  readonly resumed: Promise<Frame | undefined>;
  settleResume: (summary: Frame | undefined) => void = () => undefined;

  constructor(readonly ws: WebSocketLike) {
    this.resumed = new Promise((resolve) => (this.settleResume = resolve));
  }

  send(frame: object): boolean {
    if (this.done || this.ws.readyState !== OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  stopTimers(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    if (this.pingTimer !== undefined) clearInterval(this.pingTimer);
    if (this.pongTimer !== undefined) clearTimeout(this.pongTimer);
  }
}

interface PendingSend {
  frame: Frame & { id: string; conv: string; kind: string; body: string };
  attempts: number;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  resolve: (ack: Ack) => void;
  reject: (err: Error) => void;
}

export class ImrayClient {
  readonly api: HttpApi;
  readonly userId: number;
  socketUrl: string;
  socketNode: string;
  accessToken: string;
  refreshToken: string;
  /** When the access token expires (ms since the epoch). */
  expiresAt: number;

  private readonly options: Required<Omit<ClientOptions, keyof HttpOptions | "WebSocket">>;
  private readonly WebSocketClass: WebSocketConstructor | undefined;
  private readonly streams = new Streams();
  private readonly handlers = new Map<EventType, Set<(event: never) => void>>();
  private readonly pending = new Map<string, PendingSend>();
  private readonly gapTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly filling = new Set<string>();
  /** Conversations by last activity, most recent last (a resume names the most recent). */
  private readonly recent = new Map<string, true>();
  /** Conversations a resume refused (left the group...): left out of the next resumes. */
  private readonly refused = new Set<string>();
  /** Off once a server closed an auth frame carrying `seen` as too big (an operator's lower cap). */
  private seenInAuth = true;
  private _state: ClientState = "closed";
  private running = false;
  private stopped = false;
  private current: Session | undefined;
  private moving: Session | undefined;
  private attempt = 0;
  private unreachable = 0;
  private needAssign = false;
  private catchingUp = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private renewTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshing: Promise<void> | undefined;
  /** A refresh grant succeeded since the last auth_ok: a 4001 now is final. */
  private refreshedSinceAuth = false;
  private connectWaiter: { resolve: () => void; reject: (err: Error) => void } | undefined;

  constructor(api: HttpApi, tokens: TokenResponse, options: ClientOptions = {}) {
    this.api = api;
    this.userId = tokens.user_id;
    this.socketUrl = tokens.socket_url;
    this.socketNode = tokens.socket_node;
    this.accessToken = tokens.access_token;
    this.refreshToken = tokens.refresh_token;
    this.expiresAt = Date.now() + tokens.expires_in * 1000;
    this.WebSocketClass = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    this.options = {
      gapWaitMs: options.gapWaitMs ?? 500,
      backoffBaseMs: options.backoffBaseMs ?? 200,
      backoffCapMs: options.backoffCapMs ?? 10_000,
      pingIntervalMs: options.pingIntervalMs ?? 10_000,
      pongTimeoutMs: options.pongTimeoutMs ?? 20_000,
      authTimeoutMs: options.authTimeoutMs ?? 15_000,
      renewFraction: options.renewFraction ?? 0.8,
      sendRetries: options.sendRetries ?? 5,
      rateLimitedWaitMs: options.rateLimitedWaitMs ?? 5_000,
    };
  }

  /** Logs in with the password grant. */
  static async login(baseUrl: string, username: string, password: string, options: ClientOptions = {}): Promise<ImrayClient> {
    const api = new HttpApi(baseUrl, options);
    return new ImrayClient(api, await api.login(username, password), options);
  }

  /** A client for tokens the application already has (a password or refresh grant's answer). */
  static fromTokens(baseUrl: string, tokens: TokenResponse, options: ClientOptions = {}): ImrayClient {
    return new ImrayClient(new HttpApi(baseUrl, options), tokens, options);
  }

  get state(): ClientState {
    return this._state;
  }

  /** A copy of seen: conv → the last seq delivered (store it to resume with `connect({seen})`). */
  get seen(): Map<string, number> {
    return this.streams.snapshot();
  }

  on<K extends EventType>(type: K, handler: Handler<K>): () => void {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, (set = new Set()));
    set.add(handler as (event: never) => void);
    return () => this.off(type, handler);
  }

  off<K extends EventType>(type: K, handler: Handler<K>): void {
    this.handlers.get(type)?.delete(handler as (event: never) => void);
  }

  /** Opens the socket; resolves at the first `auth_ok` (catch-up then runs with live frames held). */
  async connect(options: ConnectOptions = {}): Promise<void> {
    if (this.running) throw new ImrayError("bad_state", "connect() was already called");
    if (!this.WebSocketClass) throw new ImrayError("bad_state", "no WebSocket: pass options.WebSocket (Node 20: run with --experimental-websocket)");
    this.running = true;
    this.stopped = false;
    this.setState("connecting");
    this.scheduleRenewal((this.expiresAt - Date.now()) / 1000);
    try {
      if (options.seen) {
        for (const [conv, seq] of options.seen instanceof Map ? options.seen : Object.entries(options.seen)) {
          this.streams.setSeen(conv, seq);
          this.touch(conv);
        }
      } else {
        // The list is newest first; `recent` is oldest first.
        for (const item of (await this.authorized((token) => this.api.conversations(token))).reverse()) {
          this.streams.setSeen(item.conv, item.last_seq);
          this.touch(item.conv);
        }
      }
    } catch (err) {
      if (!this.stopped) this.fatal("baseline", `the conversation list could not be read: ${(err as Error).message}`);
      throw err;
    }
    if (this.stopped) throw new ImrayError("closed", "the client was closed while connecting");
    const connected = new Promise<void>((resolve, reject) => (this.connectWaiter = { resolve, reject }));
    this.openCurrent();
    return connected;
  }

  /** Sends a message; resolves with its ack once it is stored (sent again after reconnects, same id). */
  send(conv: string, body: string, options: SendOptions = {}): Promise<Ack> {
    if (this.stopped) return Promise.reject(new ImrayError("closed", "the client is closed"));
    const frame: PendingSend["frame"] = { type: "send", id: options.id ?? randomId(), conv, kind: options.kind ?? "text", body };
    if (options.fileId !== undefined) frame.file_id = options.fileId;
    if (options.replyTo !== undefined) frame.reply_to = options.replyTo;
    if (options.mentions !== undefined) frame.mentions = options.mentions;
    return new Promise<Ack>((resolve, reject) => {
      const pending: PendingSend = { frame, attempts: 0, retryTimer: undefined, resolve, reject };
      this.pending.set(frame.id, pending);
      this.transmit(pending);
    });
  }

  /** Moves the read cursor (fire and forget; dropped while disconnected). */
  read(conv: string, seq: number): void {
    this.signal({ type: "read", conv, seq });
  }

  /** Says the user is typing (fire and forget; dropped while disconnected). */
  typing(conv: string): void {
    this.signal({ type: "typing", conv });
  }

  /** Closes the socket and stops reconnecting; pending sends reject with `closed`. */
  async close(): Promise<void> {
    this.stop("closed", "the client was closed");
  }

  /** Closes, then revokes the login (RFC 7009). */
  async logout(): Promise<void> {
    this.stop("closed", "logged out");
    await this.api.revoke(this.refreshToken);
  }

  // HTTP calls with the newest access token (refreshed once on a 401).
  me(): Promise<User> {
    return this.authorized((token) => this.api.me(token));
  }
  user(userId: number): Promise<User> {
    return this.authorized((token) => this.api.user(token, userId));
  }
  conversations(): Promise<Conversation[]> {
    return this.authorized((token) => this.api.conversations(token));
  }
  history(conv: string, options: HistoryOptions = {}): Promise<Msg[]> {
    return this.authorized((token) => this.api.history(token, conv, options));
  }
  createGroup(name: string, members: number[] = []): Promise<Group> {
    return this.authorized((token) => this.api.createGroup(token, name, members));
  }
  addMembers(groupId: number, userIds: number[]): Promise<Group> {
    return this.authorized((token) => this.api.addMembers(token, groupId, userIds));
  }
  removeMember(groupId: number, userId: number): Promise<void> {
    return this.authorized((token) => this.api.removeMember(token, groupId, userId));
  }
  group(groupId: number): Promise<Group> {
    return this.authorized((token) => this.api.group(token, groupId));
  }
  uploadFile(data: Blob | Uint8Array, filename: string, contentType?: string): Promise<FileInfo> {
    return this.authorized((token) => this.api.uploadFile(token, data, filename, contentType));
  }
  fileBlob(fileId: string): Promise<Blob> {
    return this.authorized((token) => this.api.fileBlob(token, fileId));
  }

  /** Runs `call` with the access token; on a 401, refreshes once and runs it again. */
  async authorized<T>(call: (token: string) => Promise<T>): Promise<T> {
    try {
      return await call(this.accessToken);
    } catch (err) {
      if (!(err instanceof ImrayHttpError) || err.status !== 401) throw err;
      await this.refreshTokens();
      return call(this.accessToken);
    }
  }

  // ---- events ----

  private emit<K extends EventType>(event: EventMap[K]): void {
    for (const handler of [...(this.handlers.get(event.type as K) ?? [])]) {
      try {
        (handler as Handler<K>)(event);
      } catch (err) {
        console.error("imray: an event handler threw", err);
      }
    }
  }

  private setState(state: ClientState): void {
    if (state === this._state) return;
    this._state = state;
    this.emit({ type: "state", state });
  }

  // ---- sockets ----

  private openCurrent(): void {
    this.current = this.openSession(this.socketUrl, this.accessToken);
  }

  private openSession(url: string, token: string): Session {
    let ws: WebSocketLike;
    try {
      ws = new this.WebSocketClass!(url);
    } catch (err) {
      // A URL the WebSocket refuses: a failed attempt, like a refused connection.
      const dead = new Session({ readyState: 3, onopen: null, onmessage: null, onclose: null, onerror: null, send() {}, close() {} });
      setTimeout(() => this.finishSession(dead, 1006, String(err)), 0);
      return dead;
    }
    const session = new Session(ws);
    ws.onopen = () => {
      session.opened = true;
      // With conversations to name, catch up over the socket (issue 21): no history reads, and with
      // `seen` in the auth frame (when it fits under the server's pre-auth cap) no extra round trip.
      const seen = this.resumeSeen();
      const auth = { type: "auth", token, batch: true };
      session.resumeAsked = seen.size > 0;
      const withSeen = { ...auth, seen: Object.fromEntries(seen) };
      session.seenInAuth = session.resumeAsked && this.seenInAuth
        && new TextEncoder().encode(JSON.stringify(withSeen)).length <= AUTH_FRAME_BYTES;
      session.send(session.seenInAuth ? withSeen : session.resumeAsked ? { ...auth, resume: true } : auth);
    };
    ws.onmessage = (event: { data: unknown }) => this.onRaw(session, event.data);
    ws.onclose = (event: { code?: number; reason?: string }) => this.finishSession(session, event.code ?? 1006, event.reason ?? "");
    // A failed connection (1006): Node 20's WebSocket fires no close event after a refused connect.
    ws.onerror = () => this.finishSession(session, 1006, "connection failed");
    session.timers.add(setTimeout(() => {
      if (!session.authed) this.abortSession(session, "no auth_ok in time");
    }, this.options.authTimeoutMs));
    return session;
  }

  /** Gives up on a session at once (no waiting for a closing handshake a dead peer never sends). */
  private abortSession(session: Session, reason: string): void {
    try {
      session.ws.close(4000, reason);
    } catch {
      // already closing
    }
    this.finishSession(session, 1006, reason);
  }

  /** One WebSocket message: a batching server (issue 21; announced at auth) packs several frames,
   * one JSON object per line. JSON strings escape line breaks, so a line is always a whole frame. */
  private onRaw(session: Session, data: unknown): void {
    const text = String(data);
    if (!text.includes("\n")) {
      this.onFrameText(session, text);
      return;
    }
    for (const line of text.split("\n")) {
      if (line) this.onFrameText(session, line);
    }
  }

  private onFrameText(session: Session, data: string): void {
    if (session.done) return;
    let frame: Frame;
    try {
      frame = JSON.parse(data) as Frame;
      if (typeof frame !== "object" || frame === null || typeof frame.type !== "string") throw new Error("no type");
    } catch {
      this.emit({ type: "error", code: "protocol", message: `the server sent a frame that is not a JSON object with a type: ${String(data).slice(0, 100)}` });
      return;
    }
    if (session.awaitingResume && (frame.type === "resume_ok" || (frame.type === "error" && frame.id == null && RESUME_FAILED.has(String(frame.code))))) {
      session.awaitingResume = false;
      session.settleResume(frame.type === "resume_ok" ? frame : undefined); // a failure: history instead, not the app's business
      return;
    }
    switch (frame.type) {
      case "auth_ok":
        this.onAuthOk(session, frame);
        break;
      case "pong":
        if (session.pongTimer !== undefined) clearTimeout(session.pongTimer);
        session.pongTimer = undefined;
        break;
      case "msg":
        this.deliver(frame as Msg);
        break;
      case "ack":
        this.onAck(frame as unknown as Ack);
        break;
      case "error":
        this.onErrorFrame(session, frame);
        break;
      case "move":
        this.onMove(session, frame);
        break;
      case "receipt":
      case "typing":
      case "presence":
      case "contact":
      case "deleted":
        this.emit(frame as unknown as EventMap["receipt"]);
        break;
      default:
        this.emit({ type: "frame", frame });
    }
  }

  private onAuthOk(session: Session, frame: Frame): void {
    session.authed = true;
    session.node = typeof frame.node === "string" ? frame.node : undefined;
    if (session === this.moving) {
      // A drain's `move`: the new socket is in, the old one goes.
      const old = this.current;
      this.current = session;
      this.moving = undefined;
      if (old) this.retireSession(old);
    }
    if (session !== this.current) {
      this.retireSession(session);
      return;
    }
    this.attempt = 0;
    this.unreachable = 0;
    this.refreshedSinceAuth = false;
    session.pingTimer = setInterval(() => this.ping(session), this.options.pingIntervalMs);
    this.setState("connected");
    this.connectWaiter?.resolve();
    this.connectWaiter = undefined;
    if (session.resumeAsked) {
      // The catch-up follows auth_ok (seen in auth) or the resume frame, which must come first: live
      // frames wait on the server until it is out.
      session.awaitingResume = true;
      if (!session.seenInAuth) session.send({ type: "resume", seen: Object.fromEntries(this.resumeSeen()) });
      session.timers.add(setTimeout(() => session.settleResume(undefined), this.options.authTimeoutMs));
    }
    for (const pending of this.pending.values()) {
      if (pending.retryTimer !== undefined) clearTimeout(pending.retryTimer);
      pending.retryTimer = undefined;
      this.transmit(pending);
    }
    void this.catchUp(session);
  }

  private ping(session: Session): void {
    if (session.pongTimer !== undefined) return;
    if (!session.send({ type: "ping" })) return;
    session.pongTimer = setTimeout(() => this.abortSession(session, "no pong in time"), this.options.pongTimeoutMs);
  }

  private retireSession(session: Session): void {
    session.done = true;
    session.stopTimers();
    session.settleResume(undefined);
    try {
      session.ws.close(1000, "moved");
    } catch {
      // already closing
    }
  }

  private finishSession(session: Session, code: number, reason: string): void {
    if (session.done) return;
    session.done = true;
    session.stopTimers();
    session.settleResume(undefined);
    if (!session.authed && code === TOO_BIG && session.seenInAuth) this.seenInAuth = false; // resume frames from now on
    if (session === this.moving) {
      this.moving = undefined; // the old socket stays; its loss later reconnects to the new pin
      return;
    }
    if (session !== this.current) return;
    this.current = undefined;
    if (this.stopped) return;
    if (this.moving) {
      this.current = this.moving;
      this.moving = undefined;
      this.setState("reconnecting");
      return;
    }
    this.onLost(session, code, reason);
  }

  /** Decides what follows the loss of the current socket (docs/sdk.md, "Reconnecting"). */
  private onLost(session: Session, code: number, reason: string): void {
    const error = session.lastError;
    const message = typeof error?.message === "string" ? error.message : reason || `closed with ${code}`;
    const fatalCode = FATAL_CODES[code];
    const errorCode = typeof error?.code === "string" ? error.code : fatalCode;
    if (code === 4001 && !this.refreshedSinceAuth) {
      // An access token that expired while away is refused with 4001 too: one refresh grant tells
      // (a revoked login answers it invalid_grant, reported with this close's reason).
      this.setState("reconnecting");
      void this.refreshTokens({ code: errorCode!, message }).then(() => this.scheduleReconnect(0), () => undefined);
      return;
    }
    if (fatalCode) {
      this.fatal(errorCode!, message);
      return;
    }
    this.setState("reconnecting");
    if (code === 4002) {
      void this.refreshTokens().then(() => this.scheduleReconnect(0), () => undefined);
      return;
    }
    if (code === 4003) {
      const url = error?.socket_url;
      if (typeof url === "string" && url) this.socketUrl = url;
      else this.needAssign = true;
      this.scheduleReconnect(this.backoff());
      return;
    }
    if (code === 4029) {
      this.scheduleReconnect(Math.max(this.options.rateLimitedWaitMs, this.backoff()));
      return;
    }
    if (!session.opened) {
      this.unreachable += 1;
      if (this.unreachable >= 2) this.needAssign = true;
    }
    this.scheduleReconnect(this.backoff());
  }

  private backoff(): number {
    const ceiling = Math.min(this.options.backoffCapMs, this.options.backoffBaseMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return Math.random() * ceiling;
  }

  private scheduleReconnect(delayMs: number): void {
    if (this.stopped) return;
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.reconnect();
    }, delayMs);
  }

  private async reconnect(): Promise<void> {
    if (this.stopped) return;
    if (this.needAssign) {
      try {
        const pin = await this.authorized((token) => this.api.assign(token));
        if (this.stopped) return;
        this.socketUrl = pin.socket_url;
        this.socketNode = pin.socket_node;
        this.accessToken = pin.access_token;
        this.needAssign = false;
        this.unreachable = 0;
      } catch (err) {
        if (!this.stopped) this.scheduleReconnect(this.backoff());
        void err;
        return;
      }
    }
    this.openCurrent();
  }

  private onMove(session: Session, frame: Frame): void {
    if (session !== this.current || typeof frame.socket_url !== "string" || typeof frame.access_token !== "string") return;
    this.socketUrl = frame.socket_url;
    if (typeof frame.socket_node === "string") this.socketNode = frame.socket_node;
    this.accessToken = frame.access_token;
    if (typeof frame.expires_in === "number") this.expiresAt = Date.now() + frame.expires_in * 1000;
    if (this.moving) this.retireSession(this.moving);
    this.moving = this.openSession(this.socketUrl, this.accessToken);
  }

  private fatal(code: string, message: string): void {
    if (this.stopped) return;
    this.emit({ type: "error", code, message });
    this.stop(code, message);
  }

  private stop(code: string, message: string): void {
    this.stopped = true;
    for (const timer of [this.reconnectTimer, this.renewTimer, ...this.gapTimers.values()]) if (timer !== undefined) clearTimeout(timer);
    this.gapTimers.clear();
    for (const session of [this.current, this.moving]) if (session) this.retireSession(session);
    this.current = this.moving = undefined;
    const failure = new ImrayError(code, message);
    for (const pending of this.pending.values()) {
      if (pending.retryTimer !== undefined) clearTimeout(pending.retryTimer);
      pending.reject(failure);
    }
    this.pending.clear();
    this.connectWaiter?.reject(failure);
    this.connectWaiter = undefined;
    this.setState("closed");
  }

  // ---- sending ----

  private transmit(pending: PendingSend): void {
    const session = this.current;
    if (session?.authed) session.send(pending.frame);
  }

  private signal(frame: Frame): void {
    const session = this.current;
    if (session?.authed) session.send(frame);
  }

  private onAck(ack: Ack): void {
    const pending = this.pending.get(ack.id);
    if (!pending) return;
    this.pending.delete(ack.id);
    if (pending.retryTimer !== undefined) clearTimeout(pending.retryTimer);
    const sent = pending.frame;
    // The sending session gets no `msg` for its own message: it is built from the send and its ack.
    const own: Msg = { type: "msg", conv: ack.conv, seq: ack.seq, msg_id: ack.msg_id, from: this.userId, kind: sent.kind, body: sent.body, ts: ack.ts };
    if (sent.file_id !== undefined) own.file_id = sent.file_id as string;
    if (sent.reply_to !== undefined) own.reply_to = sent.reply_to as number;
    if (Array.isArray(sent.mentions) && sent.mentions.length) own.mentions = [...new Set(sent.mentions as number[])];
    this.deliver(own);
    pending.resolve(ack);
  }

  private onErrorFrame(session: Session, frame: Frame): void {
    const code = typeof frame.code === "string" ? frame.code : "unknown";
    const message = typeof frame.message === "string" ? frame.message : "";
    const pending = typeof frame.id === "string" ? this.pending.get(frame.id) : undefined;
    if (pending) {
      if (RETRIED_SEND_ERRORS.has(code) && pending.attempts < this.options.sendRetries) {
        pending.attempts += 1;
        const delay = Math.random() * Math.min(this.options.backoffCapMs, this.options.backoffBaseMs * 2 ** pending.attempts);
        pending.retryTimer = setTimeout(() => {
          pending.retryTimer = undefined;
          this.transmit(pending);
        }, delay);
        return;
      }
      this.pending.delete(pending.frame.id);
      pending.reject(new ImrayError(code, message));
      return;
    }
    session.lastError = frame;
    // These come before a close, which decides what follows (and reports a fatal one).
    if (!CLOSE_ERRORS.has(code)) this.emit({ type: "error", code, message });
  }

  // ---- ordered delivery ----

  private deliver(msg: Msg): void {
    const ready = this.streams.offer(msg);
    if (ready.length) this.refused.delete(msg.conv); // readable again (a member again)
    this.touch(msg.conv);
    for (const next of ready) this.emit({ type: "message", message: next });
    if (this.streams.gap(msg.conv)) this.scheduleGapFill(msg.conv);
  }

  private scheduleGapFill(conv: string): void {
    if (this.catchingUp > 0 || this.gapTimers.has(conv) || this.stopped) return;
    this.gapTimers.set(conv, setTimeout(() => {
      this.gapTimers.delete(conv);
      void this.fillGap(conv);
    }, this.options.gapWaitMs));
  }

  private async fillGap(conv: string): Promise<void> {
    if (!this.streams.gap(conv) || this.filling.has(conv) || this.stopped) return;
    try {
      await this.fill(conv);
    } catch (err) {
      if (err instanceof ImrayHttpError && (err.status === 403 || err.status === 404)) {
        // Left or removed meanwhile: nothing will fill the gap; what came live still goes out, in order.
        for (const msg of this.streams.release(conv)) this.emit({ type: "message", message: msg });
        return;
      }
    }
    if (this.streams.gap(conv)) this.scheduleGapFill(conv); // tried again
  }

  /** Reads `conv`'s history after seen, page by page, into the stream. */
  private async fill(conv: string): Promise<void> {
    this.filling.add(conv);
    try {
      for (;;) {
        const before = this.streams.seen(conv);
        const page = await this.authorized((token) => this.api.history(token, conv, { afterSeq: before, limit: 200 }));
        if (this.stopped) return;
        for (const msg of page) this.deliver(msg);
        if (page.length < 200 || this.streams.seen(conv) <= before) return;
      }
    } finally {
      this.filling.delete(conv);
    }
  }

  private touch(conv: string): void {
    this.recent.delete(conv);
    this.recent.set(conv, true);
  }

  /** The resume frame's seen: the most recently active conversations known (at most 1000), but
   * those a resume refused. */
  private resumeSeen(): Map<string, number> {
    const named = new Map<string, number>();
    for (const conv of [...this.recent.keys()].reverse()) {
      if (named.size === MAX_RESUME_CONVS) break;
      if (this.streams.knows(conv) && !this.refused.has(conv)) named.set(conv, this.streams.seen(conv));
    }
    return named;
  }

  /** After every auth_ok: what the resume named comes over the socket before resume_ok; then the list
   * is read and every conversation still behind (not named, truncated, or all of them when the resume
   * failed) is caught up from history, then what was held is released. */
  private async catchUp(session: Session): Promise<void> {
    this.catchingUp += 1;
    try {
      if (session.resumeAsked) {
        const summary = await session.resumed;
        if (this.stopped || session !== this.current) return;
        const refused = summary?.refused;
        for (const conv of typeof refused === "object" && refused !== null ? Object.keys(refused) : []) {
          // Not ours to read now (left the group...): as history's 403/404.
          this.refused.add(conv);
          for (const msg of this.streams.release(conv)) this.emit({ type: "message", message: msg });
        }
      }
      for (let attempt = 0; ; attempt++) {
        try {
          const list = await this.authorized((token) => this.api.conversations(token));
          for (const item of list) {
            if (this.stopped || session !== this.current) return;
            if (item.last_seq <= this.streams.seen(item.conv)) continue;
            try {
              await this.fill(item.conv);
            } catch (err) {
              // A conversation left meanwhile (403/404) has nothing more to give.
              if (!(err instanceof ImrayHttpError && (err.status === 403 || err.status === 404))) throw err;
            }
          }
          return;
        } catch (err) {
          if (this.stopped || session !== this.current) return;
          if (attempt >= 4) {
            this.emit({ type: "error", code: "catch_up", message: `catching up failed: ${(err as Error).message}` });
            return;
          }
          await sleep(Math.random() * Math.min(this.options.backoffCapMs, this.options.backoffBaseMs * 2 ** (attempt + 1)));
        }
      }
    } finally {
      this.catchingUp -= 1;
      if (this.catchingUp === 0) for (const gap of this.streams.gaps()) this.scheduleGapFill(gap.conv);
    }
  }

  // ---- tokens ----

  private scheduleRenewal(expiresInS: number): void {
    if (this.renewTimer !== undefined) clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.renew(), Math.max(0, expiresInS * 1000 * this.options.renewFraction));
  }

  private async renew(): Promise<void> {
    this.renewTimer = undefined;
    try {
      await this.refreshTokens();
    } catch {
      return; // a fatal refusal has closed the client; a network error is retried by refreshTokens' caller
    }
    const session = this.current;
    if (session?.authed && session.node === this.socketNode) session.send({ type: "refresh", token: this.accessToken });
  }

  /** The refresh grant (one at a time); network errors are retried with backoff, a refusal
   * (`invalid_grant`) is fatal, reported as `refused` when given. */
  private refreshTokens(refused?: { code: string; message: string }): Promise<void> {
    if (!this.refreshing) {
      this.refreshing = this.refreshLoop(refused).finally(() => (this.refreshing = undefined));
    }
    return this.refreshing;
  }

  private async refreshLoop(refused?: { code: string; message: string }): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (this.stopped) throw new ImrayError("closed", "the client is closed");
      try {
        const tokens = await this.api.refresh(this.refreshToken, this.current?.node ?? this.socketNode);
        this.accessToken = tokens.access_token;
        this.refreshToken = tokens.refresh_token;
        this.socketUrl = tokens.socket_url;
        this.socketNode = tokens.socket_node;
        this.expiresAt = Date.now() + tokens.expires_in * 1000;
        this.refreshedSinceAuth = true;
        if (!this.stopped) this.scheduleRenewal(tokens.expires_in);
        return;
      } catch (err) {
        if (err instanceof ImrayHttpError && err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
          const code = refused?.code ?? err.error ?? "invalid_grant";
          const message = refused?.message ?? `the refresh grant was refused: ${err.message}`;
          this.fatal(code, message);
          throw new ImrayError(code, message);
        }
        await sleep(Math.random() * Math.min(this.options.backoffCapMs, this.options.backoffBaseMs * 2 ** (attempt + 1)));
      }
    }
  }
}

function randomId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
