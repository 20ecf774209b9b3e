// Helpers of the integration tests: users, recording clients, polling with a deadline.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { HttpApi, ImrayClient } from "../dist/index.js";

export const BASE_URL = process.env.IMRAY_BASE_URL;
/** The reason to skip the live tests: only when no imray was named (run by hand without a server). */
export const NO_SERVER = BASE_URL ? false : "IMRAY_BASE_URL is not set: no imray to test against";
export const PASSWORD = "correct horse battery";
/** Quick timings for tests; everything else as in production. */
export const FAST = { gapWaitMs: 300, backoffBaseMs: 100, backoffCapMs: 1000, pingIntervalMs: 2000, pongTimeoutMs: 10_000 };

export const api = () => new HttpApi(BASE_URL);

export async function newUser() {
  const username = `js${randomBytes(5).toString("hex")}`;
  await api().register(username, PASSWORD);
  return { username, tokens: await api().login(username, PASSWORD) };
}

/** A client that records what it delivers: messages by conv, states, errors. */
export function recording(client) {
  const record = { client, messages: new Map(), states: [], errors: [], frames: [] };
  client.on("message", ({ message }) => {
    if (!record.messages.has(message.conv)) record.messages.set(message.conv, []);
    record.messages.get(message.conv).push(message);
  });
  client.on("state", ({ state }) => record.states.push(state));
  client.on("error", (error) => record.errors.push(error));
  client.on("frame", ({ frame }) => record.frames.push(frame));
  record.in = (conv) => record.messages.get(conv) ?? [];
  return record;
}

export async function connected(tokens, options = {}, connectOptions = {}) {
  const record = recording(ImrayClient.fromTokens(BASE_URL, tokens, { ...FAST, ...options }));
  await record.client.connect(connectOptions);
  return record;
}

/** Two connected users whose logins are pinned to different socket nodes. */
export async function usersOnTwoNodes(options = {}) {
  const a = await newUser();
  const alice = Object.assign(await connected(a.tokens, options), { username: a.username });
  for (let i = 0; i < 10; i++) {
    const b = await newUser();
    if (b.tokens.socket_node !== a.tokens.socket_node) {
      return [alice, Object.assign(await connected(b.tokens, options), { username: b.username })];
    }
  }
  throw new Error("no second socket node: every login was pinned to " + a.tokens.socket_node);
}

export const direct = (a, b) => `d:${Math.min(a, b)}:${Math.max(a, b)}`;

export async function eventually(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await check();
    if (result) return result;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${typeof what === "function" ? what() : what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** `messages` are seqs first..last, each once, in order. */
export function assertInOrder(messages, first, last, who) {
  const want = Array.from({ length: last - first + 1 }, (_, i) => first + i);
  assert.deepEqual(messages.map((m) => m.seq), want, `${who}: seqs delivered`);
}
