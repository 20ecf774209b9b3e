"""Batched server frames (issue 21): frames packed into few WebSocket messages, one JSON per line."""

from __future__ import annotations

import orjson

from imray.actors.session import BATCH_BYTES, batch_frames, encode_frame


def _messages(wire: list[bytes]) -> list[list[dict]]:
    """Each packed WebSocket message parsed back into its frames."""
    out = []
    for raw in wire:
        length = raw[1] & 0x7F
        start = 2 if length < 126 else 4 if length == 126 else 10
        declared = length if length < 126 else int.from_bytes(raw[2:start], "big")
        payload = raw[start:]
        assert declared == len(payload) and raw[0] == 0x81  # FIN + text
        out.append([orjson.loads(line) for line in payload.split(b"\n")])
    return out


def test_frames_of_every_header_size_come_back_whole_and_in_order() -> None:
    texts = [orjson.dumps({"type": "msg", "seq": i, "body": "x" * size}).decode()
             for i, size in enumerate((1, 120, 125, 126, 300, 65535, 70000, 3))]
    packed = batch_frames([encode_frame(t) for t in texts])
    frames = [f for message in _messages(packed) for f in message]
    assert frames == [orjson.loads(t) for t in texts]


def test_a_burst_is_one_message_and_a_large_backlog_is_split_under_the_cap() -> None:
    small = [encode_frame(orjson.dumps({"type": "ack", "id": str(i)}).decode()) for i in range(50)]
    assert len(batch_frames(small)) == 1
    big = [encode_frame(orjson.dumps({"type": "msg", "body": "y" * 10_000, "seq": i}).decode()) for i in range(30)]
    packed = batch_frames(big)
    assert len(packed) > 1 and all(len(m) <= BATCH_BYTES + 10 for m in packed)
    assert [f["seq"] for message in _messages(packed) for f in message] == list(range(30))


def test_a_frame_larger_than_the_cap_goes_alone() -> None:
    huge = encode_frame(orjson.dumps({"type": "msg", "body": "z" * (BATCH_BYTES + 5)}).decode())
    tiny = encode_frame('{"type":"pong"}')
    packed = batch_frames([tiny, huge, tiny])
    assert [len(m) for m in _messages(packed)] == [1, 1, 1]
