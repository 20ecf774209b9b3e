// Unit tests of ImrayClient's logic against a fake socket and a fake HTTP side (no server): ordering,
// own messages, resends, reconnect decisions, moves, renewal, and what it makes of garbage.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { HttpApi, ImrayClient, ImrayError, ImrayHttpError } from "../dist/index.js";
import { FakeImray, FakeSocket, seenFrame, tick, tokens, until } from "./fakes.mjs";

const QUICK = { gapWaitMs: 50, backoffBaseMs: 5, backoffCapMs: 20, pingIntervalMs: 60_000, pongTimeoutMs: 60_000 };
const CONV = "d:1:2";
let current;

afterEach(async () => {
  await current?.client.close();
  current = undefined;
});

/** A client connected to the fakes (seen: {} unless given), with what it delivered recorded. */
async function connectedClient(options = {}, seen = {}, tokenOverrides = {}) {
  FakeSocket.reset();
  const server = new FakeImray();
  const client = ImrayClient.fromTokens("http://imray.test", tokens(tokenOverrides), { WebSocket: FakeSocket, fetch: server.fetch, ...QUICK, ...options });
  const record = { client, server, messages: [], states: [], errors: [] };
  client.on("message", ({ message }) => record.messages.push(message));
  client.on("state", ({ state }) => record.states.push(state));
  client.on("error", (error) => record.errors.push(error));
  current = record;
  const connecting = client.connect({ seen });
  await until(() => FakeSocket.all.length === 1, "a socket");
  FakeSocket.last().accept();
  await connecting;
  await until(() => server.calls.includes("GET /api/conversations?limit=200"), "the catch-up's list");
  await tick(5);
  return record;
}

const live = (seq, conv = CONV, from = 2) => ({ type: "msg", conv, seq, msg_id: `m-${conv}-${seq}`, from, kind: "text", body: `body ${seq}`, ts: seq });
const seqs = (record) => record.messages.map((m) => m.seq);

test("connect sends the access token in the auth frame and resolves at auth_ok", async () => {
  const record = await connectedClient();
  assert.deepEqual(FakeSocket.last().sent[0], { type: "auth", token: "access-0", batch: true });
  assert.equal(FakeSocket.last().url, "ws://imray.test/ws");
  assert.deepEqual(record.states, ["connecting", "connected"]);
});

test("without seen, the conversation list is the baseline: only what comes after it is delivered", async () => {
  FakeSocket.reset();
  const server = new FakeImray();
  for (let seq = 1; seq <= 3; seq++) server.add(CONV, seq);
  const client = ImrayClient.fromTokens("http://imray.test", tokens(), { WebSocket: FakeSocket, fetch: server.fetch, ...QUICK });
  current = { client };
  const delivered = [];
  client.on("message", ({ message }) => delivered.push(message.seq));
  const connecting = client.connect();
  await until(() => FakeSocket.all.length === 1, "a socket");
  FakeSocket.last().accept();
  await connecting;
  FakeSocket.last().receive(live(3));
  FakeSocket.last().receive(live(4));
  await tick(80);
  assert.deepEqual(delivered, [4]);
  assert.equal(client.seen.get(CONV), 4);
});

test("a frame that is not JSON is reported as a protocol error, and the session goes on", async () => {
  const record = await connectedClient();
  FakeSocket.last().receive("<html>garbage</html>");
  FakeSocket.last().receive({ no: "type" });
  FakeSocket.last().receive(live(1));
  assert.deepEqual(record.errors.map((e) => e.code), ["protocol", "protocol"]);
  assert.deepEqual(seqs(record), [1]);
  assert.equal(record.client.state, "connected");
});

test("a batched message (several frames, one per line) is taken frame by frame, in order", async () => {
  const record = await connectedClient();
  FakeSocket.last().receive([live(1), live(2), { type: "typing", conv: CONV, user_id: 2 }, live(3)].map((f) => JSON.stringify(f)).join("\n"));
  assert.deepEqual(seqs(record), [1, 2, 3]);
  assert.deepEqual(record.errors, []);
});

