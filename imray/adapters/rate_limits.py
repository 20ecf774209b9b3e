"""Per-caller request rates and failed-login counts: fixed windows, per process or shared (Redis, an actor)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from imray.actors.batching import Batcher

log = logging.getLogger("imray.rate_limits")


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

    The checks a replica makes together go to Redis as one pipeline (one INCRBY and one EXPIRE per
    caller), one pipeline in flight: a history read paid a round trip of its own and ~8 % of the
    gateway's CPU for it on MariaDB. Each check gets the count it would have had alone (INCR in turn).
    If Redis does not answer, each replica falls back to its own counters: limits get looser for
    a while, requests are never refused because the counter store is down.
    """

    def __init__(self, url: str, per_minute: int) -> None:
        import redis.asyncio as aioredis

        self.per_minute = per_minute
        self._redis = aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self._local = RateLimiter(per_minute)
        self._counts: Batcher[int, str, int] = Batcher(self._incr)  # by window

    async def check(self, caller: str) -> bool:
        try:
            count = await self._counts.submit(int(time.time() // 60), caller)
        except Exception:
            return self._local.allow(caller)
        return count <= self.per_minute

    async def _incr(self, window: int, callers: list[str]) -> list[int]:
        checks = Counter(callers)
        async with self._redis.pipeline(transaction=False) as pipe:
            for caller, n in checks.items():
                key = f"imray:rate:{caller}:{window}"
                pipe.incrby(key, n)
                pipe.expire(key, 120)
            replies = await pipe.execute()
        before = {caller: total - checks[caller] for caller, total in zip(checks, replies[::2], strict=True)}
        counts = []
        for caller in callers:
            before[caller] += 1
            counts.append(before[caller])
        return counts


# -- failed logins (`domain.login_guard.FailureCounts`) ---------------------------------------------

class LocalFailureCounts:
    """Failed logins per (key, window) in this process; bounded memory (oldest entries forgotten first)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._counts: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._max = max_entries

    async def counts(self, keys: Sequence[str], window: int) -> list[int]:
        return self.get(keys, window)

    async def add(self, keys: Sequence[str], window: int, keep_s: int) -> None:
        self.bump(keys, window)

    def get(self, keys: Sequence[str], window: int) -> list[int]:
        return [self._counts.get((key, window), 0) for key in keys]

    def bump(self, keys: Sequence[str], window: int) -> None:
        for key in keys:
            entry = (key, window)
            self._counts[entry] = self._counts.get(entry, 0) + 1
            self._counts.move_to_end(entry)
        while len(self._counts) > self._max:
            self._counts.popitem(last=False)


class FallbackFailureCounts:
    """Counts kept in a shared store (a subclass's `_shared_counts`/`_shared_add`), and in this process
    too, for while the store does not answer: a limit gets looser for a while, a login is never refused
    because the store is away."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._local = LocalFailureCounts()
        self._alone = False  # counting alone since the shared store last failed (logged once)

    async def _shared_counts(self, keys: Sequence[str], window: int) -> list[int]:
        raise NotImplementedError

    async def _shared_add(self, keys: Sequence[str], window: int, keep_s: int) -> None:
        raise NotImplementedError

    def _failed(self, exc: Exception) -> None:
        if not self._alone:
            log.warning("failed-login counts: %s unavailable (%r): this process counts alone meanwhile",
                        self._name, exc)
        self._alone = True

    def _answered(self) -> None:
        if self._alone:
            log.warning("failed-login counts: %s answers again", self._name)
        self._alone = False

    async def counts(self, keys: Sequence[str], window: int) -> list[int]:
        try:
            counts = await self._shared_counts(keys, window)
        except Exception as exc:
            self._failed(exc)
            return self._local.get(keys, window)
        self._answered()
        return counts

    async def add(self, keys: Sequence[str], window: int, keep_s: int) -> None:
        self._local.bump(keys, window)
        try:
            await self._shared_add(keys, window, keep_s)
        except Exception as exc:
            self._failed(exc)
            return
        self._answered()


class RedisFailureCounts(FallbackFailureCounts):
    """Failed logins in Redis, shared by every AuthService replica."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        super().__init__("Redis")
        self._redis = aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)

    @staticmethod
    def _key(key: str, window: int) -> str:
        return f"imray:login-failures:{window}:{key}"

    async def _shared_counts(self, keys: Sequence[str], window: int) -> list[int]:
        values = await self._redis.mget([self._key(key, window) for key in keys])
        return [int(v) if v is not None else 0 for v in values]

    async def _shared_add(self, keys: Sequence[str], window: int, keep_s: int) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.incr(self._key(key, window))
                pipe.expire(self._key(key, window), keep_s)
            await pipe.execute()

    async def close(self) -> None:
        await self._redis.aclose()


class ActorFailureCounts(FallbackFailureCounts):
    """Failed logins in the cluster's one counting actor (`actor()` finds it, or starts it).

    A call waits up to `start_timeout_s` while the actor may still be starting (a new worker
    process), `timeout_s` once it has answered. After a failure the process counts alone for
    `retry_s`, so a hung actor does not slow every login down."""

    def __init__(self, actor: Callable[[], Any], timeout_s: float = 2.0, start_timeout_s: float = 10.0,
                 retry_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("the login-failures actor")
        self._find = actor
        self._actor: Any = None
        self._ready = False
        self._timeout_s, self._start_timeout_s, self._retry_s = timeout_s, start_timeout_s, retry_s
        self._clock = clock
        self._retry_at = 0.0

    async def _call(self, method: str, *args: object) -> Any:
        if self._clock() < self._retry_at:
            raise ConnectionError("not asked again yet")
        if self._actor is None:
            self._actor = self._find()
            self._ready = False
        try:
            result = await asyncio.wait_for(getattr(self._actor, method).remote(*args),
                                            self._timeout_s if self._ready else self._start_timeout_s)
        except Exception:
            self._actor = None  # looked up afresh later (Ray restarts it, empty)
            self._retry_at = self._clock() + self._retry_s
            raise
        self._ready = True
        return result

    async def _shared_counts(self, keys: Sequence[str], window: int) -> list[int]:
        counts: list[int] = await self._call("counts", list(keys), window)
        return counts

    async def _shared_add(self, keys: Sequence[str], window: int, keep_s: int) -> None:
        await self._call("add", list(keys), window, keep_s)
