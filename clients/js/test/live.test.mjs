// The SDK against a live imray (IMRAY_BASE_URL): what an application observes through it.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { ImrayClient, ImrayError, ImrayHttpError } from "../dist/index.js";
import { BASE_URL, FAST, NO_SERVER, PASSWORD, api, assertInOrder, connected, direct, eventually, newUser, recording, usersOnTwoNodes } from "./helpers.mjs";

const clients = [];
const track = (record) => (clients.push(record.client), record);
after(async () => {
  for (const client of clients) await client.close();
});

describe("the SDK against a live imray", { skip: NO_SERVER }, () => {
  test("two users on different socket nodes chat both ways and each app sees every message once, in order, its own included", async () => {
    const [alice, bob] = (await usersOnTwoNodes()).map(track);
    assert.notEqual(alice.client.socketNode, bob.client.socketNode);
    const conv = direct(alice.client.userId, bob.client.userId);
    const acks = await Promise.all(
      Array.from({ length: 6 }, (_, i) => (i % 2 ? bob : alice).client.send(conv, `hello ${i}`)),
    );
    assert.deepEqual(acks.map((a) => a.seq).sort((x, y) => x - y), [1, 2, 3, 4, 5, 6]);
    for (const record of [alice, bob]) {
      await eventually(() => record.in(conv).length >= 6, 10_000, () => `6 messages, got ${record.in(conv).length}`);
      assertInOrder(record.in(conv), 1, 6, `user ${record.client.userId}`);
    }
    assert.deepEqual(alice.in(conv), bob.in(conv).map((m) => ({ ...m })), "both apps hold the same conversation");
    const own = alice.in(conv).filter((m) => m.from === alice.client.userId);
    assert.deepEqual(own.map((m) => m.body).sort(), ["hello 0", "hello 2", "hello 4"]);
    assert.equal(alice.client.state, "connected");
  });

  test("an app that was offline gets exactly what it missed after its seen, and a new one only what comes after the baseline", async () => {
    const [alice, bob] = (await usersOnTwoNodes()).map(track);
    const conv = direct(alice.client.userId, bob.client.userId);
    for (let i = 1; i <= 3; i++) await alice.client.send(conv, `before ${i}`);
    await eventually(() => bob.in(conv).length === 3, 10_000, "bob has the first 3");
    const seen = bob.client.seen;
    await bob.client.close();
    assert.equal(bob.client.state, "closed");
    for (let i = 4; i <= 6; i++) await alice.client.send(conv, `while away ${i}`);

    const back = track(await connected((await api().refresh(bob.client.refreshToken)), {}, { seen }));
    await eventually(() => back.in(conv).length === 3, 10_000, "bob's new app has the 3 he missed");
    assertInOrder(back.in(conv), 4, 6, "the app back from offline");
    assert.deepEqual(back.in(conv).map((m) => m.body), ["while away 4", "while away 5", "while away 6"]);

    const fresh = track(await connected(await api().login(bob.username, PASSWORD)));
    await alice.client.send(conv, "after the baseline");
    await eventually(() => fresh.in(conv).length === 1 && back.in(conv).length === 4, 10_000, "the 7th message");
    assertInOrder(fresh.in(conv), 7, 7, "a new app with the list as baseline");
  });

  test("a group conversation is delivered from seq 1, its creation event included", async () => {
    const [alice, bob] = (await usersOnTwoNodes()).map(track);
    const group = await alice.client.createGroup("js sdk", [bob.client.userId]);
    await alice.client.send(group.conv, "first words");
    for (const record of [alice, bob]) {
      await eventually(() => record.in(group.conv).length === 2, 10_000, () => `group stream of ${record.client.userId}`);
      assertInOrder(record.in(group.conv), 1, 2, "group");
      assert.equal(record.in(group.conv)[0].event.type, "created");
    }
  });

  test("read receipts and typing reach the other user", async () => {
    const [alice, bob] = (await usersOnTwoNodes()).map(track);
    const conv = direct(alice.client.userId, bob.client.userId);
    const receipts = [];
    const typing = [];
    alice.client.on("receipt", (event) => receipts.push(event));
    alice.client.on("typing", (event) => typing.push(event));
    const ack = await alice.client.send(conv, "did you read this?");
    await eventually(() => bob.in(conv).length === 1, 10_000, "bob has it");
    bob.client.typing(conv);
    bob.client.read(conv, ack.seq);
    await eventually(() => receipts.length && typing.length, 10_000, "a receipt and a typing event");
    assert.deepEqual(receipts[0], { type: "receipt", conv, user_id: bob.client.userId, seq: ack.seq });
    assert.deepEqual(typing[0], { type: "typing", conv, user_id: bob.client.userId });
  });

  test("a file uploaded through the SDK is sent as an image and its bytes read back by the other user", async () => {
    const [alice, bob] = (await usersOnTwoNodes()).map(track);
    const conv = direct(alice.client.userId, bob.client.userId);
    const png = Uint8Array.from(Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==", "base64"));
    const file = await alice.client.uploadFile(png, "dot.png", "image/png");
    assert.equal(file.content_type, "image/png");
    await alice.client.send(conv, "a dot", { kind: "image", fileId: file.file_id });
    await eventually(() => bob.in(conv).length === 1, 10_000, "bob has the image message");
    const [message] = bob.in(conv);
    assert.equal(message.kind, "image");
    assert.equal(message.file_id, file.file_id);
    const blob = await bob.client.fileBlob(message.file_id);
    assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), png);
  });

  test("a send the server refuses rejects with its error code, and the session goes on", async () => {
    const [alice] = [track(await connected((await newUser()).tokens))];
    await assert.rejects(alice.client.send("g:999999999", "nobody here"), (err) => err instanceof ImrayError && err.code === "not_found");
    await assert.rejects(alice.client.send("d:2:1", "not canonical"), (err) => err instanceof ImrayError && err.code === "bad_request");
    assert.equal(alice.client.state, "connected");
  });

  test("a revoked login ends closed with an unauthorized error, and a pending send fails", async () => {
    const alice = track(await connected((await newUser()).tokens));
    await api().revoke(alice.client.refreshToken);
    await eventually(() => alice.client.state === "closed", 10_000, "closed after the revocation");
    assert.deepEqual(alice.errors.map((e) => e.code), ["unauthorized"]);
    assert.deepEqual(alice.states, ["connecting", "connected", "reconnecting", "closed"]);
    await assert.rejects(alice.client.send("d:1:2", "too late"), (err) => err instanceof ImrayError && err.code === "closed");
  });

  test("an access token refused at auth is renewed once with the refresh token, and the app connects", async () => {
    const { tokens } = await newUser();
    const record = track(recording(ImrayClient.fromTokens(BASE_URL, { ...tokens, access_token: "expired-while-away" }, FAST)));
    await record.client.connect({ seen: {} });
    assert.deepEqual(record.states, ["connecting", "reconnecting", "connected"]);
    assert.notEqual(record.client.refreshToken, tokens.refresh_token);
  });

  test("bad tokens fail connect with unauthorized instead of retrying forever", async () => {
    const { tokens } = await newUser();
    const bad = { ...tokens, access_token: "not-a-token", refresh_token: "not-a-refresh-token" };
    const record = track(recording(ImrayClient.fromTokens(BASE_URL, bad, FAST)));
    await assert.rejects(record.client.connect({ seen: {} }), (err) => err instanceof ImrayError && err.code === "unauthorized");
    assert.equal(record.client.state, "closed");
    assert.deepEqual(record.errors.map((e) => e.code), ["unauthorized"]);
  });

  test("a bad login rejects with the OAuth error", async () => {
    await assert.rejects(ImrayClient.login(BASE_URL, "nobody-js-sdk", "wrong password!"),
      (err) => err instanceof ImrayHttpError && err.status === 400 && err.error === "invalid_grant");
  });

  test("a pin to a node that cannot be reached is replaced through assign", async () => {
    const { tokens } = await newUser();
    const record = track(await connected({ ...tokens, socket_url: "ws://127.0.0.1:9/ws" }));
    assert.equal(record.client.state, "connected");
    assert.notEqual(record.client.socketUrl, "ws://127.0.0.1:9/ws");
  });

  test("the access token is renewed on the open socket before it expires, and the session goes on", async () => {
    const [alice, bob] = (await usersOnTwoNodes({ renewFraction: 0.002 })).map(track); // 900 s tokens: renewed every ~1.8 s
    const firstRefresh = alice.client.refreshToken;
    const firstAccess = alice.client.accessToken;
    await eventually(() => alice.frames.some((f) => f.type === "refresh_ok"), 10_000, "a refresh_ok");
    assert.notEqual(alice.client.refreshToken, firstRefresh);
    assert.notEqual(alice.client.accessToken, firstAccess);
    const conv = direct(alice.client.userId, bob.client.userId);
    await alice.client.send(conv, "still here");
    await eventually(() => bob.in(conv).length === 1, 10_000, "bob has it");
    assert.deepEqual(alice.states, ["connecting", "connected"]);
    assert.deepEqual(alice.errors, []);
  });
});