test("a gap not filled live within gapWait is read from history, then the held frames follow", async () => {
  const record = await connectedClient();
  for (let seq = 1; seq <= 3; seq++) record.server.add(CONV, seq);
  FakeSocket.last().receive(live(3));
  assert.deepEqual(seqs(record), []);
  await until(() => record.messages.length === 3, "the gap filled");
  assert.deepEqual(seqs(record), [1, 2, 3]);
  assert.ok(record.server.calls.includes(`GET /api/conversations/${encodeURIComponent(CONV)}/messages?after_seq=0&limit=200`));
});

test("a gap history cannot fill (the conversation was left) lets the held frames out in order instead of asking forever", async () => {
  const record = await connectedClient();
  record.server.forbidden.add("g:5");
  FakeSocket.last().receive(live(4, "g:5"));
  FakeSocket.last().receive(live(3, "g:5"));
  await until(() => record.messages.length === 2, "the held frames");
  assert.deepEqual(seqs(record), [3, 4]);
  await tick(150);
  assert.equal(record.server.calls.filter((c) => c.includes("/messages")).length, 1, "asked once");
});

test("a gap filled live within gapWait reads no history, and duplicates are dropped", async () => {
  const record = await connectedClient();
  FakeSocket.last().receive(live(2));
  FakeSocket.last().receive(live(1));
  FakeSocket.last().receive(live(2));
  FakeSocket.last().receive(live(1));
  await tick(100);
  assert.deepEqual(seqs(record), [1, 2]);
  assert.equal(record.server.calls.filter((c) => c.includes("/messages")).length, 0);
});

test("the sending session's own message is built from its ack and delivered at its place", async () => {
  const record = await connectedClient();
  const sending = record.client.send(CONV, "hi there", { mentions: [2, 2], replyTo: 1 });
  const [frame] = FakeSocket.last().frames("send");
  assert.match(frame.id, /^[0-9a-f]{32}$/);
  assert.deepEqual({ ...frame, id: "" }, { type: "send", id: "", conv: CONV, kind: "text", body: "hi there", mentions: [2, 2], reply_to: 1 });
  FakeSocket.last().receive({ type: "ack", id: frame.id, msg_id: "own", conv: CONV, seq: 2, ts: 99 });
  assert.deepEqual(seqs(record), [], "held until seq 1 arrives");
  FakeSocket.last().receive(live(1));
  assert.deepEqual(seqs(record), [1, 2]);
  assert.deepEqual(record.messages[1], { type: "msg", conv: CONV, seq: 2, msg_id: "own", from: 1, kind: "text", body: "hi there", ts: 99, reply_to: 1, mentions: [2] });
  assert.equal((await sending).seq, 2);
});

test("after a lost connection a pending send goes again with the same id, and shows once", async () => {
  const record = await connectedClient();
  const sending = record.client.send(CONV, "through the storm");
  const first = FakeSocket.last();
  const id = first.frames("send")[0].id;
  first.drop(1006);
  assert.equal(record.client.state, "reconnecting");
  await until(() => FakeSocket.all.length === 2, "a new socket");
  const second = FakeSocket.last();
  assert.equal(second.url, first.url, "the same node first");
  second.accept();
  assert.deepEqual(second.frames("send").map((f) => f.id), [id]);
  second.receive({ type: "ack", id, msg_id: "m", conv: CONV, seq: 1, ts: 1 });
  second.receive({ type: "ack", id, msg_id: "m", conv: CONV, seq: 1, ts: 1 });
  assert.equal((await sending).seq, 1);
  assert.deepEqual(seqs(record), [1]);
  assert.deepEqual(record.states, ["connecting", "connected", "reconnecting", "connected"]);
});

test("an internal error for a send is retried with the same id; forbidden rejects with its code", async () => {
  const record = await connectedClient();
  const retried = record.client.send(CONV, "again");
  const id = FakeSocket.last().frames("send")[0].id;
  FakeSocket.last().receive({ type: "error", id, code: "internal", message: "message not stored, send it again" });
  await until(() => FakeSocket.last().frames("send").length === 2, "the resend");
  assert.equal(FakeSocket.last().frames("send")[1].id, id);
  FakeSocket.last().receive({ type: "ack", id, msg_id: "m", conv: CONV, seq: 1, ts: 1 });
  assert.equal((await retried).seq, 1);

  const refused = record.client.send("g:5", "no");
  const refusedId = FakeSocket.last().frames("send")[2].id;
  FakeSocket.last().receive({ type: "error", id: refusedId, code: "forbidden", message: "not a member" });
  await assert.rejects(refused, (err) => err instanceof ImrayError && err.code === "forbidden");
  assert.deepEqual(record.errors, []);
});

