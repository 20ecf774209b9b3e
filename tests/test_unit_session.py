"""A session's writes (coalescing, backpressure, cutting slow clients) and the socket server's frame
dispatch, on fake connections: no network, no Ray."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from websockets.protocol import State

from imray.actors.session import CLOSE_TOO_SLOW, Session, encode_frame
from imray.actors.socket_server import (
    CLOSE_RATE_LIMITED,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TOO_MANY_SESSIONS,
    CLOSE_UNAUTHORIZED,
    CLOSE_WRONG_NODE,
    SocketServer,
)
from imray.adapters.live_config import LiveSettings
from imray.domain.errors import DomainError, Unauthorized
from imray.domain.messaging import Item, Outcome, SendItem
from imray.domain.tokens import Principal
from imray.settings import Settings

NODE = "sn-1"


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


async def turns(n: int = 5) -> None:
    """Let the event loop run a few turns (flushes are scheduled with call_soon)."""
    for _ in range(n):
        await asyncio.sleep(0)


def texts(data: bytes) -> list[str]:
    """The text frames in what the server wrote (server frames are unmasked)."""
    found, i = [], 0
    while i < len(data):
        assert data[i] == 0x81, "a final text frame"
        length, i = data[i + 1] & 0x7F, i + 2
        if length == 126:
            length, i = int.from_bytes(data[i:i + 2], "big"), i + 2
        found.append(data[i:i + length].decode())
        i += length
    return found


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def abort(self) -> None:
        self.aborted = True


class Connection:
    """What Session uses of a websockets ServerConnection: state, flow control, close."""

    def __init__(self, close_completes: bool = True) -> None:
        self.protocol = SimpleNamespace(state=State.OPEN)
        self.transport = Transport()
        self.paused = False
        self.closed_with: tuple[int, str] | None = None
        self._close_completes = close_completes
        self._resumed = asyncio.Event()

    def pause(self) -> None:
        self.paused = True
        self._resumed.clear()

    def resume(self) -> None:
        self.paused = False
        self._resumed.set()

    async def drain(self) -> None:
        if self.paused:
            await self._resumed.wait()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = (code, reason)
        if not self._close_completes:
            await asyncio.Event().wait()  # a client that never reads never completes the handshake
        self.protocol.state = State.CLOSED

    def received(self) -> list[str]:
        return texts(b"".join(self.transport.writes))


# -- Session -------------------------------------------------------------------------------------


def test_frames_pushed_in_one_turn_leave_in_one_write_in_push_order() -> None:
    async def test() -> None:
        ws = Connection()
        session = Session(1, ws, backlog_limit=10)  # type: ignore[arg-type]
        session.push("a")
        session.push_frame(encode_frame("b"))
        session.push("c")
        assert ws.transport.writes == []  # nothing leaves before the turn ends
        await turns()
        assert ws.transport.writes == [encode_frame("a") + encode_frame("b") + encode_frame("c")]

    run(test)


def test_frames_pushed_in_later_turns_leave_in_later_writes() -> None:
    async def test() -> None:
        ws = Connection()
        session = Session(1, ws, backlog_limit=10)  # type: ignore[arg-type]
        session.push("a")
        await turns()
        session.push("b")
        await turns()
        assert ws.transport.writes == [encode_frame("a"), encode_frame("b")]

    run(test)


def test_behind_a_paused_transport_frames_wait_and_leave_in_order_once_it_drains() -> None:
    async def test() -> None:
        ws = Connection()
        session = Session(1, ws, backlog_limit=10)  # type: ignore[arg-type]
        ws.pause()
        session.push("a")
        session.push("b")
        await turns()
        session.push("c")
        await turns()
        assert ws.transport.writes == []
        ws.resume()
        await turns()
        assert ws.received() == ["a", "b", "c"]
        assert session.task is None  # a session that keeps up again holds no task
        session.push("d")
        await turns()
        assert ws.received() == ["a", "b", "c", "d"]

    run(test)


def test_a_client_beyond_the_backlog_limit_is_cut_with_close_4008() -> None:
    async def test() -> None:
        ws = Connection()
        session = Session(1, ws, backlog_limit=3)  # type: ignore[arg-type]
        ws.pause()
        for text in "abc":
            session.push(text)
        await turns()
        assert ws.closed_with is None  # at the limit, not beyond it
        session.push("d")
        await turns()
        assert session.cut
        assert ws.closed_with == (CLOSE_TOO_SLOW, "client too slow")
        assert not ws.transport.aborted

    run(test)


def test_a_cut_whose_close_never_completes_is_aborted_after_the_grace() -> None:
    async def test() -> None:
        ws = Connection(close_completes=False)
        session = Session(1, ws, backlog_limit=1, cut_grace_s=0.05)  # type: ignore[arg-type]
        ws.pause()
        session.push("a")
        session.push("b")
        await turns()
        assert ws.closed_with is not None and not ws.transport.aborted
        await asyncio.sleep(0.2)
        assert ws.transport.aborted

    run(test)


def test_nothing_is_written_after_a_cut() -> None:
    async def test() -> None:
        ws = Connection(close_completes=False)
        session = Session(1, ws, backlog_limit=1, cut_grace_s=0.05)  # type: ignore[arg-type]
        ws.pause()
        session.push("a")
        session.push("b")
        await turns()
        ws.resume()  # the transport drains again, but the session is already cut
        session.push("c")
        await asyncio.sleep(0.2)
        assert ws.transport.writes == []

    run(test)


def test_frames_to_a_closed_connection_are_dropped() -> None:
    async def test() -> None:
        ws = Connection()
        session = Session(1, ws, backlog_limit=10)  # type: ignore[arg-type]
        ws.protocol.state = State.CLOSING
        session.push("a")
        await turns()
        assert ws.transport.writes == []

    run(test)


# -- SocketServer: authentication and frame dispatch ---------------------------------------------


class Client(Connection):
    """A connection the server reads frames from (`None` ends it) and refuses with `send`."""

    def __init__(self) -> None:
        super().__init__()
        self.incoming: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[str] = []

    async def recv(self) -> str:
        raw = await self.incoming.get()
        assert raw is not None
        return raw

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> str:
        raw = await self.incoming.get()
        if raw is None:
            raise StopAsyncIteration
        return raw

    async def send(self, text: str) -> None:
        self.sent.append(text)


class Tokens:
    """Every token is user 7's, pinned to `node`; the token "bad" is refused."""

    def __init__(self, node: str = NODE) -> None:
        self.node = node

    async def user(self, token: object, not_a_user: type[DomainError]) -> Principal:
        if token == "bad":
            raise Unauthorized("token is invalid")
        return Principal(sub="7", client_id="web", scope="", jti="j", exp=int(time.time()) + 900, user_id=7,
                         node=self.node)


