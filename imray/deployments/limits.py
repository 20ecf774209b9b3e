"""Edge limits of the gateway: request body size and per-caller request rate."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from inside the app's body read; FastAPI turns an HTTPException into its response."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, limit: Callable[[str], int]) -> None:
        self.app, self._limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _reply(send, 413, f"request body is larger than {limit} bytes")
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _reply(send, 413, f"request body is larger than {limit} bytes")


async def _reply(send: Send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """Fixed one-minute windows per caller; bounded memory (oldest callers forgotten first)."""

    def __init__(self, per_minute: int, max_callers: int = 100_000) -> None:
        self.per_minute = per_minute
        self._counts: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._max = max_callers

    async def check(self, caller: str) -> bool:
        return self.allow(caller)

    def allow(self, caller: str) -> bool:
        window = int(time.time() // 60)
        start, count = self._counts.get(caller, (window, 0))
        if start != window:
            count = 0
        self._counts[caller] = (window, count + 1)
        self._counts.move_to_end(caller)
        if len(self._counts) > self._max:
            self._counts.popitem(last=False)
        return count < self.per_minute


class SharedRateLimiter:
    """The same fixed windows in Redis, shared by every gateway replica.

    If Redis does not answer, each replica falls back to its own counters: limits get looser for
    a while, requests are never refused because the counter store is down.
    """

    def __init__(self, url: str, per_minute: int) -> None:
        import redis.asyncio as aioredis

        self.per_minute = per_minute
        self._redis = aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self._local = RateLimiter(per_minute)

    async def check(self, caller: str) -> bool:
        key = f"imray:rate:{caller}:{int(time.time() // 60)}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.expire(key, 120)
                count, _ = await pipe.execute()
        except Exception:
            return self._local.allow(caller)
        return count <= self.per_minute
