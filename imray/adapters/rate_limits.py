"""Per-caller request rates: fixed one-minute windows, per process or shared in Redis."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class RateLimit(Protocol):
    """Counts a caller's requests; `check` is False once it is over `per_minute` this minute."""

    per_minute: int

    async def check(self, caller: str) -> bool: ...


class RateLimiter:
    """Fixed one-minute windows per caller; bounded memory (oldest callers forgotten first).

    `clock`: wall-clock seconds; a window is one of its whole minutes, as in SharedRateLimiter's keys."""

    def __init__(self, per_minute: int, max_callers: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute
        self._counts: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._max = max_callers
        self._clock = clock

    async def check(self, caller: str) -> bool:
        return self.allow(caller)

    def allow(self, caller: str) -> bool:
        window = int(self._clock() // 60)
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