class Shards:
    """Answers every send with an ack made from its client id."""

    def __init__(self) -> None:
        self.items: list[tuple[int, Item]] = []

    def submit(self, index: int, item: Item) -> asyncio.Future[Outcome]:
        self.items.append((index, item))
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        ack = orjson.dumps({"type": "ack", "id": item.client_id}).decode() if isinstance(item, SendItem) else None
        future.set_result(Outcome(ack=ack))
        return future


def make_server(tokens: Tokens, shards: Shards, presence: list[tuple[int, int]],
                settings: Settings | None = None) -> SocketServer:
    settings = settings or Settings()

    def presence_change(user: int, delta: int) -> asyncio.Future[None]:
        presence.append((user, delta))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def url_of(node_id: str) -> str | None:
        return f"ws://{node_id}.example/ws" if node_id == "sn-2" else None

    return SocketServer(NODE, settings, tokens, LiveSettings(settings),  # type: ignore[arg-type]
                        submit=shards.submit, shard_count=2, url_of=url_of, presence_change=presence_change)


def frames_of(client: Client) -> list[dict[str, Any]]:
    return [orjson.loads(text) for text in client.received()]


def test_a_session_is_answered_frame_by_frame_and_survives_a_malformed_frame() -> None:
    async def test() -> None:
        shards, presence = Shards(), []
        server = make_server(Tokens(), shards, presence)
        client = Client()
        handler = asyncio.create_task(server.handle(client))  # type: ignore[arg-type]
        for raw in ('{"type": "auth", "token": "t"}', '{"type": "ping"}', "not json",
                    '{"type": "auth", "token": "t"}',
                    '{"type": "send", "id": "m1", "conv": "g:5", "body": "hi"}'):
            client.incoming.put_nowait(raw)
        await turns(20)
        client.incoming.put_nowait('{"type": "ping"}')  # the session still answers after errors
        await turns(20)
        auth_ok, pong, malformed, second_auth, ack, pong_again = frames_of(client)
        assert auth_ok["type"] == "auth_ok" and auth_ok["user_id"] == 7 and auth_ok["node"] == NODE
        assert pong == pong_again == {"type": "pong"}
        assert malformed["type"] == "error" and malformed["code"] == "bad_request"
        assert second_auth["code"] == "bad_request" and second_auth["message"] == "already authenticated"
        assert ack == {"type": "ack", "id": "m1"}  # the shard's ack, as it is
        assert [item.client_id for _, item in shards.items if isinstance(item, SendItem)] == ["m1"]
        assert server.connection_count() == 1 and presence == [(7, 1)]
        client.incoming.put_nowait(None)  # the client goes away
        await handler
        assert server.connection_count() == 0 and presence == [(7, 1), (7, -1)]

    run(test)


