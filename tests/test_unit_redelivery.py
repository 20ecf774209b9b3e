"""Re-delivery after a shard crash, without Ray: the node drops what it has delivered already, the
shard reads what it owns that was committed since a time, and a (re)started shard's fan-out sends
that to a node before anything new (see `imray.actors.redelivery`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from imray.actors import fanout as fanout_module
from imray.actors import redelivery
from imray.actors.fanout import FanOut
from imray.actors.shard_listener import NodeStreams
from imray.actors.socket_server import SocketServer
from imray.actors.stream import DELIVER, HEADER
from imray.actors.wire import DeliveryPart, pack_deliveries, unpack_deliveries
from imray.adapters.live_config import LiveSettings
from imray.adapters.named_actors import ActorMissing
from imray.domain.conversations import shard_of
from imray.domain.messaging import ConversationLog, Delivery, SendItem
from imray.settings import Settings
from imray.storage import accounts, groups
from imray.storage.db import Database
from imray.storage.message_store import SqlMessageStore

NODE = "sn-1"


# --- the node: drop what was delivered already ---------------------------------------------------

class FakeSession:
    def __init__(self, user: int, session_id: str) -> None:
        self.user, self.id = user, session_id
        self.frames: list[bytes] = []

    def push_frame(self, frame: bytes, conv: str = "", seq: int = 0) -> None:
        self.frames.append(frame)

    def texts(self) -> list[dict[str, Any]]:
        # A server frame: 2 bytes of header, 2 more for a length of 126 to 65535 bytes, then the text.
        return [orjson.loads(f[4:] if f[1] & 0x7F == 126 else f[2:]) for f in self.frames]

    def bodies(self) -> list[str]:
        return [t["body"] for t in self.texts()]


def node_with(*sessions: FakeSession) -> SocketServer:
    settings = Settings()
    server = SocketServer(NODE, settings, None, LiveSettings(settings),  # type: ignore[arg-type]
                          submit=None, shard_count=1, url_of=None, presence_change=None)  # type: ignore[arg-type]
    for s in sessions:
        server.sessions.setdefault(s.user, {})[s.id] = s  # type: ignore[assignment]
    return server


def msg(conv: str, seq: int, ts: int = 1_000, users: tuple[int, ...] = (1, 2), skip: str | None = None) -> DeliveryPart:
    text = orjson.dumps({"type": "msg", "conv": conv, "seq": seq, "body": f"{conv}#{seq}"}).decode()
    return (text, list(users), skip, conv, seq, ts)


def blob(*parts: DeliveryPart) -> bytes:
    return pack_deliveries(parts)


def test_a_message_delivered_again_reaches_each_session_once_and_in_order() -> None:
    b1, b2 = FakeSession(2, "b1"), FakeSession(2, "b2")
    node = node_with(b1, b2)
    node.deliver(blob(msg("d:1:2", 1), msg("d:1:2", 2)))
    node.deliver(blob(msg("d:1:2", 1), msg("d:1:2", 2), msg("d:1:2", 3), msg("d:1:2", 4)))  # a re-delivery
    assert b1.bodies() == b2.bodies() == ["d:1:2#1", "d:1:2#2", "d:1:2#3", "d:1:2#4"]


def test_an_older_seq_after_a_newer_one_is_dropped_per_conversation_only() -> None:
    b = FakeSession(2, "b")
    node = node_with(b)
    node.deliver(blob(msg("d:1:2", 5), msg("g:7", 1)))
    node.deliver(blob(msg("d:1:2", 4), msg("g:7", 2), msg("d:1:2", 6)))
    assert b.bodies() == ["d:1:2#5", "g:7#1", "g:7#2", "d:1:2#6"]


def test_receipts_and_typing_are_never_taken_for_repeats() -> None:
    b = FakeSession(2, "b")
    node = node_with(b)
    typing = orjson.dumps({"type": "typing", "conv": "d:1:2", "user_id": 1, "body": "t"}).decode()
    for _ in range(3):
        node.deliver(blob((typing, [2], None, "", 0, 0)))
    assert b.bodies() == ["t", "t", "t"]


def test_the_sending_session_is_skipped_and_the_newest_ts_is_returned() -> None:
    a, b = FakeSession(1, "a"), FakeSession(2, "b")
    node = node_with(a, b)
    assert node.deliver(blob(msg("d:1:2", 1, ts=30, skip="a"), msg("d:1:2", 2, ts=50, skip="a"),
                             msg("d:1:2", 3, ts=40, skip="a"))) == 50
    assert a.bodies() == [] and b.bodies() == ["d:1:2#1", "d:1:2#2", "d:1:2#3"]
    assert node.deliver(blob((orjson.dumps({"body": "r"}).decode(), [2], None, "", 0, 0))) == 0


def test_past_its_bound_the_node_forgets_the_least_recently_delivered_conversation() -> None:
    b = FakeSession(2, "b")
    node = node_with(b)
    node._delivered_limit = 2
    node.deliver(blob(msg("d:1:2", 1), msg("g:8", 1), msg("d:1:2", 2), msg("g:9", 1)))  # g:8 is the oldest
    node.deliver(blob(msg("d:1:2", 2), msg("g:9", 1), msg("g:8", 1)))
    assert b.bodies() == ["d:1:2#1", "g:8#1", "d:1:2#2", "g:9#1", "g:8#1"]  # forgotten: shown again


def test_since_is_the_newest_ts_less_a_margin_but_no_older_than_the_lookback_before_a_break(monkeypatch) -> None:
    now = [1_000_000]
    monkeypatch.setattr(redelivery, "now_ms", lambda: now[0])
    clock = redelivery.SinceClock()
    assert clock.since() == 1_000_000 - redelivery.MARGIN_MS  # nothing older than the stream concerns the node
    clock.newest = 1_500_000
    assert clock.since() == 1_500_000 - redelivery.MARGIN_MS
    now[0] = 2_000_000
    clock.broke()  # nothing from this shard for 500 s: not all of that is asked for
    assert clock.since() == 2_000_000 - redelivery.LOOKBACK_MS
    clock.newest = 1_999_000
    assert clock.since() == 1_999_000 - redelivery.MARGIN_MS


# --- the shard: what it owns, committed since a time ---------------------------------------------

class World:
    def __init__(self, db: Database, users: list[int], group: int) -> None:
        self.db, self.users, self.group = db, users, group
        self.store = SqlMessageStore(db)
        self.log = ConversationLog(self.store)

    def direct(self, a: int, b: int) -> str:
        x, y = sorted((self.users[a], self.users[b]))
        return f"d:{x}:{y}"

    async def send(self, sender: int, conv: str, body: str) -> dict[str, Any]:
        batch = await self.log.plan([SendItem(self.users[sender], "sess", body, conv, "text", body)])
        await self.store.commit(batch)
        self.log.committed(batch)
        ack = batch.outcomes[0].ack
        assert ack is not None, batch.outcomes[0].error
        return dict(orjson.loads(ack))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    db = Database(f"sqlite:///{tmp_path}/t.db")
    db.create_schema()

    def setup(conn: Any) -> tuple[list[int], int]:
        ids = [accounts.create_user(conn, name, "x", name)["id"] for name in ("ann", "ben", "cy", "dee")]
        return ids, groups.create_group(conn, "g", ids[0], [ids[1], ids[2]])["id"]

    users, group = db.transaction(setup)
    try:
        yield World(db, users, group)
    finally:
        db.close()


def owned_by_different_shards(world: World) -> tuple[str, str]:
    """Two conversations of the world that two shards own (of 2)."""
    convs = [world.direct(0, 1), world.direct(0, 2), world.direct(0, 3), world.direct(1, 2), f"g:{world.group}"]
    first = convs[0]
    other = next(c for c in convs if shard_of(c, 2) != shard_of(first, 2))
    return first, other


async def test_the_store_reads_what_was_committed_since_a_time_oldest_first(world: World) -> None:
    conv = world.direct(0, 1)
    early = await world.send(0, conv, "early")
    await asyncio.sleep(0.01)  # msg_ids have millisecond resolution
    later = [await world.send(1, conv, f"later {i}") for i in range(3)]
    since = later[0]["ts"]
    found = await world.store.committed_since(since, 100)
    assert [m["msg_id"] for m in found] == [a["msg_id"] for a in later]
    assert early["ts"] < since
    assert [m["msg_id"] for m in await world.store.committed_since(since, 2)] == [a["msg_id"] for a in later[1:]]


async def test_a_shard_re_delivers_only_its_own_conversations_to_all_their_members(world: World) -> None:
    mine, theirs = owned_by_different_shards(world)
    index = shard_of(mine, 2)
    start = redelivery.now_ms()
    sent = {conv: [await world.send(0, conv, f"{conv} {i}") for i in range(2)] for conv in (theirs, mine)}
    parts = await redelivery.missed_since(world.store, index, 2, start - 1)
    assert [(p[3], p[4]) for p in parts] == [(mine, 1), (mine, 2)]
    members = sorted(int(u) for u in mine[2:].split(":")) if mine.startswith("d:") else sorted(world.users[:3])
    for part, ack in zip(parts, sent[mine], strict=True):
        text, users, skip, _conv, _seq, ts = part
        assert orjson.loads(text)["msg_id"] == ack["msg_id"] and ts == ack["ts"]
        assert sorted(users) == members and skip is None  # the sending session is not known any more
    assert await redelivery.missed_since(world.store, index, 2, redelivery.now_ms() + 10_000) == []


async def test_a_re_delivery_never_reaches_back_further_than_its_window(world: World, monkeypatch) -> None:
    conv = world.direct(0, 1)
    await world.send(0, conv, "old")
    await asyncio.sleep(0.01)
    monkeypatch.setattr(redelivery, "WINDOW_MS", 5)
    assert await redelivery.missed_since(world.store, shard_of(conv, 1), 1, 0) == []


# --- the fan-out of a (re)started shard ---------------------------------------------------------

class FakeWriter:
    """A node's stream as the shard writes to it: each DELIVER is recorded and acknowledged."""

    def __init__(self, streams: NodeStreams) -> None:
        self.delivered: list[bytes] = []
        self.stream = streams.opened(NODE, self)  # type: ignore[arg-type]

    def write(self, data: bytes) -> None:
        kind, size = HEADER.unpack(data[:HEADER.size])
        assert kind == DELIVER
        self.delivered.append(data[HEADER.size:HEADER.size + size])
        asyncio.get_running_loop().call_soon(self.stream.acknowledged)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


