"""Catch-up over the socket (issue 21): a session that authenticates with `resume: true` and names
its last seqs in a `resume` frame gets what it missed before anything live, with history's access
rules, no gap and no duplicate, even while the conversation keeps going."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from support import Api, Socket, direct, one_per_node
from websockets.asyncio.client import connect


async def _resumed(url: str, token: str) -> Socket:
    sock = await Socket.open(url, token, authenticate=False)
    await sock.send_json({"type": "auth", "token": token, "resume": True})
    await sock.wait(lambda fs: bool(fs))
    assert sock.frames[0]["type"] == "auth_ok" and sock.frames[0]["resume"] is True, sock.frames
    return sock


def _msgs(frames: list[dict], conv: str) -> list[int]:
    return [f["seq"] for f in frames if f.get("type") == "msg" and f["conv"] == conv]


async def test_a_resumed_session_gets_what_it_missed_first_then_live_without_gap_or_duplicate(stack) -> None:
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    stranger = await api.user()
    conv = direct(a.user_id, b.user_id)
    group = (await api.post("/api/groups", a.access_token, {"name": "resume", "members": [b.user_id]})).json()
    theirs = (await api.post("/api/groups", stranger.access_token, {"name": "not b's", "members": []})).json()
    sa = await Socket.open(a.socket_url, a.access_token)
    try:
        for i in range(5):
            assert (await sa.send_text(conv, f"missed {i}"))["type"] == "ack"
        assert (await sa.send_text(group["conv"], "group missed"))["type"] == "ack"
        seen = {conv: 2, group["conv"]: 0, theirs["conv"]: 0, "d:2:1": 0, "g:999999999": 0}

        sb = await _resumed(b.socket_url, b.access_token)
        await sb.send_json({"type": "resume", "seen": seen})

        async def keep_sending() -> list[int]:  # live traffic while the catch-up is read and sent
            return [(await sa.send_text(conv, f"live {i}"))["seq"] for i in range(15)]

        live_seqs = await keep_sending()
        frames = await sb.wait(lambda fs: live_seqs[-1] in _msgs(fs, conv))
        done = next(i for i, f in enumerate(frames) if f["type"] == "resume_ok")
        summary = frames[done]
        assert summary["caught"] == {conv: summary["caught"][conv], group["conv"]: 2}, summary
        assert summary["refused"] == {theirs["conv"]: "forbidden", "d:2:1": "bad_request",
                                      "g:999999999": "not_found"}, summary
        assert summary["truncated"] == []
        before = _msgs(frames[:done], conv)
        assert before == list(range(3, summary["caught"][conv] + 1))  # the catch-up: after seen, in order
        assert not [f for f in frames[1:done] if f["type"] != "msg"]  # nothing live came before resume_ok
        assert _msgs(frames, conv) == list(range(3, live_seqs[-1] + 1))  # then live: no gap, none twice
        assert [f["body"] for f in frames[:done] if f.get("conv") == group["conv"]][-1] == "group missed"
        assert next(f["kind"] for f in frames[:done] if f.get("conv") == group["conv"]) == "event"  # created

        await sb.send_json({"type": "resume", "seen": {conv: 0}})  # once only
        error = await sb.wait(lambda fs: fs[-1]["type"] == "error")
        assert error[-1]["code"] == "bad_request" and "once" in error[-1]["message"]
        await sb.close()
    finally:
        await sa.close()
        await api.close()


async def test_resume_is_refused_without_asking_at_auth_and_a_missing_resume_frame_only_delays_live(stack) -> None:
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    conv = direct(a.user_id, b.user_id)
    plain = await Socket.open(b.socket_url, b.access_token)
    waiting = await _resumed(b.socket_url, b.access_token)
    sa = await Socket.open(a.socket_url, a.access_token)
    try:
        reply = await plain.request({"type": "resume", "seen": {conv: 0}}, "error")
        assert reply["code"] == "bad_request", reply
        over = await plain.request({"type": "resume", "seen": {f"g:{i}": 0 for i in range(1, 1002)}}, "error")
        assert over["code"] == "bad_request" and "1000" in over["message"], over
        assert (await sa.send_text(conv, "while b waits"))["type"] == "ack"
        # No resume frame within socket_auth_timeout_s (2 s here): live frames go on, with a word why.
        frames = await waiting.wait(lambda fs: any(f.get("body") == "while b waits" for f in fs), timeout=10)
        kinds = [f["type"] for f in frames]
        assert kinds.index("error") < kinds.index("msg"), frames
        assert frames[kinds.index("error")]["code"] == "bad_request"
        await plain.wait(lambda fs: any(f.get("body") == "while b waits" for f in fs))
    finally:
        for sock in (plain, waiting, sa):
            await sock.close()
        await api.close()


async def test_many_sessions_resume_at_once_and_each_gets_its_missed_messages_once(stack) -> None:
    api = Api(stack.base_url)
    owner = await api.user()
    members = [await api.user() for _ in range(6)]
    group = (await api.post("/api/groups", owner.access_token,
                            {"name": "storm", "members": [m.user_id for m in members]})).json()
    so = await Socket.open(owner.socket_url, owner.access_token)
    try:
        for i in range(12):
            assert (await so.send_text(group["conv"], f"storm {i}"))["type"] == "ack"
        socks = await asyncio.gather(*(_resumed(m.socket_url, m.access_token) for m in members for _ in range(3)))
        for k, sock in enumerate(socks):
            await sock.send_json({"type": "resume", "seen": {group["conv"]: 1 + k % 5}})
        for k, sock in enumerate(socks):
            frames = await sock.wait(lambda fs: any(f["type"] == "resume_ok" for f in fs))
            assert _msgs(frames, group["conv"]) == list(range(2 + k % 5, 14)), (k, _msgs(frames, group["conv"]))
        for sock in socks:
            await sock.close()
    finally:
        await so.close()
        await api.close()


async def test_seen_in_the_auth_frame_brings_auth_ok_the_catch_up_and_resume_ok_together_then_live(stack) -> None:
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    conv = direct(a.user_id, b.user_id)
    group = (await api.post("/api/groups", a.access_token, {"name": "seen at auth", "members": [b.user_id]})).json()
    sa = await Socket.open(a.socket_url, a.access_token)
    try:
        for i in range(4):
            assert (await sa.send_text(conv, f"missed {i}"))["type"] == "ack"
        assert (await sa.send_text(group["conv"], "group missed"))["type"] == "ack"

        sb = await Socket.open(b.socket_url, b.access_token, authenticate=False)
        await sb.send_json({"type": "auth", "token": b.access_token, "seen": {conv: 1, group["conv"]: 0}})
        live_seqs = [(await sa.send_text(conv, f"live {i}"))["seq"] for i in range(10)]
        frames = await sb.wait(lambda fs: live_seqs[-1] in _msgs(fs, conv))
        assert frames[0]["type"] == "auth_ok" and frames[0]["resume"] is True, frames[0]
        done = next(i for i, f in enumerate(frames) if f["type"] == "resume_ok")
        assert not [f for f in frames[1:done] if f["type"] != "msg"]  # nothing live before resume_ok
        assert frames[done]["caught"][group["conv"]] == 2 and frames[done]["refused"] == {}
        assert _msgs(frames, conv) == list(range(2, live_seqs[-1] + 1))  # no gap, none twice
        await sb.send_json({"type": "resume", "seen": {conv: 0}})  # no resume frame is due after that
        error = await sb.wait(lambda fs: fs[-1]["type"] == "error")
        assert error[-1]["code"] == "bad_request", error[-1]
        await sb.close()

        # Batching too: auth_ok, the whole catch-up and resume_ok arrive as one WebSocket message.
        async with connect(b.socket_url, compression=None) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": b.access_token, "batch": True,
                                        "seen": {conv: 1}}).decode())
            message = await asyncio.wait_for(ws.recv(), 20)
            kinds = [orjson.loads(line)["type"] for line in message.split("\n")]
            assert kinds == ["auth_ok", *["msg"] * (live_seqs[-1] - 1), "resume_ok"], kinds

        # `seen` has the resume frame's limits: a bad seq refuses the auth frame, nothing is read.
        bad = await Socket.open(b.socket_url, b.access_token, authenticate=False)
        await bad.send_json({"type": "auth", "token": b.access_token, "seen": {conv: -1}})
        refused = await bad.wait(lambda fs: bool(fs))
        assert refused[0]["type"] == "error" and refused[0]["code"] == "unauthorized", refused[0]
        await bad.close()
        # And the auth frame keeps its pre-auth size cap (4 KiB): a `seen` too big for it closes the
        # connection with 1009 before any token is read; such a client sends a resume frame instead.
        big = await Socket.open(b.socket_url, b.access_token, authenticate=False)
        await big.send_json({"type": "auth", "token": b.access_token, "seen": {f"g:{i}": 0 for i in range(1, 1001)}})
        with pytest.raises(AssertionError, match=r"socket closed \(1009\)"):
            await big.wait(lambda fs: bool(fs))
        after = await Socket.open(b.socket_url, b.access_token)  # the node serves on
        await after.close()
    finally:
        await sa.close()
        await api.close()