test("a send that keeps failing with internal rejects after the retries", async () => {
  const record = await connectedClient({ sendRetries: 2 });
  const sending = record.client.send(CONV, "doomed");
  const id = FakeSocket.last().frames("send")[0].id;
  for (let i = 1; i <= 3; i++) {
    await until(() => FakeSocket.last().frames("send").length === i, `attempt ${i}`);
    FakeSocket.last().receive({ type: "error", id, code: "internal", message: "nope" });
  }
  await assert.rejects(sending, (err) => err instanceof ImrayError && err.code === "internal");
});

test("close 4009 ends closed with too_many_sessions, and connect rejects", async () => {
  FakeSocket.reset();
  const server = new FakeImray();
  const client = ImrayClient.fromTokens("http://imray.test", tokens(), { WebSocket: FakeSocket, fetch: server.fetch, ...QUICK });
  current = { client };
  const errors = [];
  client.on("error", (e) => errors.push(e));
  const connecting = client.connect({ seen: {} });
  await until(() => FakeSocket.all.length === 1, "a socket");
  FakeSocket.last().open();
  FakeSocket.last().receive({ type: "error", code: "too_many_sessions", message: "close another session first" });
  FakeSocket.last().drop(4009);
  await assert.rejects(connecting, (err) => err instanceof ImrayError && err.code === "too_many_sessions");
  assert.equal(client.state, "closed");
  assert.deepEqual(errors, [{ type: "error", code: "too_many_sessions", message: "close another session first" }]);
  await tick(50);
  assert.equal(FakeSocket.all.length, 1, "no retry");
});

test("4001 after a revocation (the refresh grant refused) closes the client with its reason and rejects pending sends", async () => {
  const record = await connectedClient();
  record.server.refuseRefresh = true;
  const sending = record.client.send(CONV, "pending");
  FakeSocket.last().receive({ type: "error", code: "unauthorized", message: "this login was revoked" });
  FakeSocket.last().drop(4001);
  await assert.rejects(sending, (err) => err instanceof ImrayError && err.code === "unauthorized");
  assert.deepEqual(record.states, ["connecting", "connected", "reconnecting", "closed"]);
  assert.deepEqual(record.errors, [{ type: "error", code: "unauthorized", message: "this login was revoked" }]);
  assert.ok(record.server.calls.includes("POST /oauth2/token"), "one refresh grant was tried");
  assert.equal(FakeSocket.all.length, 1, "no reconnect");
});

test("4001 for a token that expired while away: one refresh grant, then connected; a 4001 right after it is final", async () => {
  const record = await connectedClient();
  FakeSocket.last().receive({ type: "error", code: "unauthorized", message: "token expired" });
  FakeSocket.last().drop(4001);
  await until(() => FakeSocket.all.length === 2, "a socket with the new token");
  FakeSocket.last().open();
  assert.deepEqual(FakeSocket.last().sent[0], { type: "auth", token: "access-1", batch: true });
  FakeSocket.last().receive({ type: "error", code: "unauthorized", message: "still refused" });
  FakeSocket.last().drop(4001);
  await until(() => record.client.state === "closed", "closed");
  assert.equal(record.server.refreshes, 1, "no second refresh");
  assert.deepEqual(record.errors.map((e) => e.message), ["still refused"]);
});

test("wrong_node with a socket_url connects there, and with null gets a new pin from assign", async () => {
  const record = await connectedClient();
  FakeSocket.last().receive({ type: "error", code: "wrong_node", socket_url: "ws://other.test/ws", message: "pinned elsewhere" });
  FakeSocket.last().drop(4003);
  await until(() => FakeSocket.all.length === 2, "a socket to the pinned node");
  assert.equal(FakeSocket.last().url, "ws://other.test/ws");
  FakeSocket.last().open();
  FakeSocket.last().receive({ type: "error", code: "wrong_node", socket_url: null, message: "your node is gone: POST /api/socket/assign" });
  FakeSocket.last().drop(4003);
  await until(() => FakeSocket.all.length === 3, "a socket to the assigned node");
  assert.equal(FakeSocket.last().url, "ws://assigned.test/ws");
  FakeSocket.last().open();
  assert.deepEqual(FakeSocket.last().sent[0], { type: "auth", token: "assigned", batch: true });
  assert.equal(record.client.socketNode, "sn-9");
  assert.deepEqual(record.errors, []);
});

