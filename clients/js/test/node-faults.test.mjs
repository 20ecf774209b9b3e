// Socket nodes lost mid-conversation (through tests/test_js_sdk.py): one killed (SIGKILL), one
// drained and replaced (`move` frames); nothing is lost or shown twice. Both need Ray, so this file
// asks its runner over a line protocol: it prints `IMRAY-KILL <node id>` (or `IMRAY-RESTART <node
// id>`) and waits for the line `IMRAY-KILLED` (`IMRAY-RESTARTED`) on stdin. Runs only when
// IMRAY_KILL_PROTOCOL=1 says a runner answers.
import assert from "node:assert/strict";
import { createInterface } from "node:readline";
import { after, describe, test } from "node:test";
import { NO_SERVER, assertInOrder, direct, eventually, usersOnTwoNodes } from "./helpers.mjs";

const NO_RUNNER = process.env.IMRAY_KILL_PROTOCOL === "1" ? false : "IMRAY_KILL_PROTOCOL is not 1: nobody answers kill requests";
const clients = [];
after(async () => {
  for (const client of clients) await client.close();
});

/** Asks the runner to `what` (KILL: SIGKILL; RESTART: drain, stop) socket node `node`; resolves
 * once it is done and the node replaced. */
function askRunner(what, node) {
  const lines = createInterface({ input: process.stdin });
  const done = new Promise((resolve) => lines.on("line", (line) => line.trim() === `IMRAY-${what}ED` && resolve()));
  process.stdout.write(`\nIMRAY-${what} ${node}\n`);
  return done.finally(() => {
    lines.close();
    process.stdin.pause(); // the process may end
  });
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Alice and Bob, on two nodes, both keep writing while `fault` happens to Alice's node; then both
 * apps must hold the whole conversation, each message once and in order. Returns them. */
async function chatThrough(fault) {
  const [alice, bob] = await usersOnTwoNodes();
  clients.push(alice.client, bob.client);
  const conv = direct(alice.client.userId, bob.client.userId);
  const acks = [];
  const bodies = [];
  const chat = async (record, tag, count) => {
    for (let i = 0; i < count; i++) {
      const body = `${tag} ${i}`;
      bodies.push(body);
      acks.push(record.client.send(conv, body));
      await pause(40);
    }
  };
  // Both keep writing while the sender's node goes under them.
  const talking = Promise.all([chat(alice, "alice", 40), chat(bob, "bob", 40)]);
  await pause(300);
  const node = alice.client.socketNode;
  await askRunner(fault, node);
  await talking;
  await Promise.all([chat(alice, "alice after", 5), chat(bob, "bob after", 5)]);
  const stored = await Promise.all(acks);
  const total = bodies.length;
  assert.deepEqual(stored.map((a) => a.seq).sort((x, y) => x - y), Array.from({ length: total }, (_, i) => i + 1),
    "every send stored once");
  for (const record of [alice, bob]) {
    await eventually(() => record.in(conv).length >= total, 20_000, () => `${total} messages for ${record.client.userId}, got ${record.in(conv).length}`);
    await pause(500); // nothing more may follow
    assertInOrder(record.in(conv), 1, total, `user ${record.client.userId}`);
    assert.deepEqual(record.in(conv).map((m) => m.body).sort(), [...bodies].sort(), "each body exactly once");
  }
  return { alice, bob, node };
}

describe("socket nodes lost mid-conversation", { skip: NO_SERVER || NO_RUNNER }, () => {
  test("a socket node killed mid-conversation loses nothing and shows nothing twice, on either side", async () => {
    const { alice, bob, node } = await chatThrough("KILL");
    assert.ok(alice.states.includes("reconnecting"), `alice lost her node ${node}: ${alice.states}`);
    assert.equal(alice.client.state, "connected");
    assert.equal(bob.client.state, "connected");
  });

  test("a drained node's app follows the move to another node without a reconnect, and loses or repeats nothing", async () => {
    const { alice, bob, node } = await chatThrough("RESTART");
    assert.deepEqual(alice.states, ["connecting", "connected"], "the move is seamless");
    assert.notEqual(alice.client.socketNode, node, "alice lives on another node now");
    assert.equal(bob.client.state, "connected");
  });
});
