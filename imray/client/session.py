"""ImrayClient: one login's socket, its gap-free ordered streams, pending sends and reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from imray.client.errors import ImrayError, ImrayHttpError
from imray.client.events import (
    EVENT_TYPES,
    Ack,
    ErrorEvent,
    Event,
    Message,
    StateChange,
    parse_event,
)
from imray.client.http import HISTORY_PAGE, HttpApi, Tokens
from imray.client.streams import Streams

log = logging.getLogger("imray.client")
T = TypeVar("T")
Handler = Callable[[Any], Any]  # called with the event; a coroutine it returns is awaited

RETRIED_SEND_ERRORS = ("internal", "rate_limited")  # a send that got these goes again, after a backoff
MAX_SEND_RETRIES = 5
FATAL_CLOSES = {4001: "unauthorized", 4009: "too_many_sessions"}
CONNECTION_ERRORS = ("unauthorized", "token_expired", "wrong_node", "too_many_sessions")
RATE_LIMITED_WAIT_S = 5.0  # the least wait after a 4029 close
MAX_RESUME_CONVS = 1000  # conversations one resume frame may name; the rest catch up through HTTP
RESUME_FAILED = ("bad_request", "internal")  # an error frame with no id instead of resume_ok: HTTP catch-up
# The server's default cap on frames before auth_ok (`socket_auth_frame_bytes`): an auth frame that
# fits carries `seen` itself (one round trip); a bigger one announces the resume frame instead.
AUTH_FRAME_BYTES = 4096
TOO_BIG = 1009  # the close of a frame over the server's cap

Resume = Literal["", "auth", "frame"]  # no resume; `seen` in the auth frame; a resume frame after auth_ok
_Authed = tuple[list[Any], Resume]  # the frames that answered auth, and how it asked for a resume


@dataclass
class _Pending:
    frame: dict[str, Any]
    future: asyncio.Future[Ack]
    retries: int = 0


@dataclass
class _Outcome:
    """How one socket session ended: its close code, the error frame that came before, if any."""

    code: int | None
    error: dict[str, Any] | None
    authenticated: bool


class _EventStream:
    """`async for event in client.events()`: every event from the call on, until the client closes."""

    def __init__(self, client: ImrayClient) -> None:
        self._client = client
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        if client.finished:
            self._queue.put_nowait(None)
        else:
            client._queues.append(self._queue)

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> Event:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event


class ImrayClient:
    """One login to imray: its tokens, one socket, the per-conversation streams and pending sends.

    Every message of every conversation the user is in reaches the application once, in seq order,
    with no gap, as a `message` event (the user's own sends included), across reconnects, node loss,
    drains and token renewal. See docs/sdk.md for the full contract::

        client = await ImrayClient.login("http://127.0.0.1:8000", "ann", "a good password")
        client.on("message", lambda m: print(m.conv, m.seq, m.from_, m.body))
        await client.connect()
        ack = await client.send("d:1:2", "hello")
        ...
        await client.close()

    Timings are options so tests can be quick: `gap_wait` (s before a gap is filled from history),
    `renew_at` (the fraction of `expires_in` at which the access token is renewed), `backoff_base`
    and `backoff_cap` (full-jitter reconnect backoff), `ping_interval` (the SDK's own ping; no pong
    within it and the socket is taken as lost), `open_timeout` (WebSocket open and `auth_ok`).
    """

    def __init__(self, base_url: str, tokens: Tokens, *, api: HttpApi | None = None, gap_wait: float = 0.5,
                 renew_at: float = 0.8, backoff_base: float = 0.2, backoff_cap: float = 10.0,
                 ping_interval: float = 20.0, open_timeout: float = 20.0) -> None:
        self.api = api or HttpApi(base_url)
        self._own_api = api is None
        self.user_id = tokens.user_id
        self.access_token = tokens.access_token
        self.refresh_token = tokens.refresh_token
        self.socket_url = tokens.socket_url
        self.socket_node = tokens.socket_node
        self.expires_in = tokens.expires_in
        self.gap_wait = gap_wait
        self.renew_at = renew_at
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.ping_interval = ping_interval
        self.open_timeout = open_timeout
        self.state = "closed"  # until connect(); then connecting / connected / reconnecting / closed
        self.finished = False  # closed for good: close(), logout() or a fatal close
        self.streams = Streams()
        self._token_time = time.monotonic()
        self._token_generation = 0
        self._tokens_changed = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        self._handlers: dict[str, list[Handler]] = {}
        self._queues: list[asyncio.Queue[Event | None]] = []
        self._dispatch: asyncio.Queue[tuple[list[Handler], Event] | None] = asyncio.Queue()
        self._pending: dict[str, _Pending] = {}
        self._ws: ClientConnection | None = None
        self._ready: asyncio.Future[None] | None = None
        self._moving = False
        self._handover: tuple[ClientConnection, _Authed] | None = None  # a socket a `move` opened, authenticated
        self._recent: dict[str, None] = {}  # conversations by last activity, most recent last
        self._refused: set[str] = set()  # refused by a resume (left...): left out of the next ones
        self._resuming: tuple[ClientConnection, asyncio.Future[dict[str, Any] | None]] | None = None
        self._seen_in_auth = True  # off once a server closed an auth frame carrying `seen` as too big
        self._pong = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._gap_tasks: dict[str, asyncio.Task[None]] = {}
        self._run_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None

    # Construction

    @classmethod
    async def login(cls, base_url: str, username: str, password: str, **options: Any) -> ImrayClient:
        """Log in with the password grant (not connected yet: call `connect()`)."""
        api = HttpApi(base_url)
        try:
            tokens = await api.login(username, password)
        except BaseException:
            await api.aclose()
            raise
        client = cls(base_url, tokens, api=api, **options)
        client._own_api = True
        return client

    @classmethod
    def from_tokens(cls, base_url: str, token_response: Tokens | dict[str, Any], **options: Any) -> ImrayClient:
        """A client for a login made elsewhere (a token-endpoint answer, as a dict or `Tokens`)."""
        tokens = token_response if isinstance(token_response, Tokens) else Tokens.from_response(token_response)
        return cls(base_url, tokens, **options)

    # The application's side

    @property
    def seen(self) -> dict[str, int]:
        """conv -> the last seq delivered to the application (store it to resume with `connect(seen)`)."""
        return dict(self.streams.seen)

    def on(self, event_type: str, handler: Handler) -> Callable[[], None]:
        """Call `handler(event)` for each event of `event_type` (docs/sdk.md "Events"), in order; a
        coroutine it returns is awaited before the next event. Returns a function that unsubscribes."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}: one of {', '.join(EVENT_TYPES)}")
        self._handlers.setdefault(event_type, []).append(handler)
        return lambda: self._handlers[event_type].remove(handler)

    def events(self) -> _EventStream:
        """Every event from now on, as an async iterator that ends when the client closes."""
        return _EventStream(self)

    async def connect(self, seen: dict[str, int] | None = None, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Open the socket and authenticate; returns at `auth_ok`.

        `seen` (conv -> last seq the application has) resumes from the application's storage; without
        it, everything up to each conversation's current `last_seq` counts as seen. Raises
        `ImrayError` when the login is refused for good, or `timeout` after `timeout` seconds without
        `auth_ok` (the client is closed then)."""
        if self.finished or self._run_task is not None:
            raise ImrayError("closed" if self.finished else "bad_request", "connect() once per client")
        if seen is None:
            items = await self._authorized(self.api.conversations)
            seen = {item["conv"]: int(item["last_seq"]) for item in reversed(items)}  # newest first: oldest first
        self.streams = Streams(seen)
        for conv in seen:
            self._touch(conv)
        self._ready = asyncio.get_running_loop().create_future()
        self._set_state("connecting")
        self._dispatch_task = self._spawn(self._dispatcher())
        self._spawn(self._renew_loop())
        self._run_task = self._spawn(self._run())
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            await self._shutdown(ImrayError("timeout", f"no auth_ok within {timeout} s"))
            raise ImrayError("timeout", f"no auth_ok within {timeout} s") from None

    async def send(self, conv: str, body: str = "", kind: str = "text", file_id: str | None = None,
                   reply_to: int | None = None, mentions: list[int] | None = None, id: str | None = None) -> Ack:
        """Send a message; returns its `Ack` once stored. Kept and sent again (same id) across
        reconnects; raises `ImrayError` for `forbidden`, `not_found`, `bad_request`, `too_large`, or
        when the client closes first."""
        if self.finished:
            raise ImrayError("closed", "the client is closed")
        client_id = id or uuid.uuid4().hex
        frame: dict[str, Any] = {"type": "send", "id": client_id, "conv": conv, "kind": kind, "body": body}
        for key, value in (("file_id", file_id), ("reply_to", reply_to), ("mentions", mentions)):
            if value is not None:
                frame[key] = value
        pending = self._pending.get(client_id)
        if pending is None:
            pending = self._pending[client_id] = _Pending(frame, asyncio.get_running_loop().create_future())
            if self.state == "connected":
                await self._send_frame(frame)
        try:
            return await asyncio.shield(pending.future)
        except asyncio.CancelledError:
            self._pending.pop(client_id, None)
            raise

    async def read(self, conv: str, seq: int) -> None:
        """Move your read cursor in `conv` to `seq` (dropped while disconnected)."""
        await self._send_frame({"type": "read", "conv": conv, "seq": seq})

    async def typing(self, conv: str) -> None:
        """Tell the other members you are typing in `conv` (dropped while disconnected)."""
        await self._send_frame({"type": "typing", "conv": conv})

    async def close(self) -> None:
        """Close the socket and stop reconnecting; pending sends fail with `ImrayError("closed")`."""
        await self._shutdown(None)

    async def logout(self) -> None:
        """Close, then revoke the login (RFC 7009): its tokens stop working everywhere."""
        refresh_token, own_api = self.refresh_token, self._own_api
        self._own_api = False  # still needed for the revocation
        await self._shutdown(None)
        try:
            await self.api.revoke(refresh_token)
        finally:
            if own_api:
                await self.api.aclose()

    # Events

    def _emit(self, event: Event) -> None:
        for queue in self._queues:
            queue.put_nowait(event)
        handlers = self._handlers.get(event.type)
        if handlers:
            self._dispatch.put_nowait((list(handlers), event))

    async def _dispatcher(self) -> None:
        while (item := await self._dispatch.get()) is not None:
            handlers, event = item
            for handler in handlers:
                try:
                    result = handler(event)
                    if isinstance(result, Awaitable):
                        await result
                except Exception:
                    log.exception("an imray event handler failed on %r", event)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._emit(StateChange(state))

    def _spawn(self, coro: Awaitable[T]) -> asyncio.Task[T]:
        task: asyncio.Task[T] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # Tokens

    def _take_token(self, access_token: str, expires_in: int) -> None:
        self.access_token, self.expires_in = access_token, expires_in
        self._token_time = time.monotonic()
        self._token_generation += 1
        self._tokens_changed.set()

    async def _refresh_tokens(self, generation: int) -> None:
        """The refresh grant, once for a given token generation (a refresh token works once: two
        concurrent uses would revoke the login). `invalid_grant` is fatal (ImrayError)."""
        async with self._refresh_lock:
            if generation != self._token_generation:
                return  # someone renewed meanwhile
            try:
                tokens = await self.api.refresh(self.refresh_token, self.socket_node)
            except ImrayHttpError as exc:
                if exc.status in (400, 401):
                    raise ImrayError("unauthorized", f"the login cannot be renewed: {exc.error or exc.detail}") from exc
                raise
            self.refresh_token = tokens.refresh_token
            self.socket_url, self.socket_node = tokens.socket_url, tokens.socket_node
            self._take_token(tokens.access_token, tokens.expires_in)

    async def _authorized(self, call: Callable[[str], Awaitable[T]]) -> T:
        """`call(access_token)`, renewing the token once if it was refused with 401."""
        generation = self._token_generation
        try:
            return await call(self.access_token)
        except ImrayHttpError as exc:
            if exc.status != 401:
                raise
        await self._refresh_tokens(generation)
        return await call(self.access_token)

    async def _renew_loop(self) -> None:
        attempt = 0
        while not self.finished:
            self._tokens_changed.clear()
            due = self._token_time + self.expires_in * self.renew_at - time.monotonic()
            if due > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._tokens_changed.wait(), due)
                continue  # the tokens changed (or the time came): compute again
            try:
                node = self.socket_node
                await self._refresh_tokens(self._token_generation)
            except (httpx.HTTPError, ImrayHttpError) as exc:
                log.info("token renewal failed (%s): retrying", exc)
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            except ImrayError as exc:
                self._spawn(self._shutdown(exc))
                return
            attempt = 0
            if self.socket_node == node:  # still pinned to the node this socket is on
                await self._send_frame({"type": "refresh", "token": self.access_token})

    # The connection loop

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** min(attempt, 30)))

    async def _run(self) -> None:
        attempt = 0
        unreachable = 0  # failed opens of the pinned URL in a row
        just_refreshed = False  # a 4001 right after a refresh grant is final
        try:
            while not self.finished:
                try:
                    ws = await self._open()
                except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                    log.info("socket open to %s failed: %s", self.socket_url, exc)
                    unreachable += 1
                    if unreachable >= 2:
                        unreachable = 0
                        await self._try(self._reassign())
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                unreachable = 0
                outcome = await self._session(ws)
                while self._handover is not None and not self.finished:  # a move: the new socket goes on
                    (ws, first), self._handover = self._handover, None
                    self._moving = False
                    outcome = await self._session(ws, first)
                if self.finished:
                    return
                if outcome.authenticated:
                    attempt, just_refreshed = 0, False
                self._set_state("reconnecting")
                if self._moving:  # drain: straight to the node the move named
                    self._moving = False
                    continue
                # The close code decides (the server sends it after the error frame that explains it).
                code, error = outcome.code, outcome.error or {}
                reason = str(error.get("code", ""))
                if code == 4003:
                    if reason == "wrong_node" and error.get("socket_url"):
                        self.socket_url = str(error["socket_url"])
                    else:
                        await self._try(self._reassign())
                elif code == 4002:
                    await self._try(self._refresh_tokens(self._token_generation))
                    just_refreshed = True
                    continue
                elif code in FATAL_CLOSES:
                    if code == 4009 or just_refreshed:
                        raise ImrayError(FATAL_CLOSES[code], str(error.get("message", "")))
                    # An expired access token is also refused with 4001: a refresh grant tells a
                    # revoked login (invalid_grant: fatal) from a stale token.
                    try:
                        await self._try(self._refresh_tokens(self._token_generation))
                    except ImrayError as exc:
                        raise ImrayError(exc.code, str(error.get("message") or exc.message)) from exc
                    just_refreshed = True
                    continue
                elif code == 4029:
                    await asyncio.sleep(max(RATE_LIMITED_WAIT_S, self._backoff(attempt)))
                    attempt += 1
                    continue
                just_refreshed = False
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
        except ImrayError as exc:
            self._spawn(self._shutdown(exc))

    async def _try(self, step: Awaitable[None]) -> None:
        """A step of the reconnect path; a network or server error leaves it to the next attempt."""
        try:
            await step
        except (httpx.HTTPError, ImrayHttpError) as exc:
            log.info("reconnect step failed: %s", exc)

    async def _reassign(self) -> None:
        assignment = await self._authorized(self.api.assign)
        self.socket_url, self.socket_node = assignment.socket_url, assignment.socket_node
        self._take_token(assignment.access_token, assignment.expires_in)

    async def _open(self) -> ClientConnection:
        return await connect(self.socket_url, compression=None, max_size=2**22, open_timeout=self.open_timeout,
                             close_timeout=2)

    async def _session(self, ws: ClientConnection, authed: _Authed | None = None) -> _Outcome:
        """Authenticate on `ws` (unless `authed`, its answer to auth, is given) and read it until it closes."""
        error: dict[str, Any] | None = None
        authenticated = False
        pinger: asyncio.Task[None] | None = None
        resumed: asyncio.Future[dict[str, Any] | None] | None = None
        try:
            if authed is None:
                authed = await self._authenticate(ws)
            frames, resume = authed
            first, packed = frames[0] if frames else None, frames[1:]  # frames that came with auth_ok
            if not isinstance(first, dict) or first.get("type") != "auth_ok":
                error = first if isinstance(first, dict) and first.get("type") == "error" else \
                    {"code": "bad_frame", "message": f"expected auth_ok, got {str(first)[:200]}"}
                if error["code"] == "bad_frame":
                    self._emit(ErrorEvent("bad_frame", error["message"]))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ws.wait_closed(), 5)
                return _Outcome(ws.close_code, error, False)
            authenticated = True
            self._ws = ws
            self._set_state("connected")
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            pinger = self._spawn(self._ping(ws))
            resend = [orjson.dumps(pending.frame).decode() for pending in list(self._pending.values())]
            if resume:  # the catch-up comes before anything live: with auth_ok, or after the resume frame
                resumed = asyncio.get_running_loop().create_future()
                self._resuming = (ws, resumed)
            if resume == "frame":  # it must come first (issue 21)
                resend.insert(0, orjson.dumps({"type": "resume", "seen": self._resume_seen()}).decode())
            if resend and first.get("batch"):  # the server reads several frames per message
                await ws.send("\n".join(resend))
            else:
                for frame_text in resend:
                    await ws.send(frame_text)
            self._spawn(self._catch_up(ws, resumed))
            for frame in packed:
                error = await self._take(ws, frame) or error
            async for raw in ws:
                for frame in _frames(raw):
                    error = await self._take(ws, frame) or error
        except (ConnectionClosed, OSError):
            if not authenticated and ws.close_code == TOO_BIG and self._seen_in_auth:
                log.info("the server refused an auth frame with seen as too big: resume frames from now on")
                self._seen_in_auth = False
        except (TimeoutError, ValueError) as exc:  # no answer to auth, or garbage instead of JSON
            self._emit(ErrorEvent("bad_frame", f"the server sent what imray never does: {exc}"[:300]))
            error = {"code": "bad_frame"}
        finally:
            self._ws = None
            if resumed is not None and not resumed.done():
                resumed.set_result(None)  # the socket is gone: the next one catches up
            if self._resuming is not None and self._resuming[0] is ws:
                self._resuming = None
            if pinger is not None:
                pinger.cancel()
            await ws.close()
        return _Outcome(ws.close_code, error, authenticated)

    async def _take(self, ws: ClientConnection, frame: Any) -> dict[str, Any] | None:
        """Act on one frame from the server; an error frame not about a pending send is returned (the
        reason a close that follows it gives)."""
        if not isinstance(frame, dict):
            return None
        await self._on_frame(ws, frame)
        return frame if frame.get("type") == "error" and frame.get("id") not in self._pending else None

    async def _authenticate(self, ws: ClientConnection) -> _Authed:
        """Send auth, announcing batched frames and, with conversations to name, a resume (issue 21):
        `seen` in the auth frame when it fits under the server's pre-auth cap, else a resume frame
        after auth_ok. Return the frames of the first message back (auth_ok, and what the server
        packed with it: the catch-up, a `move`...) and how the resume was asked."""
        seen = self._resume_seen()
        auth: dict[str, Any] = {"type": "auth", "token": self.access_token, "batch": True}
        resume: Resume = ""
        if seen:
            text = orjson.dumps({**auth, "seen": seen}).decode()
            if self._seen_in_auth and len(text.encode()) <= AUTH_FRAME_BYTES:
                resume = "auth"
            else:
                resume, text = "frame", orjson.dumps({**auth, "resume": True}).decode()
        else:
            text = orjson.dumps(auth).decode()
        await ws.send(text)
        return _frames(await asyncio.wait_for(ws.recv(), self.open_timeout)), resume

    def _resume_seen(self) -> dict[str, int]:
        """The resume frame's `seen`: the most recently active conversations the client knows (at most
        MAX_RESUME_CONVS), except those a resume refused."""
        named: dict[str, int] = {}
        for conv in reversed(self._recent):
            if len(named) == MAX_RESUME_CONVS:
                break
            if conv in self.streams.seen and conv not in self._refused:
                named[conv] = self.streams.seen[conv]
        return named

    def _touch(self, conv: str) -> None:
        self._recent.pop(conv, None)
        self._recent[conv] = None

    async def _follow_move(self, old: ClientConnection) -> None:
        """Open the socket a `move` named and authenticate there, then close the old one (the stream
        drops what both deliver twice); if the new one fails, the loop reconnects as after a loss."""
        new: ClientConnection | None = None
        try:
            new = await self._open()
            self._handover = (new, await self._authenticate(new))
            new = None
        except (OSError, TimeoutError, ValueError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            log.info("following a move to %s failed: %s", self.socket_url, exc)
        finally:
            if new is not None:
                await new.close()
            await old.close()

    async def _ping(self, ws: ClientConnection) -> None:
        """The SDK's own liveness check: no `pong` within `ping_interval` and the socket is dropped."""
        while True:
            await asyncio.sleep(self.ping_interval)
            self._pong.clear()
            await ws.send('{"type":"ping"}')
            try:
                await asyncio.wait_for(self._pong.wait(), self.ping_interval)
            except TimeoutError:
                log.info("no pong within %s s: reconnecting", self.ping_interval)
                ws.transport.abort()
                return

    async def _on_frame(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        resuming = self._resuming is not None and self._resuming[0] is ws
        if resuming and (kind == "resume_ok" or (kind == "error" and frame.get("id") is None
                                                 and frame.get("code") in RESUME_FAILED)):
            assert self._resuming is not None
            future, self._resuming = self._resuming[1], None
            if not future.done():
                future.set_result(frame if kind == "resume_ok" else None)
            if kind == "error":
                log.info("catch-up over the socket failed (%s): reading history", frame.get("message"))
            return
        if kind == "msg":
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self._offer(Message.from_frame(frame))
        elif kind == "ack":
            self._on_ack(frame)
        elif kind == "error":
            self._on_error(frame)
        elif kind == "pong":
            self._pong.set()
        elif kind == "move":
            self.socket_url, self.socket_node = str(frame["socket_url"]), str(frame["socket_node"])
            self._take_token(str(frame["access_token"]), int(frame.get("expires_in", self.expires_in)))
            self._moving = True
            self._spawn(self._follow_move(ws))
        else:
            self._emit(parse_event(frame))

    def _on_ack(self, frame: dict[str, Any]) -> None:
        pending = self._pending.pop(str(frame.get("id")), None)
        if pending is None:
            return
        ack = Ack.from_frame(frame)
        sent = pending.frame
        own: dict[str, Any] = {"type": "msg", "conv": ack.conv, "seq": ack.seq, "msg_id": ack.msg_id,
                               "from": self.user_id, "kind": sent["kind"], "body": sent["body"], "ts": ack.ts,
                               **{k: sent[k] for k in ("file_id", "reply_to", "mentions") if k in sent}}
        self._offer(Message.from_frame(own))
        if not pending.future.done():
            pending.future.set_result(ack)

    def _on_error(self, frame: dict[str, Any]) -> None:
        code, message = str(frame.get("code", "")), str(frame.get("message", ""))
        pending = self._pending.get(str(frame.get("id")))
        if pending is None:
            if code not in CONNECTION_ERRORS:  # those the reconnect logic acts on (and reports if fatal)
                self._emit(ErrorEvent(code, message))
            return
        if code in RETRIED_SEND_ERRORS and pending.retries < MAX_SEND_RETRIES:
            pending.retries += 1
            self._spawn(self._send_later(pending, self._backoff(pending.retries) + 0.05))
            return
        del self._pending[pending.frame["id"]]
        if not pending.future.done():
            pending.future.set_exception(ImrayError(code, message))

    async def _send_later(self, pending: _Pending, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._pending.get(pending.frame["id"]) is pending:
            await self._send_frame(pending.frame)

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(orjson.dumps(frame).decode())

    # Ordering and catching up

    def _offer(self, message: Message) -> None:
        conv = message.conv
        for ready in self.streams.offer(message, time.monotonic()):
            self._emit(ready)
            self._refused.discard(conv)  # readable again (a member again)
        self._touch(conv)
        if self.streams.holding(conv) and conv not in self._gap_tasks:
            self._gap_tasks[conv] = self._spawn(self._watch_gap(conv))

    async def _fill(self, conv: str, upto: int | None = None) -> None:
        """Read `conv`'s history after the last seq delivered (up to `upto`) into the stream."""
        after = self.streams.last(conv)
        while upto is None or after < upto:
            page = await self._authorized(functools.partial(self._page, conv, after))
            for frame in page:
                self._offer(Message.from_frame(frame))
            if len(page) < HISTORY_PAGE:
                return
            after = int(page[-1]["seq"])

    async def _page(self, conv: str, after: int, token: str) -> list[dict[str, Any]]:
        return await self.api.history(token, conv, after_seq=after, limit=HISTORY_PAGE)

    async def _watch_gap(self, conv: str) -> None:
        """Fill `conv`'s gap from history once live frames have left it open for `gap_wait`."""
        attempt = 0
        try:
            while self.streams.holding(conv) and not self.finished:
                await asyncio.sleep(self.gap_wait / 2)
                if not any(gap.conv == conv for gap in self.streams.gaps_due(time.monotonic(), self.gap_wait)):
                    continue
                try:
                    gap = self.streams.gap(conv)
                    await self._fill(conv, gap.before_seq - 1 if gap else None)
                    attempt = 0
                except ImrayHttpError as exc:
                    if exc.status in (403, 404):  # no longer ours to read
                        self._emit(ErrorEvent("gap_unfilled", f"{conv}: {exc}"))
                        return
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
                except httpx.HTTPError:
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
        finally:
            self._gap_tasks.pop(conv, None)

    async def _catch_up(self, ws: ClientConnection, resumed: asyncio.Future[dict[str, Any] | None] | None) -> None:
        """After `auth_ok`: what the resume frame named came over the socket before `resume_ok`; then
        the conversation list is read, and every conversation whose `last_seq` is past what was
        delivered (one the resume did not name or truncated, or every one if the resume failed) is read
        from history; live frames meanwhile wait in the stream behind any gap they leave."""
        if resumed is not None:
            try:
                summary = await asyncio.wait_for(asyncio.shield(resumed), self.open_timeout)
            except TimeoutError:
                summary = None  # no answer: history, as if it had failed
            if summary is not None:
                refused = summary.get("refused")
                for conv in refused if isinstance(refused, dict) else ():
                    self._refused.add(str(conv))  # not ours to read now: as history's 403/404
                    for ready in self.streams.release(str(conv)):
                        self._emit(ready)
        attempt = 0
        while not self.finished and ws.close_code is None:
            try:
                for item in await self._authorized(self.api.conversations):
                    conv, last = str(item["conv"]), int(item["last_seq"])
                    if last > self.streams.last(conv):
                        await self._fill(conv, last)
                return
            except (httpx.HTTPError, ImrayHttpError) as exc:
                log.info("catch-up failed (%s): trying again", exc)
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
            except ImrayError as exc:
                self._spawn(self._shutdown(exc))
                return

    # Closing

    async def _shutdown(self, error: ImrayError | None) -> None:
        if self.finished:
            return
        self.finished = True
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current and task is not self._dispatch_task:  # the dispatcher delivers the last events
                task.cancel()
        for ws in (self._ws, self._handover[0] if self._handover else None):
            if ws is not None:
                await ws.close()
        if error is not None:
            self._emit(ErrorEvent(error.code, error.message))
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error or ImrayError("closed", "the client was closed"))
                pending.future.exception()  # retrieved: no "never retrieved" warning if nobody awaits it
        self._pending.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error or ImrayError("closed", "the client was closed"))
            self._ready.exception()
        self._set_state("closed")
        for queue in self._queues:
            queue.put_nowait(None)
        self._dispatch.put_nowait(None)
        if self._own_api:
            await self.api.aclose()


def _frames(raw: str | bytes) -> list[Any]:
    """The frames of one WebSocket message: one JSON value per line (a batching server packs several;
    JSON strings escape line breaks, so a line is always a whole frame). ValueError for anything else."""
    if not isinstance(raw, str):
        raise ValueError("a binary message: imray sends JSON text")
    return [orjson.loads(line) for line in raw.split("\n") if line]
