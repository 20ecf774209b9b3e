"""Hostile socket clients (issue 16): logged out means out, tokens end sockets, no lock-out by floods.

Black-box: HTTP and WebSocket only. Short-lived tokens are the login's own token re-signed with the
deployment's key and an earlier `exp` (as tests/forge.py does), so the tests need no short TTLs.
"""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import time
import uuid

import forge
import orjson
import pytest
from conftest import STACK
from jose import jwt
from support import PUBLIC_CLIENT, Api, Socket, bearer, direct, eventually, one_per_node
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


def short_lived(stack, token: str, seconds: int, **changes) -> str:
    """The same login's token (user, family, node), expiring in `seconds`."""
    return forge.signed_with(forge.real_key(stack.data_dir), token, exp=int(time.time()) + seconds, **changes)


async def closed(sock: Socket, timeout: float) -> int:  # noqa: ASYNC109
    """The close code, once the server has closed the socket (fails after `timeout` s)."""
    await asyncio.wait_for(sock.ws.wait_closed(), timeout)
    assert sock.reader is not None
    await asyncio.gather(sock.reader, return_exceptions=True)
    code = sock.ws.close_code
    assert code is not None
    return code


async def refresh_keeping_node(api: Api, refresh_token: str, node: str) -> dict:
    r = await api.http.post("/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                                   "client_id": PUBLIC_CLIENT, "socket_node": node})
    assert r.status_code == 200, r.text
    return r.json()


# -- logged out means out ---------------------------------------------------------------------------


async def test_a_revoked_login_has_its_open_sockets_closed_with_4001_within_2_s(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    other_device = await api.login(a.username)  # another login of A's: it stays
    sa = await Socket.open(a.socket_url, a.access_token)
    sa2 = await Socket.open(a.socket_url, a.access_token)  # two sessions of the revoked login
    sother = await Socket.open(other_device.socket_url, other_device.access_token)
    sb = await Socket.open(b.socket_url, b.access_token)
    conv = direct(a.user_id, b.user_id)
    assert (await sa.send_text(conv, "before"))["type"] == "ack"
    r = await api.http.post("/oauth2/revoke", data={"token": a.refresh_token, "client_id": PUBLIC_CLIENT})
    assert r.status_code == 200
    revoked_at = time.monotonic()
    codes = await asyncio.gather(closed(sa, 2.0), closed(sa2, 2.0))
    took = time.monotonic() - revoked_at
    assert codes == [4001, 4001], codes
    errors = [f for f in sa.frames if f["type"] == "error"]
    assert errors and errors[-1]["code"] == "unauthorized" and "revoked" in errors[-1]["message"], sa.frames[-3:]
    # Nothing reaches the closed sessions; the other login of the same user is untouched.
    ack = await sb.send_text(conv, "after the revocation")
    assert ack["type"] == "ack"
    await sother.wait(lambda fs: any(f["type"] == "msg" and f["body"] == "after the revocation" for f in fs))
    assert not any(f.get("body") == "after the revocation" for f in sa.frames + sa2.frames)
    print(f"revoked sessions closed {took:.2f} s after the revocation")
    for sock in (sother, sb):
        await sock.close()
    await api.close()


async def test_a_socket_is_closed_with_4002_when_its_access_token_expires(stack):
    api = Api(stack.base_url)
    a = await api.user()
    sock = await Socket.open(a.socket_url, short_lived(stack, a.access_token, 3))
    assert sock.auth is not None and sock.auth["type"] == "auth_ok", sock.auth
    assert (await sock.request({"type": "ping"}, "pong")) == {"type": "pong"}
    code = await closed(sock, 8.0)
    assert code == 4002
    assert sock.frames[-1]["type"] == "error" and sock.frames[-1]["code"] == "token_expired", sock.frames[-3:]
    await api.close()


async def test_a_socket_renewed_over_the_socket_outlives_its_first_token(stack):
    api = Api(stack.base_url)
    a = await api.user()
    sock = await Socket.open(a.socket_url, short_lived(stack, a.access_token, 3))
    assert sock.auth is not None and sock.auth["type"] == "auth_ok", sock.auth
    fresh = await refresh_keeping_node(api, a.refresh_token, a.socket_node)
    assert fresh["socket_node"] == a.socket_node  # the refresh grant keeps the pin it is asked to keep
    # Tokens of another login, another user or another node renew nothing; the session stays.
    other_login = await api.login(a.username)
    stranger = await api.user()
    key = forge.real_key(stack.data_dir)
    other_node = next(n.node_id for n in stack.nodes if n.node_id != a.socket_node)
    wrong = {
        "another login": forge.signed_with(key, other_login.access_token, node=a.socket_node),
        "another user": forge.signed_with(key, stranger.access_token, node=a.socket_node),
        "another node": forge.signed_with(key, fresh["access_token"], node=other_node),
        "expired": forge.expired(stack.data_dir, fresh["access_token"]),
        "garbage": "not-a-token",
    }
    for what, token in wrong.items():
        error = await sock.request({"type": "refresh", "token": token}, "error")
        assert error["code"] == "unauthorized", (what, error)
    ok = await sock.request({"type": "refresh", "token": fresh["access_token"]}, "refresh_ok")
    assert ok["expires_at"] == jwt.get_unverified_claims(fresh["access_token"])["exp"]
    await asyncio.sleep(4.0)  # past the first token's expiry
    assert sock.ws.close_code is None
    assert (await sock.request({"type": "ping"}, "pong")) == {"type": "pong"}
    await sock.close()
    await api.close()


async def test_assign_never_extends_a_login_beyond_the_token_presented(stack):
    api = Api(stack.base_url)
    a = await api.user()
    leaked = short_lived(stack, a.access_token, 3)
    r = await api.http.post("/api/socket/assign", headers=bearer(leaked))
    assert r.status_code == 200, r.text
    minted = r.json()
    assert jwt.get_unverified_claims(minted["access_token"])["exp"] <= jwt.get_unverified_claims(leaked)["exp"]
    assert minted["expires_in"] <= 3
    await asyncio.sleep(4.0)
    # The minted token died with the one it came from: a leaked token cannot renew itself.
    r = await api.http.post("/api/socket/assign", headers=bearer(minted["access_token"]))
    assert r.status_code == 401, r.text
    # A normal login's assign still works, and gets the rest of its token's life.
    r = await api.http.post("/api/socket/assign", headers=bearer(a.access_token))
    assert r.status_code == 200, r.text
    exp = jwt.get_unverified_claims(r.json()["access_token"])["exp"]
    assert exp == jwt.get_unverified_claims(a.access_token)["exp"]
    await api.close()


if STACK == "real":
    async def test_a_login_revoked_while_redis_is_down_is_revoked_everywhere_and_stays_so(stack):
        """The revocation goes to the database whatever Redis does; every process follows the database."""
        state = os.environ["IMRAY_TEST_REDIS_STATE"]
        api = Api(stack.base_url)
        a = await api.user()
        sock = await Socket.open(a.socket_url, a.access_token)
        await asyncio.to_thread(subprocess.run, ["middleware/redis.sh", "stop", state], check=True)
        try:
            r = await api.http.post("/oauth2/revoke", data={"token": a.refresh_token, "client_id": PUBLIC_CLIENT})
            assert r.status_code == 200, r.text
            assert await closed(sock, 3.0) == 4001

            async def refused() -> bool:  # by every gateway replica (8 requests in a row)
                return [(await api.get("/api/users/me", a.access_token)).status_code for _ in range(8)] == [401] * 8
            await eventually(refused, 5, "the revoked login's access token to be refused with Redis down")
        finally:
            await asyncio.to_thread(subprocess.run, ["middleware/redis.sh", "start", state], check=True)
        # Redis is back, without the revocation in it: the login stays revoked, on HTTP (every
        # gateway replica) and sockets.
        statuses = [(await api.get("/api/users/me", a.access_token)).status_code for _ in range(8)]
        assert statuses == [401] * 8, statuses
        again = await Socket.open(a.socket_url, a.access_token)
        assert again.auth is not None and again.auth["code"] == "unauthorized", again.auth
        await again.close()
        await api.close()


# -- socket hardening -------------------------------------------------------------------------------


async def test_a_frame_over_the_auth_limit_before_auth_closes_the_connection_at_once(stack):
    api = Api(stack.base_url)
    a = await api.user()
    limit = stack.settings.socket_auth_frame_bytes
    async with connect(a.socket_url, compression=None) as ws:
        # A text frame announcing 1 MiB, of which only a little is sent: the old server buffered it
        # (up to 1 MiB per connection) until the auth timeout.
        header = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 1 << 20) + b"\x00\x00\x00\x00"
        ws.transport.write(header + b"x" * (limit + 100))
        started = time.monotonic()
        await asyncio.wait_for(ws.wait_closed(), 10)
        took = time.monotonic() - started
    assert ws.close_code == 1009, ws.close_code
    assert took < stack.settings.socket_auth_timeout_s, took
    # An auth frame within the limit still authenticates.
    sock = await Socket.open(a.socket_url, a.access_token)
    assert sock.auth is not None and sock.auth["type"] == "auth_ok"
    await sock.close()
    await api.close()


async def test_unauthenticated_connections_from_one_address_are_capped(stack):
    api = Api(stack.base_url)
    a = await api.user()
    cap = stack.settings.socket_max_pending_per_address
    host, port = a.socket_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    source = "127.0.0.77"

    async def handshake() -> int:
        """101, or the status the handshake from `source` was refused with."""
        try:
            async with connect(a.socket_url, compression=None, open_timeout=10, local_addr=(source, 0)):
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    # Each idle connection is dropped at the auth timeout (2 s here): on a busy machine opening them
    # all may take about that long, and then the earliest are gone. Such an attempt proves nothing
    # either way and is made again.
    for attempt in range(5):
        idle: list[asyncio.StreamWriter] = []
        try:
            started = time.monotonic()
            while len(idle) < cap:  # connected, and never a word
                opened = await asyncio.gather(*(asyncio.open_connection(host, int(port), local_addr=(source, 0))
                                                for _ in range(min(64, cap - len(idle)))))
                idle += [writer for _, writer in opened]
            status = await handshake()
            took = time.monotonic() - started
            print(f"attempt {attempt}: {cap} idle connections, then a handshake: {status} after {took:.2f} s")
            if status == 429:  # meanwhile, another address is not affected
                sock = await Socket.open(a.socket_url, a.access_token)
                assert sock.auth is not None and sock.auth["type"] == "auth_ok"
                await sock.close()
            if status == 429 or took < stack.settings.socket_auth_timeout_s * 0.75:
                break
        finally:
            for writer in idle:
                writer.close()
    assert status == 429

    async def admitted() -> bool:
        return await handshake() == 101

    await eventually(admitted, 10, "the address to be admitted again once its connections are gone")
    await api.close()


async def test_a_user_gets_at_most_the_session_cap_on_a_node(stack):
    api = Api(stack.base_url)
    a = await api.user()
    cap = stack.settings.socket_max_sessions_per_user
    socks = [await Socket.open(a.socket_url, a.access_token) for _ in range(cap)]
    assert all(s.auth is not None and s.auth["type"] == "auth_ok" for s in socks)
    async with connect(a.socket_url, compression=None) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": a.access_token}).decode())
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        await asyncio.wait_for(ws.wait_closed(), 10)
    assert frame["type"] == "error" and frame["code"] == "too_many_sessions", frame
    assert ws.close_code == 4009
    await socks[0].close()

    async def one_more() -> bool:
        sock = await Socket.open(a.socket_url, a.access_token)
        ok = sock.auth is not None and sock.auth["type"] == "auth_ok"
        if ok:
            socks[0] = sock
        else:
            await sock.close()
        return ok

    await eventually(one_more, 10, "a new session once one of the others has closed")
    for sock in socks:
        await sock.close()
    await api.close()


@pytest.mark.parametrize("kind", ["ping", "typing", "read", "send", "malformed"])
async def test_a_client_flooding_frames_is_rate_limited_then_closed(stack, kind):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    conv = direct(a.user_id, b.user_id)
    sock = await Socket.open(a.socket_url, a.access_token)
    assert (await sock.send_text(conv, "hello"))["type"] == "ack"
    settings = stack.settings
    rate = {"send": settings.socket_sends_per_s, "typing": settings.socket_signals_per_s,
            "read": settings.socket_signals_per_s}.get(kind, settings.socket_controls_per_s)
    flood = int(rate * settings.socket_rate_burst_s) * 3 + 50

    def frame(i: int) -> str:
        if kind == "send":
            # A blank body: refused after the rate check, so the flood stores nothing either way.
            return orjson.dumps({"type": "send", "id": uuid.uuid4().hex, "conv": conv, "body": " "}).decode()
        if kind == "malformed":
            return "{not json"
        extra = {"conv": conv} if kind in ("typing", "read") else {}
        return orjson.dumps({"type": kind, **extra, **({"seq": 1} if kind == "read" else {})}).decode()

    try:
        for i in range(flood):
            await sock.ws.send(frame(i))
    except Exception:  # closed under our feet: that is the point
        pass
    code = await closed(sock, 20.0)
    assert code == 4029, code
    limited = [f for f in sock.frames if f["type"] == "error" and f["code"] == "rate_limited"]
    assert limited, sock.frames[-5:]
    # A client within the limits is not affected.
    calm = await Socket.open(a.socket_url, a.access_token)
    assert (await calm.request({"type": "ping"}, "pong")) == {"type": "pong"}
    await calm.close()
    await api.close()
