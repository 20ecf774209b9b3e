"""Readiness: `/readyz` follows the database, the shards and the socket nodes, and each socket node
answers a health check on its own port. Parts are made to stop answering (SIGSTOP) and come back."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from support import Api, Socket, direct, eventually, one_per_node

from imray import runtime
from imray.adapters.named_actors import RayNamedActors


async def _ready(api: Api) -> tuple[int, dict]:
    r = await api.http.get("/readyz")
    return r.status_code, r.json()


def _health_url(socket_url: str) -> str:
    parts = urlsplit(socket_url)
    return f"http://{parts.hostname}:{parts.port}/healthz"


async def _pids(handles: list) -> list[int]:
    return [await h.__ray_call__.remote(lambda _self: os.getpid()) for h in handles]


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        os.kill(pid, sig)


async def test_readyz_is_ready_and_each_socket_node_answers_a_health_check_on_its_own_port(stack):
    api = Api(stack.base_url)
    status, body = await _ready(api)
    assert status == 200 and body == {"status": "ready", "database": "ok",
                                       "shards": {"up": stack.settings.shard_count, "of": stack.settings.shard_count},
                                       "socket_nodes": {"up": stack.settings.socket_nodes,
                                                        "of": stack.settings.socket_nodes}}, body
    nodes = await asyncio.to_thread(runtime.status, stack.settings)
    async with httpx.AsyncClient(timeout=5) as http:
        for node in nodes:
            r = await http.get(_health_url(node.url))
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            assert r.json()["status"] == "ok" and r.json()["node"] == node.node_id
            assert isinstance(r.json()["connections"], int)
    await api.close()


@pytest.mark.parametrize("part", ["socket nodes", "shards"])
async def test_readyz_is_503_while_every_socket_node_or_every_shard_is_stopped_and_ready_again_after(stack, part):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    sa = await Socket.open(a.socket_url, a.access_token)
    actors = RayNamedActors(stack.settings.namespace, stack.settings.shard_count)
    if part == "socket nodes":
        handles = [actors.socket_node(f"sn-{i + 1}") for i in range(stack.settings.socket_nodes)]
    else:
        handles = [actors.shard(i) for i in range(stack.settings.shard_count)]
    pids = await _pids(handles)
    key = "socket_nodes" if part == "socket nodes" else "shards"
    _signal(pids, signal.SIGSTOP)
    try:
        async def unready() -> dict | None:
            status, body = await _ready(api)
            return body if status == 503 else None

        body = await eventually(unready, 15, f"/readyz 503 with every one of the {part} stopped")
        assert body["status"] == "unavailable" and body[key]["up"] == 0 and body["database"] == "ok", body
        if part == "socket nodes":  # a stopped node does not answer its own health check either
            async with httpx.AsyncClient(timeout=1) as http:
                with pytest.raises(httpx.TimeoutException):
                    await http.get(_health_url(a.socket_url))
    finally:
        _signal(pids, signal.SIGCONT)

    async def ready_again() -> bool:
        return (await _ready(api))[0] == 200
    await eventually(ready_again, 20, f"/readyz 200 once the {part} answer again")
    # Nothing was replaced, and the session opened before carries on (a send the node could not hand
    # to its shard yet is answered `internal`, and sent again with the same id, as a client does).
    assert await _pids(handles) == pids
    client_id, conv = uuid.uuid4().hex, direct(a.user_id, b.user_id)
    for _ in range(60):  # bounded: ~30 s
        seen = len([f for f in sa.frames if f.get("id") == client_id])
        await sa.send_json({"type": "send", "id": client_id, "conv": conv, "kind": "text", "body": "still here"})
        frames = await sa.wait(lambda fs, n=seen: len([f for f in fs if f.get("id") == client_id]) > n)
        reply = [f for f in frames if f.get("id") == client_id][-1]
        if reply["type"] == "ack":
            break
        assert reply.get("code") == "internal", reply
        await asyncio.sleep(0.5)
    assert reply["type"] == "ack", reply
    await sa.close()
    await api.close()