def test_a_refused_token_is_answered_unauthorized_and_closed_4001() -> None:
    async def test() -> None:
        server = make_server(Tokens(), Shards(), [])
        client = Client()
        client.incoming.put_nowait('{"type": "auth", "token": "bad"}')
        await server.handle(client)  # type: ignore[arg-type]
        assert [orjson.loads(text)["code"] for text in client.sent] == ["unauthorized"]
        assert client.closed_with == (CLOSE_UNAUTHORIZED, "unauthorized")
        assert server.connection_count() == 0

    run(test)


def test_a_token_pinned_to_another_node_is_sent_there_with_close_4003() -> None:
    async def test() -> None:
        server = make_server(Tokens(node="sn-2"), Shards(), [])
        client = Client()
        client.incoming.put_nowait('{"type": "auth", "token": "t"}')
        await server.handle(client)  # type: ignore[arg-type]
        (refusal,) = [orjson.loads(text) for text in client.sent]
        assert refusal["code"] == "wrong_node" and refusal["socket_url"] == "ws://sn-2.example/ws"
        assert client.closed_with == (CLOSE_WRONG_NODE, "wrong_node")

    run(test)


# -- SocketServer: revoked logins, expiring tokens, caps and rates (issue 16) -------------------------


class Logins(Tokens):
    """Token text "<family>" or "<family>@<exp>": user 7 on this node, that login, expiring then
    (in 15 minutes when not given)."""

    async def user(self, token: object, not_a_user: type[DomainError]) -> Principal:
        family, _, exp = str(token).partition("@")
        return Principal(sub="7", client_id="web", scope="", jti="j", user_id=7, node=self.node, family=family,
                         exp=int(exp) if exp else int(time.time()) + 900)

    async def renewal(self, token: object, current: Principal) -> Principal:
        principal = await self.user(token, Unauthorized)
        if principal.family != current.family:
            raise Unauthorized("the new token is for another login")
        return principal


async def connected(server: SocketServer, token: str) -> tuple[Client, asyncio.Task[None]]:
    client = Client()
    client.incoming.put_nowait(orjson.dumps({"type": "auth", "token": token}).decode())
    handler = asyncio.create_task(server.handle(client))  # type: ignore[arg-type]
    await turns(20)
    return client, handler


