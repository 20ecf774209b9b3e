"""The node-shard stream's framing and the payloads it carries (no Ray, no sockets)."""

from __future__ import annotations

import asyncio
import json

import pytest

from imray.actors import stream, wire
from imray.domain.messaging import Outcome, ReadItem, SendItem, TypingItem


def reader_of(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    """A stream reader that has received `data` (and then the end of the stream)."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_a_frame_reads_back_as_its_kind_and_payload() -> None:
    payload = wire.pack_items([SendItem(1, "s", "c1", "d:1:2", "text", "hi")])
    assert await stream.read_frame(reader_of(stream.frame(stream.SUBMIT, payload))) == (stream.SUBMIT, payload)


async def test_frames_read_back_one_by_one_in_the_order_written() -> None:
    sent = [(stream.HELLO, b'{"node":"sn-1"}'), (stream.SUBMIT, b"[1]"), (stream.DELIVERED, b""),
            (stream.DELIVER, b"x" * 70_000), (stream.OUTCOMES, b"[]")]
    reader = reader_of(b"".join(stream.frame(kind, payload) for kind, payload in sent))
    assert [await stream.read_frame(reader) for _ in sent] == sent
    with pytest.raises(asyncio.IncompleteReadError):  # and then the end of the stream
        await stream.read_frame(reader)


async def test_a_length_over_the_limit_is_refused_without_waiting_for_its_payload() -> None:
    reader = reader_of(stream.HEADER.pack(stream.SUBMIT, stream.MAX_FRAME + 1), eof=False)  # the header only
    with pytest.raises(ValueError, match="over the limit"):
        await asyncio.wait_for(stream.read_frame(reader), 5)


async def test_a_hello_over_its_own_limit_is_refused() -> None:
    reader = reader_of(stream.frame(stream.HELLO, b"x" * (stream.MAX_HELLO + 1)))
    with pytest.raises(ValueError, match="over the limit"):
        await stream.read_frame(reader, max_bytes=stream.MAX_HELLO)


async def test_a_frame_at_the_limit_is_read() -> None:
    payload = b"x" * stream.MAX_HELLO
    assert await stream.read_frame(reader_of(stream.frame(stream.HELLO, payload)), max_bytes=stream.MAX_HELLO) == (
        stream.HELLO, payload)


@pytest.mark.parametrize("cut", [0, 3, stream.HEADER.size, stream.HEADER.size + 4])
async def test_a_stream_that_ends_inside_a_frame_raises_incomplete_read(cut: int) -> None:
    whole = stream.frame(stream.SUBMIT, b"12345678")
    with pytest.raises(asyncio.IncompleteReadError):
        await stream.read_frame(reader_of(whole[:cut]))


def test_items_cross_the_wire_unchanged() -> None:
    items = [SendItem(1, "s", "c1", "d:1:2", "image", "caption ✓ 𝄞", "f" * 32),
             SendItem(1, "s", "c", "g:3", "text", "x"), ReadItem(2, "s", "g:3", 7), TypingItem(2, "s", "d:1:2")]
    assert wire.unpack_items(wire.pack_items(items)) == items
    assert wire.unpack_items(wire.pack_items([])) == []


def test_outcomes_cross_the_wire_unchanged() -> None:
    ack = json.dumps({"type": "ack", "id": "c1", "seq": 1})
    outcomes = [Outcome(ack=ack), Outcome(error=("forbidden", "no")), Outcome()]
    back = wire.unpack_outcomes(wire.pack_outcomes(outcomes))
    assert back == outcomes
    assert back[0].ack == ack and isinstance(back[1].error, tuple)  # the ack text as it was made, once


def test_deliveries_cross_the_wire_unchanged_as_lists() -> None:
    part = [('{"type":"msg"}', [1, 2], "session"), ('{"type":"receipt"}', (3,), None)]
    assert [tuple(d) for d in wire.unpack_deliveries(wire.pack_deliveries(part))] == [
        ('{"type":"msg"}', [1, 2], "session"), ('{"type":"receipt"}', [3], None)]
