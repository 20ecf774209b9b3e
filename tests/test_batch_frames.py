"""Several frames in one WebSocket message (issue 21), for a client that announces `batch` at auth:
its replies and deliveries may come several to a message, one JSON object per line, and it may send
several frames in one message; a client that does not announce it sees one frame per message."""

from __future__ import annotations

import asyncio
import time

import orjson
from support import Api, Socket, direct, one_per_node
from websockets.asyncio.client import ClientConnection, connect


async def _batched(url: str, token: str) -> tuple[ClientConnection, dict]:
    ws = await connect(url, compression=None, open_timeout=20)
    await ws.send(orjson.dumps({"type": "auth", "token": token, "batch": True}).decode())
    first = (await asyncio.wait_for(ws.recv(), 20)).split("\n")
    return ws, orjson.loads(first[0])


async def _frames_until(ws: ClientConnection, done, timeout: float = 20.0) -> tuple[list[dict], int]:  # noqa: ASYNC109
    """Frames read until `done(frames)`, and how many WebSocket messages carried them."""
    frames: list[dict] = []
    messages = 0
    deadline = time.monotonic() + timeout
    while not done(frames):
        raw = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
        messages += 1
        frames += [orjson.loads(line) for line in raw.split("\n")]
    return frames, messages


async def test_a_batching_client_sends_several_frames_in_one_message_and_reads_replies_packed(stack) -> None:
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    conv = direct(a.user_id, b.user_id)
    ws, ok = await _batched(a.socket_url, a.access_token)
    plain = await Socket.open(b.socket_url, b.access_token)
    try:
        assert ok["type"] == "auth_ok" and ok["batch"] is True, ok
        ids = [f"batch-{i}" for i in range(20)]
        lines = [orjson.dumps({"type": "send", "id": i, "conv": conv, "body": f"m {i}"}).decode() for i in ids]
        # One bad line and one over the soft frame limit among them: each gets its error, the rest go on.
        lines.insert(5, "{not json")
        lines.insert(9, orjson.dumps({"type": "send", "id": "huge", "conv": conv, "body": "x" * 70000}).decode())
        await ws.send("\n".join([*lines, '{"type":"ping"}']))
        frames, messages = await _frames_until(
            ws, lambda fs: sum(f["type"] == "ack" for f in fs) == len(ids) and any(f["type"] == "pong" for f in fs)
            and sum(f["type"] == "error" for f in fs) == 2)
        acks = [f for f in frames if f["type"] == "ack"]
        assert [f["id"] for f in acks] == ids and [f["seq"] for f in acks] == sorted(f["seq"] for f in acks)
        errors = sorted(f["code"] for f in frames if f["type"] == "error")
        assert errors == ["bad_request", "too_large"], frames
        assert messages < len(frames), f"{len(frames)} frames came in {messages} messages: none were packed"

        # The plain client on the other node got each message alone, one frame per WebSocket message.
        await plain.wait(lambda fs: sum(f.get("type") == "msg" for f in fs) == len(ids))
        assert [f["body"] for f in plain.of_type("msg")] == [f"m {i}" for i in ids]

        # Deliveries to the batching client come packed as well: a burst from the plain side.
        for i in range(30):
            await plain.send_json({"type": "send", "id": f"back-{i}", "conv": conv, "body": f"back {i}"})
        frames, messages = await _frames_until(ws, lambda fs: sum(f["type"] == "msg" for f in fs) == 30)
        got = [f for f in frames if f["type"] == "msg"]
        assert [f["body"] for f in got] == [f"back {i}" for i in range(30)]
        assert [f["seq"] for f in got] == list(range(got[0]["seq"], got[0]["seq"] + 30))
        assert messages <= 30
    finally:
        await ws.close()
        await plain.close()
        await api.close()


async def test_without_batch_a_newline_joined_message_is_one_bad_frame_and_auth_ok_says_nothing(stack) -> None:
    api = Api(stack.base_url)
    a = await api.user()
    sock = await Socket.open(a.socket_url, a.access_token)
    try:
        assert "batch" not in sock.auth, sock.auth
        before = len(sock.frames)
        await sock.send_raw('{"type":"ping"}\n{"type":"ping"}')
        frames = await sock.wait(lambda fs: len(fs) > before)
        assert frames[before]["type"] == "error" and frames[before]["code"] == "bad_request", frames[before:]
        assert (await sock.request({"type": "ping"}, "pong"))["type"] == "pong"  # the session goes on
    finally:
        await sock.close()
        await api.close()
