"""SocketNode: one actor, one WebSocket server on its Ray node's IP and its own port.

Edges only: it authenticates sessions, validates frames, hands work to conversation shards in
batches (one frame per shard per loop turn, on a stream to each shard: see `stream`), and writes
what shards deliver to the sessions it holds. Frames to a session leave in the order they were
pushed, and a stuck client cannot make the node buffer without limit (see Session).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections import deque
from http import HTTPStatus

import orjson
import ray
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from imray.actors import names
from imray.actors.batching import Batcher
from imray.actors.shard_link import ShardLink
from imray.actors.wire import pack_items, unpack_deliveries, unpack_outcomes
from imray.adapters.cache import make_cache, revoked_family_key
from imray.adapters.live_config import LiveSettings
from imray.adapters.nacos import SOCKET_SERVICE, NacosInstance
from imray.adapters.presence import REFRESH_S, make_presence
from imray.adapters.revocations import follow_if_embedded
from imray.domain.conversations import parse_conv, shard_of
from imray.domain.errors import BadRequest, DomainError, Unauthorized
from imray.domain.messaging import NOT_STORED, Item, Outcome, ReadItem, SendItem, TypingItem, check_send
from imray.domain.tokens import Principal, PublicKey, TokenVerifier
from imray.heap import collect_fully_less_often, freeze_startup_heap
from imray.protocol.frames import (
    Auth,
    Ping,
    Read,
    Send,
    Typing,
    client_id_of,
    dumps,
    error_frame,
    parse_frame,
)
from imray.settings import Settings

log = logging.getLogger("imray.socket")

CLOSE_UNAUTHORIZED = 4001
CLOSE_WRONG_NODE = 4003
CLOSE_TOO_SLOW = 4008
CUT_GRACE_S = 2.0
MAX_IN_FLIGHT = 1000  # sends awaiting their ack, per session
PRESENCE_LINGER_S = 0.01
PONG = dumps({"type": "pong"})


def _rss_bytes() -> int:
    """This process's resident memory (Linux), for `imray status` and the connection benchmark."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def encode_frame(text: str) -> bytes:
    """A server-to-client WebSocket text frame. Server frames are not masked and imray negotiates
    no extensions, so one encoding serves every session a message goes to."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])


class Session:
    """One authenticated connection. Frames go straight into its transport while the client keeps
    up (no task, no queue per session: less memory and a cheaper fan-out than `ws.send`); behind
    that, a backlog drains as the transport does, and a client too far behind is cut loose.

    Frames pushed to a session during one turn of the event loop (a deliver batch, the acks of a
    shard's answer) leave in one write: one syscall, not one per frame, and the client reads them
    in one wakeup.
    """

    __slots__ = ("backlog", "cut", "id", "in_flight", "limit", "pending", "user", "ws")

    def __init__(self, user: int, ws: ServerConnection, backlog_limit: int) -> None:
        self.id = secrets.token_hex(8)
        self.user = user
        self.ws = ws
        self.limit = backlog_limit
        self.in_flight = 0
        self.backlog: deque[bytes] | None = None
        self.pending: list[bytes] | None = None
        self.cut = False

    def push(self, text: str) -> None:
        self.push_frame(encode_frame(text))

    def push_frame(self, frame: bytes) -> None:
        if self.pending is None:
            self.pending = [frame]
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self.pending.append(frame)

    def _flush(self) -> None:
        frames, self.pending = self.pending, None
        if self.cut or self.ws.protocol.state is not State.OPEN:
            return
        if self.backlog is None:
            if not self.ws.paused:  # the transport is below its high-water mark
                self.ws.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
                return
            self.backlog = deque()
            asyncio.get_running_loop().create_task(self._drain())
        if len(self.backlog) + len(frames) > self.limit:  # the client does not read: cut it loose (history)
            self.cut = True
            self.backlog.clear()
            asyncio.get_running_loop().create_task(self._cut())
            return
        self.backlog.extend(frames)

    async def _cut(self) -> None:
        # A close handshake waits for the socket to drain, which a client that does not read never
        # lets happen: offer it briefly, then drop the connection.
        try:
            await asyncio.wait_for(self.ws.close(CLOSE_TOO_SLOW, "client too slow"), CUT_GRACE_S)
        except TimeoutError:
            self.ws.transport.abort()

    async def _drain(self) -> None:
        try:
            while self.backlog and not self.cut:
                await self.ws.drain()  # until the transport is below its low-water mark
                if self.ws.protocol.state is not State.OPEN:
                    break
                while self.backlog and not self.ws.paused:
                    self.ws.transport.write(self.backlog.popleft())
        except ConnectionClosed:
            pass
        finally:
            self.backlog = None


@ray.remote(num_cpus=0, max_concurrency=10000)
class SocketNode:
    def __init__(self, node_id: str, port: int, settings: Settings, keys: list[PublicKey]) -> None:
        self.node_id = node_id
        self._port = port
        self._settings = settings
        self._verifier = TokenVerifier(keys, settings.base_url)
        self._sessions: dict[int, dict[str, Session]] = {}
        self._server: Server | None = None
        self._host = ""
        self._live = LiveSettings(settings)
        self._cache = make_cache(settings)
        self._nacos: NacosInstance | None = None

    async def start(self) -> dict:
        ns = self._settings.namespace
        self._shards = [ShardLink(self.node_id, i, ns, self.deliver) for i in range(self._settings.shard_count)]
        for link in self._shards:
            link.start()
        self._presence = make_presence(self._settings)
        self._supervisor = ray.get_actor(names.SUPERVISOR, namespace=ns)
        self._to_shards: Batcher[int, Item, Outcome] = Batcher(self._call_shard)
        # A presence call costs the node and the presence actor ~0.3 ms of CPU each; in a burst of
        # logins, 10 ms of waiting folds ~5 sessions into one call, at 10 ms on each auth_ok.
        self._to_presence: Batcher[str, tuple[int, int], None] = Batcher(self._call_presence, PRESENCE_LINGER_S)
        self._host = self._settings.socket_host or ray.util.get_node_ip_address()
        self._server = await serve(
            self._handle, self._host, self._port, compression=None,
            max_size=self._settings.socket_hard_frame_bytes, process_request=self._only_ws_path,
            ping_interval=20, ping_timeout=20,
        )
        self._refresher = asyncio.create_task(self._refresh_presence())
        self._revocations = follow_if_embedded(self._settings, self._cache)
        await self._live.start(f"socket-{self.node_id}")
        if self._settings.nacos_server:
            self._nacos = NacosInstance(self._settings, SOCKET_SERVICE, self._host, self._port, f"sn-{self.node_id}")
            await self._nacos.register(self._nacos_metadata())
            self._nacos_updater = asyncio.create_task(self._keep_nacos_current())
        freeze_startup_heap()
        collect_fully_less_often()
        return self.endpoint()

    def _nacos_metadata(self) -> dict[str, str]:
        context = ray.get_runtime_context()
        return {"node_id": self.node_id, "ray_node_id": context.get_node_id(), "actor_id": context.get_actor_id(),
                "connections": str(self.stats()["connections"]), "url": self.endpoint()["url"]}

    async def _keep_nacos_current(self) -> None:
        """The connection count in Nacos follows the node's, re-registered at most once a second."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._nacos.update(self._nacos_metadata())
            except Exception as exc:  # Nacos away: the instance comes back with the next success
                log.warning("nacos update failed: %r", exc)

    def endpoint(self) -> dict:
        context = ray.get_runtime_context()
        return {"node_id": self.node_id, "url": f"ws://{self._host}:{self._port}/ws", "host": self._host,
                "port": self._port, "ray_node_id": context.get_node_id(), "actor_id": context.get_actor_id()}

    def stats(self) -> dict:
        return {"node_id": self.node_id, "connections": sum(len(s) for s in self._sessions.values()),
                "users": len(self._sessions), "rss_bytes": _rss_bytes()}

    async def stop(self) -> None:
        """Drain: leave Nacos first, so nobody is sent here, then close every session (1001)."""
        if self._nacos is not None:
            self._nacos_updater.cancel()
            await self._nacos.deregister()
            self._nacos = None
        if self._server is not None:
            self._server.close()  # closes every session with 1001 (going away)
            await self._server.wait_closed()

    def deliver(self, blob: bytes) -> None:
        """A shard's deliveries for this node (`wire.pack_deliveries`): from the stream, or through
        Ray while this node has no stream to that shard."""
        for text, users, skip in unpack_deliveries(blob):
            frame = None
            for user in users:
                for session in self._sessions.get(user, {}).values():
                    if session.id != skip:
                        frame = frame or encode_frame(text)  # once per message, however many sessions
                        session.push_frame(frame)

    async def resync_presence(self) -> None:
        """Tell presence everything this node holds (it may have restarted empty)."""
        await self._presence.replace_node(self.node_id, {u: len(s) for u, s in self._sessions.items()})

    async def _refresh_presence(self) -> None:
        """Entries expire unless refreshed; a lost presence store is whole again within one round."""
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.resync_presence()
            except Exception as exc:  # presence down: sessions still work, fan-out falls back
                log.warning("presence refresh failed: %r", exc)

    # -- calls to shards (streams) and presence, batched ----------------------------------------

    async def _call_shard(self, index: int, items: list[Item]) -> list[Outcome]:
        return unpack_outcomes(await self._shards[index].submit(pack_items(items)))

    async def _call_presence(self, node: str, changes: list[tuple[int, int]]) -> list[None]:
        try:
            await self._presence.apply(node, changes)
        except Exception as exc:  # degrade, never refuse a session: the next refresh repairs presence
            log.warning("presence update failed: %r", exc)
        return [None] * len(changes)

    # -- one connection -------------------------------------------------------------------------

    def _only_ws_path(self, connection: ServerConnection, request):
        if request.path.split("?", 1)[0] != "/ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "socket endpoint is /ws\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        principal = await self._authenticate(ws)
        if principal is None:
            return
        session = Session(principal.user_id, ws, self._settings.socket_send_queue)
        self._sessions.setdefault(session.user, {})[session.id] = session
        try:
            await self._to_presence.submit(self.node_id, (session.user, 1))
            session.push(dumps({"type": "auth_ok", "user_id": session.user, "node": self.node_id,
                                "session": session.id}))
            async for raw in ws:
                self._on_frame(session, raw)
        except ConnectionClosed:
            pass
        finally:
            mine = self._sessions.get(session.user, {})
            mine.pop(session.id, None)
            if not mine:
                self._sessions.pop(session.user, None)
            gone = self._to_presence.submit(self.node_id, (session.user, -1))
            gone.add_done_callback(lambda f: f.exception())

    async def _authenticate(self, ws: ServerConnection) -> Principal | None:
        try:
            # asyncio.timeout, not wait_for: wait_for wraps recv() in a task of its own, and creating
            # it was 8 % of a socket node's CPU while sessions were connecting.
            async with asyncio.timeout(self._settings.socket_auth_timeout_s):
                raw = await ws.recv()
            frame = parse_frame(raw, self._settings.socket_max_frame_bytes)
            if not isinstance(frame, Auth):
                raise Unauthorized("the first frame must be auth")
            principal = self._verifier.verify(frame.token)
            if principal.user_id is None:
                raise Unauthorized("a user token is required")
            if principal.family and await self._cache.get(revoked_family_key(principal.family)):
                raise Unauthorized("this login was revoked")
        except (TimeoutError, DomainError) as exc:
            message = "no auth frame in time" if isinstance(exc, TimeoutError) else str(exc)
            await self._refuse(ws, error_frame("unauthorized", message), CLOSE_UNAUTHORIZED, "unauthorized")
            return None
        except ConnectionClosed:
            return None
        if principal.node != self.node_id:
            url = await self._supervisor.url_of.remote(principal.node)
            hint = "connect to your pinned node" if url else "your node is gone: POST /api/socket/assign"
            await self._refuse(ws, error_frame("wrong_node", hint, socket_url=url), CLOSE_WRONG_NODE, "wrong_node")
            return None
        return principal

    async def _refuse(self, ws: ServerConnection, frame: str, code: int, reason: str) -> None:
        try:
            await ws.send(frame)
            await ws.close(code, reason)
        except ConnectionClosed:
            pass

    def _on_frame(self, session: Session, raw: str | bytes) -> None:
        try:
            frame = parse_frame(raw, self._settings.socket_max_frame_bytes)
            if isinstance(frame, Send):
                self._on_send(session, frame)
            elif isinstance(frame, Ping):
                session.push(PONG)
            elif isinstance(frame, Read | Typing):
                parse_conv(frame.conv)
                item = (ReadItem(session.user, session.id, frame.conv, frame.seq) if isinstance(frame, Read)
                        else TypingItem(session.user, session.id, frame.conv))
                self._submit(session, item, None)
            else:  # a second auth frame
                raise BadRequest("already authenticated")
        except DomainError as exc:
            client_id = client_id_of(raw) if len(raw) <= self._settings.socket_max_frame_bytes else None
            session.push(error_frame(exc.code, exc.message, client_id))

    def _on_send(self, session: Session, frame: Send) -> None:
        try:
            parse_conv(frame.conv)
            check_send(frame.kind, frame.body, frame.file_id, self._live.max_text_length)
            if session.in_flight >= MAX_IN_FLIGHT:
                session.push(error_frame("rate_limited", "too many messages awaiting their ack", frame.id))
                return
        except DomainError as exc:
            session.push(error_frame(exc.code, exc.message, frame.id))
            return
        session.in_flight += 1
        item = SendItem(session.user, session.id, frame.id, frame.conv, frame.kind, frame.body, frame.file_id)
        self._submit(session, item, frame.id)

    def _submit(self, session: Session, item: Item, client_id: str | None) -> None:
        future = self._to_shards.submit(shard_of(item.conv, len(self._shards)), item)
        future.add_done_callback(lambda f: self._answer(session, client_id, f))

    def _answer(self, session: Session, client_id: str | None, future: asyncio.Future[Outcome]) -> None:
        if client_id is not None:
            session.in_flight -= 1
        if future.cancelled() or future.exception() is not None:
            if future.exception() is not None:
                log.warning("shard call failed: %r", future.exception())
            session.push(error_frame(*NOT_STORED, client_id))
            return
        outcome = future.result()
        if outcome.error is not None:
            session.push(error_frame(outcome.error[0], outcome.error[1], client_id))
        elif outcome.ack is not None:
            session.push(orjson.dumps(outcome.ack).decode())