class FakeActors:
    """The supervisor says NODE is live; Ray `deliver` calls to it are recorded."""

    def __init__(self) -> None:
        self.by_ray: list[bytes] = []

    def supervisor(self) -> Any:
        async def nodes() -> list[Any]:
            return [SimpleNamespace(node_id=NODE, alive=True)]
        return SimpleNamespace(nodes=SimpleNamespace(remote=nodes))

    def socket_node(self, node_id: str) -> Any:
        if node_id != NODE:
            raise ActorMissing(node_id)

        async def deliver(data: bytes) -> None:
            self.by_ray.append(data)
        return SimpleNamespace(deliver=SimpleNamespace(remote=deliver))


class NoPresence:
    async def lookup(self, users: list[int]) -> dict[str, list[int]]:
        raise AssertionError("with one node the fan-out broadcasts")


async def settle(condition: Any, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.01)


def seqs_in(data: bytes) -> list[int]:
    return [part[4] for part in unpack_deliveries(data)]


async def test_a_restarted_shard_delivers_what_a_node_missed_before_anything_new(world: World) -> None:
    conv = world.direct(0, 1)
    start = redelivery.now_ms()
    before = [await world.send(0, conv, f"before crash {i}") for i in range(3)]  # acked, never fanned out
    streams, actors = NodeStreams(), FakeActors()
    fan = FanOut(0, Settings(shards=1), actors, streams, world.store)  # type: ignore[arg-type]
    fan.start(NoPresence())  # type: ignore[arg-type]
    try:
        after = await world.send(1, conv, "after restart")
        fan.post([Delivery(orjson.dumps({"seq": 4}).decode(), tuple(world.users[:2]), "sess", conv, 4, after["ts"])])
        await asyncio.sleep(0.3)  # the new message waits for the node's stream: nothing goes by Ray
        assert actors.by_ray == []
        writer = FakeWriter(streams)
        fan.node_ready(NODE, start - 1)  # the node's HELLO
        await settle(lambda: writer.delivered)
        await asyncio.sleep(0.1)
        assert [s for d in writer.delivered for s in seqs_in(d)] == [1, 2, 3, 4, 4]
        assert [p[4] for p in unpack_deliveries(writer.delivered[0])][:3] == [a["seq"] for a in before]

        # Through the node: each session gets each message once, in order.
        b = FakeSession(world.users[1], "b")
        node = node_with(b)
        for data in writer.delivered:
            node.deliver(data)
        assert [t["seq"] for t in b.texts()] == [1, 2, 3, 4]
        assert [t["msg_id"] for t in b.texts()] == [a["msg_id"] for a in [*before, after]]
        assert actors.by_ray == []
    finally:
        await fan.stop()