test("a node that cannot be reached twice in a row is replaced through assign", async () => {
  const record = await connectedClient();
  FakeSocket.last().drop(1006);
  await until(() => FakeSocket.all.length === 2, "a retry of the same node");
  FakeSocket.last().drop(1006); // refused: never opened
  await until(() => FakeSocket.all.length === 3, "a second retry");
  assert.equal(FakeSocket.last().url, "ws://imray.test/ws");
  FakeSocket.last().drop(1006);
  await until(() => FakeSocket.all.length === 4, "a socket to an assigned node");
  assert.equal(FakeSocket.last().url, "ws://assigned.test/ws");
  assert.ok(record.server.calls.includes("POST /api/socket/assign"));
});

test("a move frame opens the new node with its token, and the old socket closes once the new one is in", async () => {
  const record = await connectedClient();
  const old = FakeSocket.last();
  old.receive({ type: "move", socket_url: "ws://n2.test/ws", socket_node: "sn-2", access_token: "moved", expires_in: 800 });
  await until(() => FakeSocket.all.length === 2, "a socket to the new node");
  const moved = FakeSocket.last();
  assert.equal(moved.url, "ws://n2.test/ws");
  moved.open();
  assert.deepEqual(moved.sent[0], { type: "auth", token: "moved", batch: true });
  assert.equal(old.readyState, 1, "the old socket stays until the new one is in");
  moved.receive({ type: "auth_ok", user_id: 1, node: "sn-2", session: "fedcba9876543210" });
  assert.equal(old.readyState, 3);
  assert.equal(record.client.socketNode, "sn-2");
  assert.deepEqual(record.states, ["connecting", "connected"], "no reconnect");
  old.receive(live(1)); // a frame on the closed socket is ignored
  moved.receive(live(1));
  assert.deepEqual(seqs(record), [1]);
});

test("close 4002 refreshes the tokens, then reconnects with the new access token", async () => {
  const record = await connectedClient();
  FakeSocket.last().receive({ type: "error", code: "token_expired", message: "token expired" });
  FakeSocket.last().drop(4002);
  await until(() => FakeSocket.all.length === 2, "a new socket");
  FakeSocket.last().open();
  assert.deepEqual(FakeSocket.last().sent[0], { type: "auth", token: "access-1", batch: true });
  assert.equal(record.client.refreshToken, "refresh-1");
  assert.deepEqual(record.errors, []);
});

test("the access token is renewed at renewFraction of its life with a refresh frame on the open socket", async () => {
  const record = await connectedClient({ renewFraction: 0.05 }, {}, { expires_in: 1 });
  await until(() => FakeSocket.last().frames("refresh").length === 1, "a refresh frame");
  assert.deepEqual(FakeSocket.last().frames("refresh")[0], { type: "refresh", token: "access-1" });
  assert.equal(record.client.accessToken, "access-1");
  assert.ok(record.server.calls.includes("POST /oauth2/token"));
});

test("no pong within pongTimeout is a lost connection, and a new socket is opened", async () => {
  const record = await connectedClient({ pingIntervalMs: 20, pongTimeoutMs: 40 });
  await until(() => FakeSocket.all.length === 2, "a new socket after the silent one");
  assert.ok(FakeSocket.all[0].frames("ping").length >= 1);
  assert.ok(record.states.includes("reconnecting"));
});

test("close() rejects pending sends, opens nothing more, and ends in closed", async () => {
  const record = await connectedClient();
  const sending = record.client.send(CONV, "never acked");
  await record.client.close();
  await assert.rejects(sending, (err) => err instanceof ImrayError && err.code === "closed");
  await tick(50);
  assert.equal(FakeSocket.all.length, 1);
  assert.equal(record.client.state, "closed");
});

