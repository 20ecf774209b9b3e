"""Bounded everywhere (no Ray): what a shard's fan-out holds per node and in all, how long it waits
for a node's ack, how long a socket node waits for a shard, and what each does on overflow."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from imray.actors.batching import Batcher, PendingOverflow
from imray.actors.fanout import FanOut
from imray.actors.shard_link import ShardLink, ShardTimeout
from imray.actors.shard_listener import NodeStreams
from imray.actors.stream import DELIVER, HEADER, HELLO, OUTCOMES, SUBMIT, frame, read_frame
from imray.adapters.named_actors import ActorMissing
from imray.domain.messaging import Delivery
from imray.domain.nodes import ShardEndpoint
from imray.settings import Settings


async def settle(turns: int = 10) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def until(check, timeout: float = 2.0) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.01)


# -- the batcher's bound per destination ----------------------------------------------------------

async def test_past_its_bound_a_destination_s_waiting_items_are_dropped_and_the_owner_told() -> None:
    release = asyncio.Event()
    sent: list[list[int]] = []

    async def send(key: str, items: list[int]) -> list[int]:
        sent.append(items)
        await release.wait()
        return items

    overflows: list[tuple[str, int]] = []
    batcher: Batcher[str, int, int] = Batcher(send, max_pending=3, on_overflow=lambda k, n: overflows.append((k, n)))
    in_flight = batcher.submit("n", 0)
    await settle()
    waiting = [batcher.submit("n", i) for i in (1, 2, 3)]  # the call in flight is not counted
    assert overflows == []
    newest = batcher.submit("n", 4)  # one too many: the three waiting are dropped, it waits alone
    assert overflows == [("n", 3)]
    for future in waiting:
        with pytest.raises(PendingOverflow):
            await future
    release.set()
    assert await in_flight == 0 and await newest == 4
    assert sent == [[0], [4]]


# -- the fan-out ----------------------------------------------------------------------------------

class Writer:
    """A node's stream as the shard writes it: DELIVER frames are recorded, never acknowledged."""

    def __init__(self) -> None:
        self.delivered: list[list[Any]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        kind, size = HEADER.unpack(data[:HEADER.size])
        assert kind == DELIVER
        self.delivered.append(orjson.loads(data[HEADER.size:HEADER.size + size]))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class NoActors:
    namespace = "test"

    def supervisor(self) -> Any:
        raise ActorMissing("supervisor")

    def socket_node(self, node_id: str) -> Any:
        raise ActorMissing(node_id)


async def fan_out(**settings: Any) -> tuple[FanOut, Writer, NodeStreams]:
    streams = NodeStreams()
    writer = Writer()
    streams.opened("sn-1", writer)  # type: ignore[arg-type]
    fanout = FanOut(0, Settings(**settings), NoActors(), streams, None)  # type: ignore[arg-type]
    fanout.start(None)  # type: ignore[arg-type]  # two nodes at most: presence is never asked
    fanout.node_ready("sn-1", None)
    return fanout, writer, streams


def message(seq: int) -> Delivery:
    return Delivery(orjson.dumps({"type": "msg", "seq": seq}).decode(), (1,), None, "d:1:2", seq, seq)


async def test_a_node_that_does_not_acknowledge_in_time_has_its_stream_reset() -> None:
    fanout, writer, _ = await fan_out(delivery_ack_timeout_s=0.2)
    fanout.post([message(1)])
    await until(lambda: len(writer.delivered) == 1)
    assert not writer.closed
    await until(lambda: writer.closed)  # reset: the node reconnects and asks for what it missed
    await fanout.stop()


async def test_a_node_with_too_much_waiting_has_it_dropped_and_its_stream_reset() -> None:
    fanout, writer, _ = await fan_out(fanout_node_pending=3, delivery_ack_timeout_s=60.0)
    fanout.post([message(1)])
    await until(lambda: len(writer.delivered) == 1)  # in flight, never acknowledged
    for seq in (2, 3, 4):
        fanout.post([message(seq)])
        await settle()
    assert not writer.closed
    fanout.post([message(5)])
    await until(lambda: writer.closed)
    await fanout.stop()


async def test_past_its_bound_the_fan_out_queue_drops_what_was_committed_and_resets_the_streams() -> None:
    fanout, writer, _ = await fan_out(fanout_queue_deliveries=2, delivery_ack_timeout_s=60.0)
    fanout.pause(True)
    fanout.post([message(1)])
    fanout.post([message(2)])
    assert not writer.closed
    fanout.post([message(3)])  # over the bound: dropped here...
    # ... and the node's stream reset: it reconnects and asks for what it missed, 3 included, which
    # the shard re-sends from the database (nothing is lost for a session that stays open).
    assert writer.closed
    fanout.pause(False)
    await settle()
    assert all(part[4] != 3 for batch in writer.delivered for part in batch)
    await fanout.stop()


# -- a socket node's wait for a shard ---------------------------------------------------------------

class SlowShard:
    """A shard that reads SUBMITs and answers each only when the test says so."""

    def __init__(self) -> None:
        self.submits: asyncio.Queue[bytes] = asyncio.Queue()
        self.writer: asyncio.StreamWriter | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        kind, _ = await read_frame(reader)
        assert kind == HELLO
        while True:
            kind, payload = await read_frame(reader)
            assert kind == SUBMIT
            await self.submits.put(payload)

    def answer(self, payload: bytes) -> None:
        assert self.writer is not None
        self.writer.write(frame(OUTCOMES, payload))


class Endpoint:
    def __init__(self, port: int) -> None:
        self.port = port

    async def remote(self) -> ShardEndpoint:
        return ShardEndpoint("127.0.0.1", self.port, "secret")


class ShardActors(NoActors):
    def __init__(self, port: int) -> None:
        self.port = port

    def shard(self, index: int) -> Any:
        return type("Handle", (), {"stream_endpoint": Endpoint(self.port)})()


async def test_a_shard_that_gives_no_outcome_in_time_fails_the_submit_and_its_late_answer_is_dropped() -> None:
    shard = SlowShard()
    server = await asyncio.start_server(shard.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = ShardLink("sn-1", 0, ShardActors(port), lambda _blob: 0, timeout_s=0.3)  # type: ignore[arg-type]
    try:
        with pytest.raises(ShardTimeout):
            await link.submit(b"first")
        assert await shard.submits.get() == b"first"
        second = asyncio.ensure_future(link.submit(b"second"))
        assert await shard.submits.get() == b"second"
        shard.answer(b"late answer to first")  # matched to the first, which nobody waits for any more
        shard.answer(b"answer to second")
        assert await asyncio.wait_for(second, 1) == b"answer to second"
    finally:
        await link.stop()
        server.close()