async def gone(client: Client, handler: asyncio.Task[None]) -> None:
    client.incoming.put_nowait(None)
    await handler


def test_a_revoked_login_has_its_sessions_closed_4001_and_other_logins_keep_theirs() -> None:
    async def test() -> None:
        server = make_server(Logins(), Shards(), [])
        (a1, h1), (a2, h2), (b, hb) = [await connected(server, t) for t in ("famA", "famA", "famB")]
        assert server.close_logins(["famA", "famZ"]) == 2
        await turns(20)
        for client in (a1, a2):
            assert frames_of(client)[-1]["code"] == "unauthorized"
            assert client.closed_with == (CLOSE_UNAUTHORIZED, "revoked")
        assert b.closed_with is None
        for client, handler in ((a1, h1), (a2, h2), (b, hb)):
            await gone(client, handler)
        assert server.close_logins(["famA"]) == 0  # nothing is left behind in the index

    run(test)


def test_a_session_is_closed_4002_when_its_token_expires_unless_renewed() -> None:
    async def test() -> None:
        server = make_server(Logins(), Shards(), [])
        now = int(time.time())
        expiring, h1 = await connected(server, f"famA@{now}")
        renewed, h2 = await connected(server, f"famB@{now}")
        renewed.incoming.put_nowait(orjson.dumps({"type": "refresh", "token": f"famA@{now + 900}"}).decode())
        renewed.incoming.put_nowait(orjson.dumps({"type": "refresh", "token": f"famB@{now + 900}"}).decode())
        await turns(20)
        refused, ok = frames_of(renewed)[1:]
        assert refused["code"] == "unauthorized" and "another login" in refused["message"]
        assert ok == {"type": "refresh_ok", "expires_at": now + 900}
        await asyncio.sleep(1.3)
        assert frames_of(expiring)[-1]["code"] == "token_expired"
        assert expiring.closed_with == (CLOSE_TOKEN_EXPIRED, "token expired")
        assert renewed.closed_with is None
        await gone(expiring, h1)
        await gone(renewed, h2)

    run(test)


def test_a_user_over_the_session_cap_is_refused_4009() -> None:
    async def test() -> None:
        server = make_server(Logins(), Shards(), [], Settings(socket_max_sessions_per_user=2))
        held = [await connected(server, "famA") for _ in range(2)]
        refused, handler = await connected(server, "famA")
        await handler
        assert [orjson.loads(text)["code"] for text in refused.sent] == ["too_many_sessions"]
        assert refused.closed_with == (CLOSE_TOO_MANY_SESSIONS, "too many sessions")
        assert server.connection_count() == 2
        for client, h in held:
            await gone(client, h)

    run(test)


def test_frames_over_the_rate_are_refused_and_a_client_that_goes_on_is_closed_4029() -> None:
    async def test() -> None:
        settings = Settings(socket_controls_per_s=1.0, socket_rate_burst_s=3.0)  # a burst of 3 pings
        server = make_server(Logins(), Shards(), [], settings)
        client, handler = await connected(server, "famA")
        for _ in range(8):
            client.incoming.put_nowait('{"type": "ping"}')
        await turns(40)
        replies = frames_of(client)[1:]
        assert [f["type"] for f in replies[:3]] == ["pong"] * 3
        assert [f.get("code") for f in replies[3:]] == ["rate_limited"] * 4
        assert client.closed_with == (CLOSE_RATE_LIMITED, "rate limited")
        await gone(client, handler)

    run(test)


