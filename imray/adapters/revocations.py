"""The denylist of revoked logins: kept in a cache, and on the embedded stack followed from the database.

With Redis the cache is shared, and every process reads revoked logins there. Without it each
process's cache is its own, so a login revoked in AuthService would stay usable elsewhere until its
access tokens expired (15 min): there each process that checks tokens runs a `RevocationFollower`,
which reads the logins revoked lately, every second, into its cache.
"""

from __future__ import annotations

import asyncio
import logging
import time

from imray.adapters.cache import Cache, revoked_family_key
from imray.storage import accounts
from imray.storage.db import Database

log = logging.getLogger("imray.revocations")
POLL_S = 1.0
# Rows are read again for this long: one revoked while the previous read ran, or stamped by
# another process's clock a little behind, is still seen.
OVERLAP_MS = 10_000


class CachedRevocations:
    """`RevokedLogins` (domain.authenticator) over a cache; entries live as long as the login's
    last access token could."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def is_revoked(self, family: str) -> bool:
        return bool(await self._cache.get(revoked_family_key(family)))

    async def revoke(self, family: str, ttl_s: int) -> None:
        await self._cache.set(revoked_family_key(family), True, ttl_s)


class RevocationFollower:
    def __init__(self, db: Database, cache: Cache, token_ttl_s: int) -> None:
        self._db, self._cache, self._ttl_s = db, cache, token_ttl_s
        self._since_ms = int(time.time() * 1000) - token_ttl_s * 1000  # older revocations outlived their tokens

    async def poll_once(self) -> int:
        """Read the logins revoked since the last read (with overlap) into the cache; how many."""
        now_ms = int(time.time() * 1000)
        revoked = await self._db.read(lambda conn: accounts.revoked_since(conn, self._since_ms))
        for family, at_ms in revoked:
            left_ms = at_ms + self._ttl_s * 1000 - now_ms  # until the login's last access token expires
            if left_ms > 0:
                await self._cache.set(revoked_family_key(family), True, -(-left_ms // 1000))
        self._since_ms = now_ms - OVERLAP_MS
        return len(revoked)

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception as exc:  # the database is busy or away: try again next second
                log.warning("reading revoked logins failed: %r", exc)
            await asyncio.sleep(POLL_S)

