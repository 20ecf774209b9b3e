// Unit tests of the per-conversation ordering (dist/streams.js), without a server.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Streams } from "../dist/index.js";

const msg = (seq, conv = "d:1:2") => ({ type: "msg", conv, seq, msg_id: `m${seq}`, from: 1, kind: "text", body: `b${seq}`, ts: seq });
const seqs = (messages) => messages.map((m) => m.seq);

test("the next seq is delivered at once and moves seen", () => {
  const streams = new Streams();
  assert.deepEqual(seqs(streams.offer(msg(1))), [1]);
  assert.deepEqual(seqs(streams.offer(msg(2))), [2]);
  assert.equal(streams.seen("d:1:2"), 2);
});

test("a duplicate or an older seq is dropped", () => {
  const streams = new Streams({ "d:1:2": 5 });
  assert.deepEqual(streams.offer(msg(5)), []);
  assert.deepEqual(streams.offer(msg(3)), []);
  assert.deepEqual(seqs(streams.offer(msg(6))), [6]);
  assert.deepEqual(streams.offer(msg(6)), []);
});

test("an early seq is held until the gap before it fills, then everything follows in order", () => {
  const streams = new Streams();
  assert.deepEqual(streams.offer(msg(3)), []);
  assert.deepEqual(streams.offer(msg(4)), []);
  assert.deepEqual(streams.gap("d:1:2"), { conv: "d:1:2", afterSeq: 0, firstHeld: 3 });
  assert.deepEqual(seqs(streams.offer(msg(1))), [1]);
  assert.deepEqual(seqs(streams.offer(msg(2))), [2, 3, 4]);
  assert.equal(streams.gap("d:1:2"), undefined);
  assert.deepEqual(streams.gaps(), []);
});

test("a held frame offered twice comes out once", () => {
  const streams = new Streams();
  streams.offer(msg(2));
  streams.offer(msg(2));
  assert.deepEqual(seqs(streams.offer(msg(1))), [1, 2]);
});

test("conversations are ordered independently", () => {
  const streams = new Streams({ "g:7": 10 });
  assert.deepEqual(streams.offer(msg(2, "d:1:2")), []);
  assert.deepEqual(seqs(streams.offer(msg(11, "g:7"))), [11]);
  assert.deepEqual(streams.gaps().map((g) => g.conv), ["d:1:2"]);
});

test("a conversation without seen starts at 0 and delivers from seq 1", () => {
  const streams = new Streams();
  assert.equal(streams.knows("g:9"), false);
  assert.deepEqual(streams.offer(msg(2, "g:9")), []);
  assert.deepEqual(seqs(streams.offer(msg(1, "g:9"))), [1, 2]);
});

test("seen never goes back, and setting it drops what it covers from the held frames", () => {
  const streams = new Streams({ "d:1:2": 4 });
  streams.setSeen("d:1:2", 2);
  assert.equal(streams.seen("d:1:2"), 4);
  streams.offer(msg(6));
  streams.offer(msg(8));
  streams.setSeen("d:1:2", 6);
  assert.deepEqual(streams.gap("d:1:2"), { conv: "d:1:2", afterSeq: 6, firstHeld: 8 });
  assert.deepEqual(seqs(streams.offer(msg(7))), [7, 8]);
});

test("a shuffled stream comes out exactly once and in order", () => {
  const streams = new Streams();
  const order = Array.from({ length: 200 }, (_, i) => (i % 50) + 1); // every seq 4 times
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const out = order.flatMap((seq) => seqs(streams.offer(msg(seq))));
  assert.deepEqual(out, Array.from({ length: 50 }, (_, i) => i + 1));
});

test("snapshot is a copy of seen", () => {
  const streams = new Streams({ "g:1": 3 });
  const snap = streams.snapshot();
  streams.offer(msg(4, "g:1"));
  assert.equal(snap.get("g:1"), 3);
  assert.equal(streams.seen("g:1"), 4);
});

test("release gives up on a gap: the held frames come out in order and count as seen", () => {
  const streams = new Streams();
  streams.offer(msg(5));
  streams.offer(msg(3));
  assert.deepEqual(seqs(streams.release("d:1:2")), [3, 5]);
  assert.equal(streams.seen("d:1:2"), 5);
  assert.deepEqual(streams.release("d:1:2"), []);
  assert.deepEqual(streams.offer(msg(4)), []);
});
