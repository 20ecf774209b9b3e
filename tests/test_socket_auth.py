"""The socket's first frame: authentication, node pinning and token attacks."""

from __future__ import annotations

import asyncio

import forge
import orjson
from support import Api, Socket, eventually, one_per_node
from websockets.asyncio.client import connect

from imray.adapters.named_actors import RayNamedActors
from imray.domain.nodes import NodeStatus
from imray.domain.tokens import SigningKey


async def refused(url: str, first_frame: object | None) -> tuple[dict | None, int]:
    """Open a socket, send `first_frame` (None: send nothing), return (error frame, close code)."""
    async with connect(url, compression=None) as ws:
        if first_frame is not None:
            await ws.send(first_frame if isinstance(first_frame, str) else orjson.dumps(first_frame).decode())
        frame = None
        try:
            async for raw in ws:
                frame = orjson.loads(raw)
        except Exception:
            pass
        await asyncio.wait_for(ws.wait_closed(), 15)
        return frame, ws.close_code


def test_socket_nodes_run_on_different_ray_nodes(stack):
    ray_nodes = [n.endpoint.ray_node_id for n in stack.nodes]
    assert len(stack.nodes) == 2 and len(set(ray_nodes)) == 2
    assert set(ray_nodes) == set(stack.worker_node_ids)  # the two workers with the socket_node resource
    assert len({n.endpoint.port for n in stack.nodes}) == 2


async def test_auth_ok_and_wrong_node(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    sock = await Socket.open(a.socket_url, a.access_token)
    assert sock.auth == {"type": "auth_ok", "user_id": a.user_id, "node": a.socket_node,
                         "session": sock.auth["session"]}
    await sock.close()
    frame, code = await refused(b.socket_url, {"type": "auth", "token": a.access_token})
    assert code == 4003
    assert frame["type"] == "error" and frame["code"] == "wrong_node" and frame["socket_url"] == a.socket_url
    await api.close()


async def test_token_attacks_close_4001(stack):
    api = Api(stack.base_url)
    login = await api.user()
    token, url = login.access_token, login.socket_url
    attacks = {
        "missing": {"type": "auth"},
        "empty": {"type": "auth", "token": ""},
        "garbage": {"type": "auth", "token": "not.a.jwt"},
        "expired": {"type": "auth", "token": forge.expired(stack.data_dir, token)},
        "wrong key": {"type": "auth", "token": forge.signed_with(SigningKey.generate(), token)},
        "alg none": {"type": "auth", "token": forge.unsigned(token)},
        "tampered sub": {"type": "auth", "token": forge.tampered(token, sub="1")},
        "tampered node": {"type": "auth", "token": forge.tampered(token, node="sn-2" if login.socket_node
                                                                    == "sn-1" else "sn-1")},
        "hmac confusion": {"type": "auth", "token": forge.hmac_with_public_key(
            token, forge.real_key(stack.data_dir).public_pem)},
        "not auth first": {"type": "ping"},
        "not json": "hello",
    }
    for name, first in attacks.items():
        frame, code = await refused(url, first)
        assert code == 4001, name
        assert frame == {"type": "error", "code": "unauthorized", "message": frame["message"]}, name
    # No first frame at all: refused after the auth timeout (2 s in the test settings).
    frame, code = await refused(url, None)
    assert code == 4001 and frame["code"] == "unauthorized"
    # And the real token still works.
    sock = await Socket.open(url, token)
    assert sock.auth["type"] == "auth_ok"
    await sock.close()
    await api.close()


async def test_assign_repins_with_a_fresh_token(stack):
    api = Api(stack.base_url)
    login = await api.user()
    r = await api.http.post("/api/socket/assign", headers={"Authorization": f"Bearer {login.access_token}"})
    assert r.status_code == 200, r.text
    pin = r.json()
    assert set(pin) == {"socket_url", "socket_node", "access_token", "expires_in"}
    sock = await Socket.open(pin["socket_url"], pin["access_token"])
    assert sock.auth["node"] == pin["socket_node"]
    await sock.close()
    assert (await api.http.post("/api/socket/assign")).status_code == 401
    await api.close()


async def test_logins_go_to_the_node_with_fewer_sessions(stack):
    supervisor = RayNamedActors(stack.settings.namespace, stack.settings.shard_count).supervisor()

    async def fleet() -> dict[str, NodeStatus]:
        return {n.node_id: n for n in await supervisor.nodes.remote()}

    async def quiet() -> bool:
        return all(n.connections == 0 and n.pending_logins == 0 for n in (await fleet()).values())

    # Logins of earlier tests count as load for 10 s: start from a quiet fleet.
    await eventually(quiet, 15, "no sessions and no recent logins on any node")
    api = Api(stack.base_url)
    login = await api.user()
    busy = login.socket_node
    socks = [await Socket.open(login.socket_url, login.access_token) for _ in range(8)]

    async def counted():
        return (await fleet())[busy].connections == 8
    await eventually(counted, 10, "the supervisor seeing the 8 sessions")
    # busy: 8 sessions + 1 login; the other: at most 4 logins. Least connections sends all 5 there.
    pins = [(await api.user()).socket_node for _ in range(5)]
    assert busy not in pins, pins
    for sock in socks:
        await sock.close()
    await api.close()
