// Fakes for the client's unit tests: a WebSocket the test drives, and an imray HTTP side in memory.

const AUTH_OK = { type: "auth_ok", user_id: 1, node: "sn-1", session: "0123456789abcdef" };

/** The frame that carried the client's `seen`: its auth frame, or the resume frame after auth_ok. */
export function seenFrame(socket) {
  return socket.sent.find((f) => (f.type === "auth" && f.seen) || f.type === "resume");
}

/** A WebSocket whose server side is the test: open(), receive(frame), drop(code). */
export class FakeSocket {
  static all = [];
  readyState = 0;
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;
  sent = [];

  constructor(url) {
    this.url = url;
    FakeSocket.all.push(this);
  }

  static reset() {
    FakeSocket.all = [];
  }

  static last() {
    return FakeSocket.all[FakeSocket.all.length - 1];
  }

  send(data) {
    this.sent.push(JSON.parse(data));
  }

  close(code = 1000) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason: "" }));
  }

  // the server side
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(frame) {
    this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }

  /** Accepts the auth frame as imray would. */
  accept(userId = 1, node = "sn-1") {
    this.open();
    this.receive({ ...AUTH_OK, user_id: userId, node });
  }

  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }

  frames(type) {
    return this.sent.filter((f) => f.type === type);
  }
}

/** imray's HTTP side in memory: conversations and their messages; records the calls. */
export class FakeImray {
  messages = new Map(); // conv -> [msg]
  calls = [];
  refreshes = 0;
  /** Conversations whose history answers 403 (left, removed). */
  forbidden = new Set();
  /** Answer refresh grants `400 invalid_grant` (a revoked login). */
  refuseRefresh = false;

  add(conv, seq, from = 2) {
    if (!this.messages.has(conv)) this.messages.set(conv, []);
    const msg = { type: "msg", conv, seq, msg_id: `m-${conv}-${seq}`, from, kind: "text", body: `body ${seq}`, ts: seq };
    this.messages.get(conv).push(msg);
    return msg;
  }

  /** Answers the catch-up `socket` asked for (`seen` in its auth frame, or a resume frame) as imray
   * does, from the messages here: the missed msg frames, then resume_ok, packed in one message (or,
   * with `fail`, an error frame with no id). `truncate` caps each conversation's catch-up; `refuse`
   * lists conversations refused as forbidden. `withAuthOk` (the socket opened, not accepted): auth_ok
   * leads the same message, as the server sends it when `seen` came in the auth frame. Returns the
   * frame that carried `seen`. */
  answerResume(socket, { truncate, refuse = [], fail, withAuthOk = false } = {}) {
    const resume = seenFrame(socket);
    if (!resume) throw new Error("no frame with seen was sent");
    const first = withAuthOk ? [AUTH_OK] : [];
    if (fail) {
      const code = fail.startsWith("catch-up") || resume.type === "auth" ? "internal" : "bad_request";
      socket.receive([...first, { type: "error", code, message: fail }].map((f) => JSON.stringify(f)).join("\n"));
      return resume;
    }
    const frames = [];
    const caught = {};
    const truncated = [];
    const refused = {};
    for (const [conv, after] of Object.entries(resume.seen)) {
      if (refuse.includes(conv)) {
        refused[conv] = "forbidden";
        continue;
      }
      let missed = (this.messages.get(conv) ?? []).filter((m) => m.seq > after);
      if (truncate !== undefined && missed.length > truncate) {
        missed = missed.slice(0, truncate);
        truncated.push(conv);
      }
      frames.push(...missed);
      caught[conv] = missed.length ? missed[missed.length - 1].seq : after;
    }
    socket.receive([...first, ...frames, { type: "resume_ok", caught, truncated, refused }].map((f) => JSON.stringify(f)).join("\n"));
    return resume;
  }

  fetch = async (input, init = {}) => {
    const url = new URL(input);
    this.calls.push(`${init.method ?? "GET"} ${url.pathname}${url.search}`);
    const json = (status, body) => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
    if (url.pathname === "/api/conversations") {
      return json(200, [...this.messages].map(([conv, list]) => ({ conv, last_seq: list.length ? list[list.length - 1].seq : 0, read_seq: 0, unread: 0, last_message: null })));
    }
    const history = url.pathname.match(/^\/api\/conversations\/([^/]+)\/messages$/);
    if (history && this.forbidden.has(decodeURIComponent(history[1]))) return json(403, { detail: "not a member" });
    if (history) {
      const after = Number(url.searchParams.get("after_seq") ?? 0);
      const limit = Number(url.searchParams.get("limit") ?? 50);
      const list = (this.messages.get(decodeURIComponent(history[1])) ?? []).filter((m) => m.seq > after).slice(0, limit);
      return json(200, { messages: list });
    }
    if (url.pathname === "/api/socket/assign") {
      return json(200, { socket_url: "ws://assigned.test/ws", socket_node: "sn-9", access_token: "assigned", expires_in: 600 });
    }
    if (url.pathname === "/oauth2/token") {
      if (this.refuseRefresh) return json(400, { error: "invalid_grant" });
      this.refreshes += 1;
      return json(200, tokens({ access_token: `access-${this.refreshes}`, refresh_token: `refresh-${this.refreshes}` }));
    }
    return json(404, { detail: "not found" });
  };
}

export function tokens(overrides = {}) {
  return { access_token: "access-0", token_type: "Bearer", expires_in: 900, refresh_token: "refresh-0", scope: "chat",
    user_id: 1, socket_url: "ws://imray.test/ws", socket_node: "sn-1", ...overrides };
}

export const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

export async function until(check, what, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await tick(5);
  }
}
