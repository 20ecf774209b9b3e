"""A socket node's WebSocket side: sessions, their authentication, frame dispatch, deliveries.

Edges only: it authenticates sessions (first frame, within a timeout), validates frames, hands
items to conversation shards through `submit` (the node batches them, one call per shard per loop
turn), answers each sender with its outcome, and writes what shards deliver to the sessions it
holds. It knows nothing of Ray: the node injects how to reach shards, presence and the supervisor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from imray.actors.catch_up import Resumed
from imray.actors.keepalive import KeepAlive
from imray.actors.session import CUT_GRACE_S, Session, encode_frame
from imray.actors.wire import unpack_deliveries
from imray.adapters import metrics
from imray.adapters.live_config import LiveSettings
from imray.domain.authenticator import Authenticator
from imray.domain.conversations import parse_conv, shard_of
from imray.domain.errors import BadRequest, DomainError, Unauthorized
from imray.domain.frame_rates import CONTROLS, FrameBudget, FrameRates, Verdict, frame_class
from imray.domain.messaging import NOT_STORED, Item, Outcome, ReadItem, SendItem, TypingItem, check_send
from imray.domain.tokens import Principal
from imray.logs import quiet_websockets
from imray.protocol.frames import (
    Auth,
    Ping,
    Read,
    Refresh,
    Resume,
    Send,
    Typing,
    client_id_of,
    dumps,
    error_frame,
    parse_frame,
)
from imray.settings import Settings

log = logging.getLogger("imray.socket")

CLOSE_GOING_AWAY = 1001  # a drained node's last sessions (issue 20)
CLOSE_UNAUTHORIZED = 4001  # also a login revoked while its sessions are open
CLOSE_TOKEN_EXPIRED = 4002  # the access token expired and was not renewed (a `refresh` frame)
CLOSE_WRONG_NODE = 4003
CLOSE_TOO_MANY_SESSIONS = 4009
CLOSE_RATE_LIMITED = 4029
MAX_IN_FLIGHT = 1000  # sends awaiting their ack, per session
PONG = dumps({"type": "pong"})
# Conversations whose last delivered seq the node remembers, least recently delivered forgotten
# first (about 150 bytes each). A message of a forgotten conversation is delivered again if a
# shard re-delivers it: only after 100,000 other conversations had a message here since.
DELIVERED_CONVS = 100_000

Submit = Callable[[int, Item], asyncio.Future[Outcome]]  # (shard index, item) -> its outcome
UrlOf = Callable[[str], Awaitable[str | None]]  # a node id -> its socket URL, None if it is gone
PresenceChange = Callable[[int, int], asyncio.Future[None]]  # (user, +1 or -1 session)
KnownRevoked = Callable[[str], bool]  # a login (family) this process already knows to be revoked
CatchUpRead = Callable[[int, dict[str, int]], Awaitable[Resumed]]  # (user, conv -> seen seq) -> what it missed


class SocketServer:
    """The sessions of one socket node (user -> session id -> Session) and their connections."""

    def __init__(self, node_id: str, settings: Settings, authenticator: Authenticator, live: LiveSettings,
                 submit: Submit, shard_count: int, url_of: UrlOf, presence_change: PresenceChange,
                 cut_grace_s: float = CUT_GRACE_S, known_revoked: KnownRevoked = lambda _family: False,
                 catch_up: CatchUpRead | None = None) -> None:
        self.node_id = node_id
        self.sessions: dict[int, dict[str, Session]] = {}
        self._settings = settings
        self._authenticator = authenticator
        self._live = live
        self._submit_to_shard = submit
        self._shard_count = shard_count
        self._url_of = url_of
        self._presence_change = presence_change
        self._cut_grace_s = cut_grace_s
        self._max_frame = settings.socket_max_frame_bytes
        self._server: Server | None = None
        # Its own path too: a proxy may forward a node's public URL (socket_public_url) as it is.
        self._paths = {"/ws", f"/ws/{node_id}"}
        self._delivered: OrderedDict[str, int] = OrderedDict()  # conv -> the last seq delivered here
        self._delivered_limit = DELIVERED_CONVS
        self._known_revoked = known_revoked
        self._logins: dict[str, dict[str, Session]] = {}  # family -> its sessions here (session id ->)
        self._rates = FrameRates((settings.socket_sends_per_s, settings.socket_signals_per_s,
                                  settings.socket_controls_per_s), settings.socket_rate_burst_s)
        self._connections: dict[str, int] = {}  # client address -> its connections (TCP, any stage)
        self._pending: dict[str, int] = {}  # client address -> its connections not yet authenticated
        self._renewals: set[asyncio.Task[None]] = set()
        # Draining (issue 20): each session's `move` frame (a new pin elsewhere), sent to every session
        # here and to any that authenticates meanwhile; None while the node takes sessions as usual.
        self._move_frame: Callable[[Session], str] | None = None
        self._catch_up = catch_up  # issue 21: a resume's read (None: resume frames are refused)
        self._catch_ups: set[asyncio.Task[None]] = set()
        self._keepalive = KeepAlive(settings.socket_ping_interval_s, settings.socket_ping_timeout_s)
        self._keepalive_task: asyncio.Task[None] | None = None

    # -- the listening socket -------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> None:
        # Frames are limited to the auth frame's size until the session is authenticated (then to
        # socket_hard_frame_bytes): a connection that has not said who it is costs at most that.
        quiet_websockets()
        self._server = await serve(
            self.handle, host, port, compression=None,
            max_size=self._settings.socket_auth_frame_bytes, process_request=self._admit,
            open_timeout=self._settings.socket_auth_timeout_s, create_connection=_counted_connection(self),
            ping_interval=None,  # `KeepAlive`: one task pings them all (a task each costs memory)
        )
        self._keepalive_task = asyncio.get_running_loop().create_task(self._keepalive.run())

    async def close(self) -> None:
        """Stop listening and close every session with 1001 (going away)."""
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":  # a load balancer's or an operator's check of this node (issue 20)
            body = json.dumps({"status": "ok", "node": self.node_id, "connections": self.connection_count()}).encode()
            return Response(HTTPStatus.OK, "OK", Headers([
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close"),
                ("Cache-Control", "no-store")]), body)
        if request.path.split("?", 1)[0] not in self._paths:
            return connection.respond(HTTPStatus.NOT_FOUND, f"socket endpoint is /ws or /ws/{self.node_id}\n")
        address = _address_of(connection)
        settings = self._settings
        if (0 < settings.socket_max_connections_per_address < self._connections.get(address, 0)
                or 0 < settings.socket_max_pending_per_address < self._pending.get(address, 0)):
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many connections from your address\n")
        return None

    # -- connections per client address (counted from accept to close) ---------------------------

    def _opened(self, connection: ServerConnection) -> None:
        address = _address_of(connection)
        self._connections[address] = self._connections.get(address, 0) + 1
        self._pending[address] = self._pending.get(address, 0) + 1
        self._keepalive.add(connection)

    def _authenticated(self, connection: ServerConnection) -> None:
        if getattr(connection, "imray_pending", False):
            connection.imray_pending = False  # type: ignore[attr-defined]
            _decrement(self._pending, _address_of(connection))

    def _lost(self, connection: ServerConnection) -> None:
        self._keepalive.discard(connection)
        self._authenticated(connection)
        _decrement(self._connections, _address_of(connection))

    # -- what the node reports ------------------------------------------------------------------

    def connection_count(self) -> int:
        return sum(len(s) for s in self.sessions.values())

    def sessions_per_user(self) -> dict[int, int]:
        return {user: len(s) for user, s in self.sessions.items()}

    # -- deliveries from shards -----------------------------------------------------------------

    def deliver(self, blob: bytes) -> int:
        """A shard's deliveries for this node (`wire.pack_deliveries`); the newest message ts in it (0
        if none). A message whose seq is not newer than the last delivered here for its conversation
        was delivered already (a shard re-delivers after a restart, `redelivery`): it is dropped."""
        newest = pushed = 0
        delivered = self._delivered
        for text, users, skip, conv, seq, ts in unpack_deliveries(blob):
            if seq:
                if ts > newest:
                    newest = ts
                if seq <= delivered.get(conv, 0):
                    continue
                delivered[conv] = seq
                delivered.move_to_end(conv)
                if len(delivered) > self._delivered_limit:
                    delivered.popitem(last=False)
            frame = None
            for user in users:
                for session in self.sessions.get(user, {}).values():
                    if session.id != skip:
                        frame = frame or encode_frame(text)  # once per message, however many sessions
                        session.push_frame(frame, conv, seq)
                        pushed += 1
        metrics.count("imray_messages_delivered", pushed, node=self.node_id)
        if newest:  # ms clocks of one cluster's hosts: good to a few ms, which the buckets allow
            metrics.observe("imray_delivery_ms", max(0, time.time() * 1000 - newest), node=self.node_id)
        return newest

    def push(self, users: Iterable[int], frame: str) -> int:
        """One frame (JSON text) to every session here of `users` (issue 18, `adapters.user_push`);
        how many sessions it went to. Not a message: nothing is tracked or re-delivered."""
        encoded = None
        reached = 0
        for user in users:
            for session in self.sessions.get(user, {}).values():
                encoded = encoded or encode_frame(frame)
                session.push_frame(encoded)
                reached += 1
        return reached

    # -- one connection -------------------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:
        admitted = await self._authenticate(ws)
        if admitted is None:
            return
        principal, auth = admitted
        batch = auth.batch
        resume = (auth.resume or auth.seen is not None) and self._catch_up is not None
        if principal.user_id is None:
            return
        user = principal.user_id
        if len(self.sessions.get(user, ())) >= self._settings.socket_max_sessions_per_user:
            await self._refuse(ws, error_frame("too_many_sessions", "too many sessions of this user on this node"),
                               CLOSE_TOO_MANY_SESSIONS, "too many sessions")
            return
        self._authenticated(ws)
        ws.protocol.max_message_size = self._settings.socket_hard_frame_bytes
        session = Session(user, ws, self._settings.socket_send_queue, self._cut_grace_s, principal,
                          FrameBudget(self._rates), batch)
        self._expire_at(session, principal.exp)
        try:
            # Presence first (a message fanned out through presence finds the user here once auth_ok
            # is out), then the session joins and auth_ok leaves in the same loop turn: auth_ok is its
            # first frame, and live delivery starts there (what was committed before is history).
            await self._presence_change(user, 1)
            self.sessions.setdefault(user, {})[session.id] = session
            if principal.family:
                self._logins.setdefault(principal.family, {})[session.id] = session
            ok: dict[str, object] = {"type": "auth_ok", "user_id": user, "node": self.node_id, "session": session.id}
            if batch:  # issue 21's options, echoed when this node takes them
                ok["batch"] = True
            if resume:
                ok["resume"] = True
            if resume and auth.seen is not None:  # auth_ok leaves with the catch-up, live frames after
                session.hold()
                self._catch_up_now(session, dict(auth.seen), encode_frame(dumps(ok)))
            else:
                session.push(dumps(ok))
            if self._move_frame is not None:  # a token pinned here before the drain: move on at once
                session.push(self._move_frame(session))
            if resume and auth.seen is None:  # live frames wait for the resume frame's catch-up
                session.hold()
                session.resume_wait = asyncio.get_running_loop().call_later(
                    self._settings.socket_auth_timeout_s, self._resume_overdue, session)
            if principal.family and self._known_revoked(principal.family):  # revoked while it authenticated
                self.close_logins([principal.family])
            async for raw in ws:
                if batch and isinstance(raw, str) and "\n" in raw:  # several frames, one per line
                    for line in raw.split("\n"):
                        if line:
                            self._on_frame(session, line)
                else:
                    self._on_frame(session, raw)
        except ConnectionClosed:
            pass
        finally:
            if session.expiry is not None:
                session.expiry.cancel()
            if session.resume_wait is not None:
                session.resume_wait.cancel()
            mine = self.sessions.get(user, {})
            mine.pop(session.id, None)
            if not mine:
                self.sessions.pop(user, None)
            if principal.family:
                login = self._logins.get(principal.family, {})
                login.pop(session.id, None)
                if not login:
                    self._logins.pop(principal.family, None)
            gone = self._presence_change(user, -1)
            gone.add_done_callback(_consume_failure)

    # -- draining (issue 20) ----------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._move_frame is not None

    def move_all(self, move_frame: Callable[[Session], str]) -> int:
        """Tell every session to move (`move_frame` makes its frame: a new pin on another node), and
        every session that authenticates from now on; how many were told. Sessions close themselves
        once they have moved; `close_remaining` ends the others."""
        self._move_frame = move_frame
        told = 0
        for sessions in list(self.sessions.values()):
            for session in list(sessions.values()):
                session.push(move_frame(session))
                told += 1
        return told

    def close_remaining(self) -> int:
        """End every session still here (1001, going away): its client asks for a new pin; how many."""
        closed = 0
        for sessions in list(self.sessions.values()):
            for session in list(sessions.values()):
                session.end(error_frame("unavailable", "this socket node was drained: ask for a new pin"),
                            CLOSE_GOING_AWAY, "drained")
                closed += 1
        return closed

    # -- logins revoked, tokens expiring --------------------------------------------------------

    def open_logins(self) -> list[str]:
        """The logins (families) with a session here (issue 18: stamped as seen, `actors.login_stamps`)."""
        return list(self._logins)

    def close_logins(self, families: Iterable[str]) -> int:
        """Close every session here of these revoked logins (4001); how many."""
        closed = 0
        for family in families:
            for session in list(self._logins.get(family, {}).values()):
                session.end(error_frame("unauthorized", "this login was revoked"), CLOSE_UNAUTHORIZED, "revoked")
                closed += 1
        return closed

    def close_retired(self, kids: set[str]) -> int:
        """Close every session here whose token was signed by a key no longer in the ring (4001):
        a retired key's tokens stop working on open sockets too, not only at the next auth. How many."""
        closed = 0
        for mine in list(self.sessions.values()):
            for session in list(mine.values()):
                kid = session.principal.kid if session.principal else None
                if kid is not None and kid not in kids:
                    session.end(error_frame("unauthorized", "the key this token was signed with was retired"),
                                CLOSE_UNAUTHORIZED, "key retired")
                    closed += 1
        return closed

    def _expire_at(self, session: Session, exp: int) -> None:
        """Close `session` once its token expires (python-jose's rule: expired past `exp`'s second)."""
        if session.expiry is not None:
            session.expiry.cancel()
        loop = asyncio.get_running_loop()
        session.expiry = loop.call_at(loop.time() + max(0.0, exp + 1 - time.time()), self._expire, session)

    def _expire(self, session: Session) -> None:
        session.expiry = None
        session.end(error_frame("token_expired", "the access token expired: send a refresh frame before it does"),
                    CLOSE_TOKEN_EXPIRED, "token expired")

    def _renew(self, session: Session, frame: Refresh) -> None:
        task = asyncio.get_running_loop().create_task(self._renewal(session, frame.token))
        self._renewals.add(task)
        task.add_done_callback(self._renewals.discard)

    async def _renewal(self, session: Session, token: str) -> None:
        assert session.principal is not None
        try:
            principal = await self._authenticator.renewal(token, session.principal)
        except DomainError as exc:
            session.push(error_frame("unauthorized", exc.message))
            return
        if session.closing:  # expired, revoked or over its rate while the new token was checked
            return
        session.principal = principal
        self._expire_at(session, principal.exp)
        session.push(dumps({"type": "refresh_ok", "expires_at": principal.exp}))

    async def _authenticate(self, ws: ServerConnection) -> tuple[Principal, Auth] | None:
        """Who this connection speaks for, and its auth frame (the options it asks); None once refused."""
        try:
            # asyncio.timeout, not wait_for: wait_for wraps recv() in a task of its own, and creating
            # it was 8 % of a socket node's CPU while sessions were connecting.
            async with asyncio.timeout(self._settings.socket_auth_timeout_s):
                raw = await ws.recv()
            frame = parse_frame(raw, self._max_frame)
            if not isinstance(frame, Auth):
                raise Unauthorized("the first frame must be auth")
            principal = await self._authenticator.user(frame.token, not_a_user=Unauthorized)
        except (TimeoutError, DomainError) as exc:
            message = "no auth frame in time" if isinstance(exc, TimeoutError) else str(exc)
            await self._refuse(ws, error_frame("unauthorized", message), CLOSE_UNAUTHORIZED, "unauthorized")
            return None
        except ConnectionClosed:
            return None
        if principal.node != self.node_id:
            url = await self._url_of(principal.node) if isinstance(principal.node, str) else None
            hint = "connect to your pinned node" if url else "your node is gone: POST /api/socket/assign"
            await self._refuse(ws, error_frame("wrong_node", hint, socket_url=url), CLOSE_WRONG_NODE, "wrong_node")
            return None
        return principal, frame

    async def _refuse(self, ws: ServerConnection, frame: str, code: int, reason: str) -> None:
        try:
            await ws.send(frame)
            await ws.close(code, reason)
        except ConnectionClosed:
            pass

    # -- frames ---------------------------------------------------------------------------------

    def _on_frame(self, session: Session, raw: str | bytes) -> None:
        if session.closing:  # revoked, expired or over its rate: nothing more it says counts
            return
        try:
            frame = parse_frame(raw, self._max_frame)
        except DomainError as exc:
            if self._within_rate(session, CONTROLS, None):
                client_id = client_id_of(raw) if len(raw) <= self._max_frame else None
                session.push(error_frame(exc.code, exc.message, client_id))
            return
        if not self._within_rate(session, frame_class(frame.type), frame.id if isinstance(frame, Send) else None):
            return
        try:
            if isinstance(frame, Send):
                self._on_send(session, frame)
            elif isinstance(frame, Ping):
                session.push(PONG)
            elif isinstance(frame, Refresh):
                self._renew(session, frame)
            elif isinstance(frame, Resume):
                self._resume(session, frame)
            elif isinstance(frame, Read | Typing):
                parse_conv(frame.conv)
                item: Item = (ReadItem(session.user, session.id, frame.conv, frame.seq) if isinstance(frame, Read)
                              else TypingItem(session.user, session.id, frame.conv))
                self._submit(session, item, None)
            else:  # a second auth frame
                raise BadRequest("already authenticated")
        except DomainError as exc:
            client_id = client_id_of(raw) if len(raw) <= self._max_frame else None
            session.push(error_frame(exc.code, exc.message, client_id))

    # -- catch-up over the socket (issue 21) -----------------------------------------------------

    def _resume(self, session: Session, frame: Resume) -> None:
        if session.resume_wait is None or self._catch_up is None:
            raise BadRequest("resume comes once, as the first frame after auth_ok, from a session that "
                             "authenticated with resume: true")
        session.resume_wait.cancel()
        session.resume_wait = None
        self._catch_up_now(session, dict(frame.seen))

    def _catch_up_now(self, session: Session, seen: dict[str, int], first: bytes | None = None) -> None:
        """Read what `seen` missed and release the held session with it; `first` (auth_ok when the
        auth frame named `seen`) goes before it all."""
        assert self._catch_up is not None
        task = asyncio.get_running_loop().create_task(self._resumed(session, self._catch_up, seen, first))
        self._catch_ups.add(task)
        task.add_done_callback(self._catch_ups.discard)

    async def _resumed(self, session: Session, catch_up: CatchUpRead, seen: dict[str, int],
                       first: bytes | None) -> None:
        lead = [first] if first is not None else []
        try:
            resumed = await asyncio.wait_for(catch_up(session.user, seen), self._settings.socket_catch_up_timeout_s)
        except Exception as exc:  # the database away or stalled: live goes on; the client reads history instead
            log.warning("catch-up failed: %r", exc, extra={"node": self.node_id, "user_id": session.user})
            failed = error_frame("internal", "catch-up failed: read what you missed from history")
            session.release([*lead, encode_frame(failed)], {})  # the word why first, then what was held
            return
        session.release([*lead, *map(encode_frame, resumed.frames), encode_frame(resumed.summary())],
                        resumed.caught)

    def _resume_overdue(self, session: Session) -> None:
        """No resume frame in time: live frames go on, nothing is caught up."""
        session.resume_wait = None
        if session.held is not None:  # the word why first, then what was held
            session.release([encode_frame(error_frame("bad_request", "no resume frame in time: read what you "
                                                                     "missed from history"))], {})

    def _within_rate(self, session: Session, kind: int, client_id: str | None) -> bool:
        """Whether to act on a frame of this class: over the rate it is answered `rate_limited`, and
        a client that goes on through another whole burst is closed (4029)."""
        verdict = session.budget.take(self._rates, kind) if session.budget is not None else Verdict.PASS
        if verdict is Verdict.PASS:
            return True
        metrics.count("imray_rate_limited", 1, where="socket")
        if verdict is Verdict.LIMITED:
            session.push(error_frame("rate_limited", "too many frames: slow down", client_id))
        else:
            session.end(error_frame("rate_limited", "too many frames after rate_limited: closing", client_id),
                        CLOSE_RATE_LIMITED, "rate limited")
        return False

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
        item = SendItem(session.user, session.id, frame.id, frame.conv, frame.kind, frame.body, frame.file_id,
                        frame.reply_to or 0, tuple(dict.fromkeys(frame.mentions)))
        self._submit(session, item, frame.id)

    def _submit(self, session: Session, item: Item, client_id: str | None) -> None:
        future = self._submit_to_shard(shard_of(item.conv, self._shard_count), item)
        future.add_done_callback(lambda f: self._answer(session, client_id, f))

    def _answer(self, session: Session, client_id: str | None, future: asyncio.Future[Outcome]) -> None:
        if client_id is not None:
            session.in_flight -= 1
        if future.cancelled() or future.exception() is not None:
            if not future.cancelled():
                log.warning("shard call failed: %r", future.exception(),
                            extra={"node": self.node_id, "user_id": session.user})
            session.push(error_frame(*NOT_STORED, client_id))
            return
        outcome = future.result()
        if outcome.error is not None:
            session.push(error_frame(outcome.error[0], outcome.error[1], client_id))
        elif outcome.ack is not None:
            session.push(outcome.ack)  # encoded once, by the shard's domain


def _address_of(connection: ServerConnection) -> str:
    return getattr(connection, "imray_address", "")


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def _counted_connection(server: SocketServer) -> type[ServerConnection]:
    """Connections that `server` counts against their client's address, from accept to close."""

    class CountedConnection(ServerConnection):
        imray_address = ""
        imray_pending = False

        def connection_made(self, transport: Any) -> None:
            peer = transport.get_extra_info("peername")
            self.imray_address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
            self.imray_pending = True
            super().connection_made(transport)
            server._opened(self)

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            server._lost(self)

    return CountedConnection


def _consume_failure(future: asyncio.Future[None]) -> None:
    """A presence change nobody waits for: its failure is the presence batcher's to log."""
    if not future.cancelled():
        future.exception()
