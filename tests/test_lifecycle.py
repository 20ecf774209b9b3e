"""Failure and restart, on both stacks; these tests kill and redeploy parts of the shared stack."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest
import ray
from support import Api, Socket, bearer, direct, one_per_node, process_alive

from imray import runtime
from imray.adapters.named_actors import RayNamedActors

# In file order, after every other test: what they leave behind (a replaced node, a restarted
# shard, a redeployed stack) is not what the rest of the suite expects to find.
pytestmark = pytest.mark.runs_last


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def _a_talks_to_b_across_nodes(api: Api, messages: int) -> tuple:
    """B (pinned to another node than A), a socket each, the direct conversation and A's first acks."""
    a, b = await one_per_node(api)
    sa = await Socket.open(a.socket_url, a.access_token)
    sb = await Socket.open(b.socket_url, b.access_token)
    conv = direct(a.user_id, b.user_id)
    return b, sa, sb, conv, [await sa.send_text(conv, f"before {i}") for i in range(messages)]


async def test_a_killed_socket_node_is_replaced_and_clients_repin(stack):
    api = Api(stack.base_url)
    b, sa, sb, conv, acked = await _a_talks_to_b_across_nodes(api, 5)
    victim = RayNamedActors(stack.settings.namespace, stack.settings.shard_count).socket_node(b.socket_node)
    old_actor = (await victim.endpoint.remote()).actor_id
    ray.kill(victim, no_restart=True)
    await asyncio.wait_for(sb.ws.wait_closed(), 15)  # B's session died with its node
    # While B is away, A keeps talking: acked means stored.
    acked += [await sa.send_text(conv, f"during {i}") for i in range(5)]

    def replaced():
        nodes = runtime.status(stack.settings)
        node = next(n for n in nodes if n.node_id == b.socket_node)
        return node.alive and node.endpoint.actor_id != old_actor and node
    await asyncio.to_thread(_wait, replaced, 30, "the supervisor's replacement")
    r = await api.http.post("/api/socket/assign", headers=bearer(b.access_token))
    assert r.status_code == 200, r.text
    pin = r.json()
    sb2 = await Socket.open(pin["socket_url"], pin["access_token"])
    assert sb2.auth["type"] == "auth_ok"
    history = await api.history(pin["access_token"], conv, after_seq=0)  # B catches up
    assert [m["msg_id"] for m in history] == [x["msg_id"] for x in acked]
    ack = await sb2.send_text(conv, "back")
    assert ack["seq"] == len(acked) + 1
    got = await sa.wait(lambda fs: any(f["type"] == "msg" and f["body"] == "back" for f in fs))
    assert got
    for s in (sa, sb2):
        await s.close()
    await api.close()


async def _send_until_acked(socket: Socket, conv: str, body: str, within_s: float = 30.0) -> dict:
    """What a client does when told "send it again": the same client id, until it is acked."""
    client_id = uuid.uuid4().hex
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        seen = len([f for f in socket.frames if f.get("id") == client_id])
        await socket.send_json({"type": "send", "id": client_id, "conv": conv, "kind": "text", "body": body})
        frames = await socket.wait(lambda fs, n=seen: len([f for f in fs if f.get("id") == client_id]) > n)
        reply = [f for f in frames if f.get("id") == client_id][-1]
        if reply["type"] == "ack":
            return reply
        assert reply["code"] == "internal", reply  # the shard was away: nothing stored, try again
        await asyncio.sleep(0.2)
    raise AssertionError(f"{body!r} was not acked within {within_s} s")


async def test_a_killed_shard_restarts_and_open_sessions_carry_on(stack):
    """Sessions stay open while the shard that owns their conversation dies and restarts: the
    node's stream to it reconnects, seq continues from the store, deliveries flow again."""
    api = Api(stack.base_url)
    b, sa, sb, conv, acked = await _a_talks_to_b_across_nodes(api, 3)
    shard = RayNamedActors(stack.settings.namespace, stack.settings.shard_count).owner_of(conv)
    # A crash: SIGKILL, then Ray restarts it, an empty owner that knows only the store. Not
    # `ray.kill`, which returns before the actor dies: sends made meanwhile could still be acked
    # by the dying owner, which then takes their deliveries with it.
    pid = await shard.__ray_call__.remote(lambda _self: os.getpid())
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(_wait, lambda: not process_alive(pid), 10, f"shard process {pid} to die")
    acked += [await _send_until_acked(sa, conv, f"after {i}") for i in range(3)]
    assert [x["seq"] for x in acked] == [1, 2, 3, 4, 5, 6]
    got = await sb.wait(lambda fs: any(f["type"] == "msg" and f["body"] == "after 2" for f in fs))
    assert [f["seq"] for f in got if f["type"] == "msg" and f["body"].startswith("after")][-1] == 6
    history = await api.history(b.access_token, conv, after_seq=0)
    assert [m["msg_id"] for m in history] == [x["msg_id"] for x in acked]  # no duplicate, no gap
    assert sa.ws.state.name == "OPEN" and sb.ws.state.name == "OPEN"
    for s in (sa, sb):
        await s.close()
    await api.close()
