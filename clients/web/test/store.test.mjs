// The app's model without a browser (node --test): messages kept by seq, changes applied once,
// unread and "seen" as the screen shows them. Runs on the built app (clients/web/build.sh).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Conversation, Store } from "../../../imray/webapp/store.js";

const msg = (seq, from, body, extra = {}) => ({ conv: "d:1:2", seq, msg_id: `m${seq}`, from, kind: "text", body, ts: 1000 + seq, ...extra });
const event = (seq, from, change) => ({ conv: "d:1:2", seq, msg_id: `m${seq}`, from, kind: "event", body: "", ts: 1000 + seq, event: change });

test("a message taken twice (live and from a history page) is kept once, in seq order", () => {
  const c = new Conversation("d:1:2");
  assert.equal(c.add(msg(2, 2, "two"), true), true);
  assert.equal(c.add(msg(1, 1, "one"), false), true);
  assert.equal(c.add(msg(2, 2, "two"), false), false);
  assert.deepEqual(c.ordered().map((m) => m.body), ["one", "two"]);
  assert.equal(c.lastSeq, 2);
  assert.equal(c.oldestSeq(), 1);
  assert.equal(c.last.body, "two");
});

test("live recall, edit and reactions change their message; events read from history are not applied again", () => {
  const c = new Conversation("d:1:2");
  c.add(msg(1, 1, "hello"), false);
  c.add(msg(2, 2, "typo"), false);
  c.add(event(3, 2, { type: "edit", seq: 2, body: "fixed" }), true);
  c.add(event(4, 1, { type: "react", seq: 2, emoji: "👍" }), true);
  c.add(event(4, 1, { type: "react", seq: 2, emoji: "👍" }), true);  // the same event again: once
  c.add(event(5, 1, { type: "recall", seq: 1 }), true);
  assert.equal(c.messages.get(2).body, "fixed");
  assert.deepEqual(c.messages.get(2).reactions, { "👍": 1 });
  assert.equal(c.messages.get(1).recalled, true);
  const fromHistory = new Conversation("d:1:2");
  fromHistory.add(msg(2, 2, "fixed", { reactions: { "👍": 1 } }), false);  // history shows the current state
  fromHistory.add(event(4, 1, { type: "react", seq: 2, emoji: "👍" }), false);
  fromHistory.add(event(4, 1, { type: "react", seq: 2, emoji: "👍" }), true);  // then the stream brings it too
  assert.deepEqual(fromHistory.messages.get(2).reactions, { "👍": 1 });
  assert.equal(c.last.seq, 2, "an event is never the last message");
});

test("seen marks the newest own message another member has read, with how many did", () => {
  const c = new Conversation("g:7");
  c.add(msg(1, 1, "a"), false);
  c.add(msg(2, 1, "b"), false);
  c.add(msg(3, 2, "c"), false);
  assert.equal(c.seenMark(1), null);
  c.receipts.set(2, 1);
  assert.deepEqual(c.seenMark(1), { seq: 1, by: 1 });
  c.receipts.set(3, 3);
  c.receipts.set(2, 3);
  assert.deepEqual(c.seenMark(1), { seq: 2, by: 2 });
  c.receipts.set(1, 9);  // my own read position is no receipt of my message
  assert.deepEqual(c.seenMark(1), { seq: 2, by: 2 });
});

test("the list orders conversations by their latest activity and keeps the server's unread counts and mentions", () => {
  const store = new Store(1);
  store.takeList([
    { conv: "d:1:2", last_seq: 3, read_seq: 1, unread: 2, last_message: msg(3, 2, "old") },
    { conv: "g:5", last_seq: 1, read_seq: 0, unread: 1, mentioned: true, last_message: null },
    { conv: "d:1:3", last_seq: 9, read_seq: 9, unread: 0, last_message: { ...msg(9, 3, "new"), conv: "d:1:3", ts: 5000 } },
  ]);
  assert.deepEqual(store.ordered().map((c) => c.conv), ["d:1:3", "d:1:2", "g:5"]);
  assert.equal(store.get("d:1:2").unread, 2);
  assert.deepEqual(["d:1:2", "g:5"].map((conv) => store.get(conv).mentioned), [false, true]);
  store.get("g:5").add({ ...msg(2, 2, "newest"), conv: "g:5", ts: 9000 }, true);
  assert.equal(store.ordered()[0].conv, "g:5");
});

test("typing shows only until its time is up", () => {
  const c = new Conversation("d:1:2");
  c.typing.set(2, 2000);
  assert.deepEqual(c.typingNow(1500), [2]);
  assert.deepEqual(c.typingNow(2500), []);
});

test("my own reactions follow my newest react or unreact, in whatever order history pages arrive", () => {
  const c = new Conversation("d:1:2", 1);
  c.add(event(5, 1, { type: "unreact", seq: 2, emoji: "👍" }), false);  // the newer page first
  c.add(event(4, 1, { type: "react", seq: 2, emoji: "👍" }), false);
  c.add(event(6, 2, { type: "react", seq: 2, emoji: "❤️" }), false);  // someone else's
  c.add(event(7, 1, { type: "react", seq: 2, emoji: "😂" }), true);
  assert.equal(c.reacted(2, "👍"), false);
  assert.equal(c.reacted(2, "❤️"), false);
  assert.equal(c.reacted(2, "😂"), true);
});