async def test_a_node_that_never_says_hello_gets_its_deliveries_by_ray_after_a_while(
        world: World, monkeypatch) -> None:
    monkeypatch.setattr(fanout_module, "FIRST_HELLO_WAIT_S", 0.2)
    streams, actors = NodeStreams(), FakeActors()
    fan = FanOut(0, Settings(shards=1), actors, streams, world.store)  # type: ignore[arg-type]
    fan.start(NoPresence())  # type: ignore[arg-type]
    try:
        fan.post([Delivery("{}", (world.users[1],), None, "d:1:2", 9, 1)])
        await settle(lambda: actors.by_ray)
        assert [seqs_in(d) for d in actors.by_ray] == [[9]]
    finally:
        await fan.stop()


async def test_a_paused_fan_out_holds_deliveries_until_resumed(world: World) -> None:
    streams, actors = NodeStreams(), FakeActors()
    fan = FanOut(0, Settings(shards=1), actors, streams, world.store)  # type: ignore[arg-type]
    fan.start(NoPresence())  # type: ignore[arg-type]
    try:
        writer = FakeWriter(streams)
        fan.node_ready(NODE, None)
        fan.pause(True)
        fan.post([Delivery("{}", (world.users[1],), None, "d:1:2", 1, 1)])
        fan.post([Delivery("{}", (world.users[1],), None, "d:1:2", 2, 1)])
        await asyncio.sleep(0.3)
        assert writer.delivered == []
        fan.pause(False)
        await settle(lambda: writer.delivered)
        assert [s for d in writer.delivered for s in seqs_in(d)] == [1, 2]
    finally:
        await fan.stop()