def test_on_a_real_socket_frames_before_auth_are_small_and_unauthenticated_connections_are_capped() -> None:
    """The listening side (websockets on 127.0.0.1, no Ray): the pre-auth frame limit, its lift at
    auth_ok, and the cap on connections from one address that have not authenticated."""
    import struct

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async def test() -> None:
        settings = Settings(socket_auth_frame_bytes=1024, socket_max_pending_per_address=3)
        server = make_server(Logins(), Shards(), [], settings)
        await server.listen("127.0.0.1", 0)
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/ws"
        try:
            async with connect(url) as ws:  # a header announcing 1 MiB: closed at once, 1009
                ws.transport.write(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 1 << 20) + b"\0" * 4 + b"x" * 2000)
                await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == 1009
            async with connect(url, max_size=None) as ws:  # after auth_ok, frames up to the usual limits
                await ws.send('{"type": "auth", "token": "famA"}')
                assert orjson.loads(await ws.recv())["type"] == "auth_ok"
                await ws.send(orjson.dumps({"type": "ping", "pad": "x" * 5000}).decode())
                assert orjson.loads(await ws.recv()) == {"type": "pong"}
            idle = [await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.66", 0)) for _ in range(3)]
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, local_addr=("127.0.0.66", 0)):
                    pass
            assert refused.value.response.status_code == 429
            async with connect(url, local_addr=("127.0.0.67", 0)) as ws:  # another address
                await ws.send('{"type": "auth", "token": "famB"}')
                assert orjson.loads(await ws.recv())["type"] == "auth_ok"
            for _, writer in idle:
                writer.close()
            await turns(50)
            async with connect(url, local_addr=("127.0.0.66", 0)) as ws:
                await ws.send('{"type": "auth", "token": "famC"}')
                assert orjson.loads(await ws.recv())["type"] == "auth_ok"
        finally:
            await server.close()

    run(test)


def test_on_a_real_socket_a_client_that_answers_pings_stays_and_one_that_does_not_is_closed_1011() -> None:
    """The node's one keepalive task (no task per connection): a websockets client answers its pings
    and stays; a raw client that reads them and never pongs is closed with 1011 after the timeout,
    and its session's presence is taken back."""
    from websockets.asyncio.client import connect
    from websockets.frames import Frame, Opcode

    async def frame_of(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readexactly(2)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        return head[0] & 0x0F, await reader.readexactly(length)

    async def test() -> None:
        presence: list[tuple[int, int]] = []
        settings = Settings(socket_ping_interval_s=0.4, socket_ping_timeout_s=0.4)
        server = make_server(Logins(), Shards(), presence, settings)
        await server.listen("127.0.0.1", 0)
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws", ping_interval=None) as answering:
                await answering.send('{"type": "auth", "token": "famA"}')
                assert orjson.loads(await answering.recv())["type"] == "auth_ok"
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
                auth = Frame(Opcode.TEXT, b'{"type": "auth", "token": "famB"}')
                writer.write(auth.serialize(mask=True, extensions=[]))
                seen: list[tuple[int, bytes]] = []
                started = time.monotonic()
                while not seen or seen[-1][0] != Opcode.CLOSE.value:  # read, but never answer a ping
                    seen.append(await asyncio.wait_for(frame_of(reader), 5))
                waited = time.monotonic() - started
                opcodes = [op for op, _ in seen]
                assert orjson.loads(seen[0][1])["type"] == "auth_ok"
                assert Opcode.PING.value in opcodes
                assert int.from_bytes(seen[-1][1][:2], "big") == 1011
                assert seen[-1][1][2:] == b"keepalive ping timeout"
                assert 0.4 <= waited < 3, waited  # a ping within the interval, closed one timeout later
                writer.close()
                # The answering client was pinged all the while and is still served.
                await answering.send('{"type": "ping"}')
                assert orjson.loads(await asyncio.wait_for(answering.recv(), 5)) == {"type": "pong"}
                [kept] = server.sessions[7].values()
                assert kept.ws.latency > 0  # the node measured its pong
            for _ in range(100):
                if presence.count((7, -1)) == 2:
                    break
                await asyncio.sleep(0.05)
            assert presence.count((7, 1)) == 2 and presence.count((7, -1)) == 2
            assert len(server._keepalive) == 0
        finally:
            await server.close()

    run(test)
