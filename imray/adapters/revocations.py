"""The denylist of revoked logins: the database is its truth, followed by every process; Redis shares it at once.

A login is revoked in the database first, always (`storage.accounts`, in the transaction that spends
its refresh tokens): a revocation the caller was told about is never lost. Every process that checks
tokens runs a `RevocationFollower`, which reads the logins revoked lately, every second, into its
own in-process view, on both stacks, and tells its listeners (a socket node closes their sessions).
With Redis, the revoking process also sets a key there, so the other processes see it at once; a
Redis that does not answer is skipped (the check falls back to the process's view, at most a second
behind the database), never taken as "not revoked" on its own word. The checks made together (a
reconnect storm authenticates thousands of sessions a second) go to Redis as one MGET.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from imray.actors.batching import Batcher
from imray.adapters.cache import revoked_family_key
from imray.storage import accounts
from imray.storage.db import Database

log = logging.getLogger("imray.revocations")
POLL_S = 1.0
# Rows are read again for this long: one revoked while the previous read ran, or stamped by
# another process's clock a little behind, is still seen.
OVERLAP_MS = 10_000
REDIS_TIMEOUT_S = 0.5
REDIS_PAUSE_S = 5.0  # after a failed check, Redis is skipped this long: no request waits on a dead one

Listener = Callable[[list[str]], object]  # the logins (families) newly known to be revoked


class Revocations:
    """`RevokedLogins` (domain.authenticator): this process's view (filled by its follower and its
    own revocations), and Redis when there is one."""

    def __init__(self, redis_url: str = "", capacity: int = 200_000) -> None:
        self._local: OrderedDict[str, float] = OrderedDict()  # family -> until (monotonic), oldest first
        self._capacity = capacity
        self._listeners: list[Listener] = []
        self._redis: Any = None
        self._redis_down_until = 0.0
        if redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                                  socket_connect_timeout=REDIS_TIMEOUT_S)
        self._checks: Batcher[None, str, bool] = Batcher(self._in_redis)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def on_revoked(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def known(self, family: str) -> bool:
        """Revoked as far as this process's view goes (no I/O)."""
        until = self._local.get(family)
        if until is None:
            return False
        if until < time.monotonic():
            del self._local[family]
            return False
        return True

    async def is_revoked(self, family: str) -> bool:
        if self.known(family):
            return True
        if self._redis is None or time.monotonic() < self._redis_down_until:
            return False
        try:
            return await self._checks.submit(None, family)
        except Exception as exc:  # the view follows the database: Redis adds speed, not truth
            log.warning("revocation check in Redis failed, using the database's list for %.0f s: %r",
                        REDIS_PAUSE_S, exc)
            self._redis_down_until = time.monotonic() + REDIS_PAUSE_S
            return False

    async def _in_redis(self, _: None, families: list[str]) -> list[bool]:
        values = await self._redis.mget([revoked_family_key(family) for family in families])
        return [value is not None for value in values]

    async def revoke(self, family: str, ttl_s: int) -> None:
        """Called after the database has the revocation: spread it now (every follower reads it
        from the database within a second anyway)."""
        self.learn({family: ttl_s})
        if self._redis is not None:
            try:
                await self._redis.set(revoked_family_key(family), b"1", ex=max(1, ttl_s))
            except Exception as exc:
                log.warning("sharing a revocation through Redis failed (the database has it): %r", exc)

    def learn(self, families: dict[str, int]) -> list[str]:
        """Put revoked logins (family -> seconds it matters) in the view; tell the listeners about
        the ones it did not hold. Returns those."""
        new = [family for family in families if not self.known(family)]
        now = time.monotonic()
        for family, ttl_s in families.items():
            self._local[family] = max(self._local.get(family, 0.0), now + ttl_s)
            self._local.move_to_end(family)
        if len(self._local) > self._capacity:
            self._forget_expired(now)
        if new:
            for listener in self._listeners:
                try:
                    listener(new)
                except Exception:
                    log.exception("a revocation listener failed")
        return new

    def _forget_expired(self, now: float) -> None:
        for family in [f for f, until in self._local.items() if until < now]:
            del self._local[family]
        while len(self._local) > self._capacity:  # never in practice: that many logins revoked in one TTL
            family, _ = self._local.popitem(last=False)
            log.warning("revocation view full: forgot %s early (Redis or the token's expiry still hold)", family)


class RevocationFollower:
    """Reads the logins revoked since its last read (with overlap) from the database into `view`."""

    def __init__(self, db: Database, view: Revocations, token_ttl_s: int) -> None:
        self._db, self._view, self._ttl_s = db, view, token_ttl_s
        self._since_ms = int(time.time() * 1000) - token_ttl_s * 1000  # older revocations outlived their tokens

    async def poll_once(self) -> int:
        """One read; how many revoked logins it found (old and new)."""
        now_ms = int(time.time() * 1000)
        revoked = await self._db.read(lambda conn: accounts.revoked_since(conn, self._since_ms))
        live: dict[str, int] = {}
        for family, at_ms in revoked:
            left_ms = at_ms + self._ttl_s * 1000 - now_ms  # until the login's last access token expires
            if left_ms > 0:
                live[family] = -(-left_ms // 1000)
        self._view.learn(live)
        self._since_ms = now_ms - OVERLAP_MS
        return len(revoked)

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception as exc:  # the database is busy or away: try again next second
                log.warning("reading revoked logins failed: %r", exc)
            await asyncio.sleep(POLL_S)