test("an HTTP answer that is not JSON, or not 2xx, rejects with a precise ImrayHttpError", async () => {
  const html = async () => new Response("<html>proxy error</html>", { status: 200 });
  await assert.rejects(new HttpApi("http://imray.test", { fetch: html }).me("t"),
    (err) => err instanceof ImrayHttpError && err.status === 200 && /not JSON/.test(err.message));
  const down = async () => new Response("bad gateway", { status: 502 });
  await assert.rejects(new HttpApi("http://imray.test", { fetch: down }).conversations("t"),
    (err) => err instanceof ImrayHttpError && err.status === 502 && err.body === "bad gateway");
  const refused = async () => { throw new TypeError("fetch failed"); };
  await assert.rejects(new HttpApi("http://imray.test", { fetch: refused }).me("t"),
    (err) => err instanceof ImrayHttpError && err.status === 0 && /fetch failed/.test(err.message));
});

// ---- catch-up over the socket (issue 21) ----

const OTHER = "g:7";
const THIRD = "g:8";

/** A client that knows `seen`, connected with the resume answered (`answer` options, or false: not answered). */
async function resumedClient(seen, answer = {}, setup = () => undefined) {
  FakeSocket.reset();
  const server = new FakeImray();
  setup(server);
  const client = ImrayClient.fromTokens("http://imray.test", tokens(), { WebSocket: FakeSocket, fetch: server.fetch, ...QUICK });
  const record = { client, server, messages: [], states: [], errors: [] };
  client.on("message", ({ message }) => record.messages.push(message));
  client.on("error", (error) => record.errors.push(error));
  current = record;
  const connecting = client.connect({ seen });
  await until(() => FakeSocket.all.length === 1, "a socket");
  FakeSocket.last().accept();
  await connecting;
  if (answer) server.answerResume(FakeSocket.last(), answer);
  return record;
}

/** Drops the socket and accepts the next one; returns it (its resume not answered yet). */
async function reconnected() {
  const count = FakeSocket.all.length;
  FakeSocket.last().drop(1006);
  await until(() => FakeSocket.all.length === count + 1, "a new socket");
  FakeSocket.last().accept();
  return FakeSocket.last();
}

const moved = (seqs) => (server) => { for (const conv of [CONV, OTHER, THIRD]) for (const seq of seqs) server.add(conv, seq); };

test("with conversations known, the auth frame names each with its seen seq", async () => {
  const record = await resumedClient({ [CONV]: 1, [OTHER]: 5 });
  assert.deepEqual(FakeSocket.last().sent[0], { type: "auth", token: "access-0", batch: true, seen: { [OTHER]: 5, [CONV]: 1 } });
  assert.deepEqual(FakeSocket.last().sent.length, 1, "no resume frame after auth_ok");
  FakeSocket.last().receive(live(2));
  const sending = record.client.send(CONV, "pending across the reconnect");
  const socket = await reconnected();
  assert.deepEqual(socket.sent.map((f) => f.type), ["auth", "send"], "auth with seen, then the resends");
  assert.deepEqual(Object.entries(socket.sent[0].seen), [[CONV, 2], [OTHER, 5]], "the most recently active first");
  record.server.answerResume(socket);
  socket.receive({ type: "ack", id: socket.sent[1].id, msg_id: "own", conv: CONV, seq: 3, ts: 3 });
  assert.equal((await sending).seq, 3);
});

test("auth_ok, the catch-up and resume_ok in one message come out in order, then what is live", async () => {
  const record = await resumedClient({ [CONV]: 1 });
  for (let seq = 2; seq <= 4; seq++) record.server.add(CONV, seq);
  const count = FakeSocket.all.length;
  FakeSocket.last().drop(1006);
  await until(() => FakeSocket.all.length === count + 1, "a new socket");
  const socket = FakeSocket.last();
  socket.open();
  record.server.answerResume(socket, { withAuthOk: true });
  socket.receive(live(5));
  await until(() => record.messages.length === 4, "the catch-up and the live one");
  assert.deepEqual(seqs(record), [2, 3, 4, 5]);
  assert.equal(record.server.calls.filter((c) => c.includes("/messages")).length, 0);
  assert.equal(record.client.state, "connected");
});

test("too many conversations for the auth frame go in a resume frame after auth_ok, at most 1000, the most recent", async () => {
  const seen = Object.fromEntries(Array.from({ length: 1200 }, (_, k) => [`g:${k + 1}`, k + 1]));
  await resumedClient(seen);
  const socket = FakeSocket.last();
  assert.deepEqual(socket.sent[0], { type: "auth", token: "access-0", batch: true, resume: true });
  assert.deepEqual(Object.keys(socket.frames("resume")[0].seen).sort(), Array.from({ length: 1000 }, (_, k) => `g:${k + 201}`).sort());
});

