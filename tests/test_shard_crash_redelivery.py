"""A shard that dies after acking but before its fan-out has left: open sessions still get every
acked message, once each and in order, without sending or reconnecting (`imray.actors.redelivery`)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from support import Api, Socket, direct, one_per_node, process_alive

from imray.adapters.named_actors import RayNamedActors

# It kills a shard: after every other test (see test_lifecycle).
pytestmark = pytest.mark.runs_last


def held(socket: Socket) -> list[dict]:
    return [f for f in socket.frames if f.get("type") == "msg" and f["body"].startswith("held")]


async def test_open_sessions_get_what_a_crashed_shard_acked_but_never_fanned_out(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    sa = await Socket.open(a.socket_url, a.access_token)
    sa2 = await Socket.open(a.socket_url, a.access_token)  # the sender's other session
    sb = await Socket.open(b.socket_url, b.access_token)
    sb2 = await Socket.open(b.socket_url, b.access_token)
    conv = direct(a.user_id, b.user_id)
    warm = await sa.send_text(conv, "warm")  # the streams are up, and B's node has delivered seq 1
    await sb.wait(lambda fs: any(f.get("msg_id") == warm["msg_id"] for f in fs))

    shard = RayNamedActors(stack.settings.namespace, stack.settings.shard_count).owner_of(conv)
    await shard.pause_fanout.remote(True)
    pid = await shard.__ray_call__.remote(lambda _self: os.getpid())
    try:
        acked = [await sa.send_text(conv, f"held {i}") for i in range(5)]
        assert [x["type"] for x in acked] == ["ack"] * 5
        await asyncio.sleep(1.0)
        assert held(sb) == held(sb2) == held(sa2) == []  # committed and acked, delivered to nobody

        os.kill(pid, signal.SIGKILL)  # a crash with the fan-out still held back
        deadline = time.monotonic() + 10
        while process_alive(pid):
            assert time.monotonic() < deadline, f"shard process {pid} did not die"
            await asyncio.sleep(0.1)
    finally:
        if process_alive(pid):
            await shard.pause_fanout.remote(False)

    # Nobody sends or reconnects: the restarted shard re-delivers once the nodes' streams are back.
    expected = [(x["seq"], x["msg_id"]) for x in acked]
    for socket in (sb, sb2, sa2, sa):
        await socket.wait(lambda _fs, s=socket: len(held(s)) >= len(expected), timeout=60)
    await asyncio.sleep(1.0)  # anything delivered twice would be here by now
    for socket in (sb, sb2, sa2):
        assert [(f["seq"], f["msg_id"]) for f in held(socket)] == expected
    # The sending session was skipped by the fan-out that never happened; a re-delivery cannot
    # tell it apart, so it gets its own messages too, once each, as the acks it already had.
    assert [(f["seq"], f["msg_id"]) for f in held(sa)] == expected
    assert expected == [(seq, x["msg_id"]) for seq, x in zip(range(2, 7), acked, strict=True)]

    # And the conversation carries on, each message once.
    after = await sa.send_text(conv, "after")
    assert after["type"] == "ack" and after["seq"] == 7, after
    await sb.wait(lambda fs: any(f.get("msg_id") == after["msg_id"] for f in fs))
    await asyncio.sleep(0.5)
    assert [f["seq"] for f in sb.frames if f.get("type") == "msg"] == list(range(1, 8))
    assert all(s.ws.state.name == "OPEN" for s in (sa, sa2, sb, sb2))
    for s in (sa, sa2, sb, sb2):
        await s.close()
    await api.close()