async def test_in_a_group_a_blocker_gets_the_blocked_senders_messages_hidden_live_and_again(world: World) -> None:
    """ben blocks ann, both in ann's group: each of ann's messages goes to ben as a hidden copy, under
    its own stream key, so the node delivers it once (live), and once only (after a re-delivery)."""
    ann, ben, cy = world.users[:3]
    world.db.transaction(lambda c: accounts.block(c, ben, ann))
    conv = f"g:{world.group}"
    start = redelivery.now_ms()
    batch = await world.log.plan([SendItem(ann, "sess", "c1", conv, "text", "psst")])
    await world.store.commit(batch)
    full, hidden = batch.deliveries
    assert sorted(full.users) == sorted([ann, cy]) and full.conv == conv and orjson.loads(full.frame)["body"] == "psst"
    assert hidden.users == (ben,) and hidden.seq == full.seq and hidden.conv != conv and hidden.skip is None
    assert orjson.loads(hidden.frame) == {**orjson.loads(full.frame), "body": "", "hidden": True}

    again = await redelivery.missed_since(world.store, shard_of(conv, 1), 1, start - 1)
    assert [(p[1], p[3]) for p in again] == [(sorted([ann, cy]), conv), ([ben], hidden.conv)]
    b, c = FakeSession(ben, "b"), FakeSession(cy, "c")
    node = node_with(b, c)
    for parts in ([(d.frame, list(d.users), d.skip, d.conv, d.seq, d.ts) for d in batch.deliveries], again):
        node.deliver(blob(*parts))
    assert [(f["body"], f.get("hidden")) for f in b.texts()] == [("", True)]
    assert [f["body"] for f in c.texts()] == ["psst"]


class SilentWriter(FakeWriter):
    """A node's stream that stops acknowledging (its host cut off); closed by a reset."""

    def __init__(self, streams: NodeStreams) -> None:
        super().__init__(streams)
        self.closed = False

    def write(self, data: bytes) -> None:
        self.delivered.append(data[HEADER.size:])

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def test_a_node_whose_stream_was_reset_gets_nothing_by_ray_until_its_hello_asks_for_it_all(
        world: World, monkeypatch) -> None:
    """Deliveries sent by Ray to a cut-off node arrive when its link is back, and could overtake the
    re-delivery its HELLO asks for: after a reset, nothing goes by Ray; the HELLO gets everything."""
    monkeypatch.setattr(fanout_module, "FIRST_HELLO_WAIT_S", 0.1)
    conv = world.direct(0, 1)
    start = redelivery.now_ms()
    streams, actors = NodeStreams(), FakeActors()
    fan = FanOut(0, Settings(shards=1, delivery_ack_timeout_s=0.2), actors, streams,  # type: ignore[arg-type]
                 world.store)
    fan.start(NoPresence())  # type: ignore[arg-type]
    try:
        silent = SilentWriter(streams)
        fan.node_ready(NODE, None)
        sent = []
        for i in range(3):
            sent.append(await world.send(0, conv, f"m{i}"))
            fan.post([Delivery(orjson.dumps(sent[-1]).decode(), tuple(world.users[:2]), None, conv, sent[-1]["seq"],
                               sent[-1]["ts"])])
            await asyncio.sleep(0.3)  # past the ack timeout: the stream is reset, then past FIRST_HELLO_WAIT_S
        assert silent.closed and actors.by_ray == []
        writer = FakeWriter(streams)  # the node is back: a new stream, and its HELLO
        fan.node_ready(NODE, start - 1)
        await settle(lambda: writer.delivered)
        assert [s for d in writer.delivered for s in seqs_in(d)] == [1, 2, 3]
        assert actors.by_ray == []
    finally:
        await fan.stop()
