"""The embedded stack's denylist of revoked logins, followed from the database.

With Redis every process reads revoked logins there. Without it each process's cache is its own,
so a login revoked in AuthService would stay usable elsewhere until its access tokens expired
(15 min). Here each process that checks tokens reads the logins revoked lately, every second,
into its cache: a revocation takes effect everywhere within about a second.
"""

from __future__ import annotations

import asyncio
import logging
import time

from imray.adapters.cache import Cache, revoked_family_key
from imray.settings import Settings
from imray.storage import accounts
from imray.storage.db import Database

log = logging.getLogger("imray.revocations")
POLL_S = 1.0
# Rows are read again for this long: one revoked while the previous read ran, or stamped by
# another process's clock a little behind, is still seen.
OVERLAP_MS = 10_000


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


def follow_if_embedded(settings: Settings, cache: Cache, db: Database | None = None) -> asyncio.Task[None] | None:
    """With no Redis (no shared denylist), follow revoked logins in the database into `cache`, on
    the running loop; `db` defaults to a one-thread Database of its own. With Redis: None."""
    if settings.redis_url:
        return None
    follower = RevocationFollower(db or Database(settings.db_url, threads=1), cache, settings.access_token_ttl_s)
    return asyncio.get_running_loop().create_task(follower.run())