test("a server that closes an auth frame with seen as too big gets a resume frame next time", async () => {
  const record = await resumedClient({ [CONV]: 1 }, false, (server) => server.add(CONV, 2));
  const first = FakeSocket.all[0];
  const count = FakeSocket.all.length;
  first.drop(1009); // what a lower pre-auth cap does (here after auth_ok, which the test's accept sent)
  await until(() => FakeSocket.all.length === count + 1, "a new socket");
  const socket = FakeSocket.last();
  socket.open();
  assert.ok(socket.sent[0].seen, "authenticated sessions closing with 1009 change nothing");
  socket.drop(1009);
  await until(() => FakeSocket.all.length === count + 2, "another socket");
  FakeSocket.last().accept();
  assert.deepEqual(FakeSocket.last().sent.map((f) => f.type), ["auth", "resume"]);
  record.server.answerResume(FakeSocket.last());
  await until(() => record.messages.length === 1, "the missed one");
});

test("messages missed while away come over the socket once, in order, and no history is read", async () => {
  const record = await resumedClient({ [CONV]: 1 });
  for (let seq = 2; seq <= 3; seq++) record.server.add(CONV, seq);
  const socket = await reconnected();
  record.server.answerResume(socket);
  socket.receive(live(3)); // live again: the catch-up carried it
  socket.receive(live(4));
  await tick(100);
  assert.deepEqual(seqs(record), [2, 3, 4]);
  assert.equal(record.server.calls.filter((c) => c.includes("/messages")).length, 0);
  assert.deepEqual(record.errors, []);
});

test("a truncated catch-up goes on through history from where the socket stopped", async () => {
  const record = await resumedClient({ [CONV]: 1 }, { truncate: 2 }, (server) => { for (let seq = 1; seq <= 7; seq++) server.add(CONV, seq); });
  await until(() => record.messages.length === 6, "the rest from history");
  assert.deepEqual(seqs(record), [2, 3, 4, 5, 6, 7]);
  assert.deepEqual(record.server.calls.filter((c) => c.includes("/messages")), [`GET /api/conversations/${encodeURIComponent(CONV)}/messages?after_seq=3&limit=200`]);
});

test("a conversation the resume refuses (left) is left out of the next resume", async () => {
  const record = await resumedClient({ [CONV]: 0, [OTHER]: 3 }, { refuse: [OTHER] });
  await tick(20);
  const socket = await reconnected();
  assert.deepEqual(seenFrame(socket).seen, { [CONV]: 0 });
  assert.deepEqual(record.errors, []);
});

for (const failure of ["no resume frame in time: read what you missed from history", "catch-up failed: read what you missed from history"]) {
  test(`when the catch-up over the socket fails ("${failure.split(":")[0]}"), every conversation is caught up from history`, async () => {
    const record = await resumedClient({ [CONV]: 1, [OTHER]: 1, [THIRD]: 1 }, { fail: failure }, moved([1, 2, 3]));
    await until(() => record.messages.length === 6, "all six from history");
    assert.deepEqual(record.messages.map((m) => `${m.conv}#${m.seq}`).sort(), [CONV, OTHER, THIRD].flatMap((c) => [`${c}#2`, `${c}#3`]).sort());
    assert.deepEqual(record.errors, [], "the SDK's business, not the app's");
  });
}

test("a reconnect costs one HTTP request instead of one per conversation that moved", async () => {
  const counts = {};
  for (const resume of [true, false]) {
    const record = await resumedClient({ [CONV]: 1, [OTHER]: 1, [THIRD]: 1 }, {}, moved([1]));
    await tick(20);
    moved([2, 3])(record.server);
    record.server.calls.length = 0;
    const socket = await reconnected();
    record.server.answerResume(socket, resume ? {} : { fail: "catch-up failed: read what you missed from history" });
    await until(() => record.messages.length === 6, "six missed messages");
    await tick(50);
    counts[resume ? "resume" : "history"] = record.server.calls.length;
    console.log(`HTTP requests of a reconnect, 3 conversations moved, resume ${resume ? "on" : "off"}: ${record.server.calls.length} (${record.server.calls.join(", ")})`);
    await record.client.close();
  }
  assert.deepEqual(counts, { resume: 1, history: 4 });
});
