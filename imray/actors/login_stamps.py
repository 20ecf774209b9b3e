"""A socket node stamps the logins it holds sessions of as seen (issue 18: a login's `last_seen_at`).

A login is stamped soon after its first session here authenticates (unless this node stamped it
within `every_s`), then again every `every_s` while a session of it stays open: one UPDATE per
round for the logins that are due, never one per connection, so a reconnect storm costs a few
statements, not one per session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from functools import partial

from imray.storage import logins as login_store
from imray.storage.db import Database

log = logging.getLogger("imray.login_stamps")
ROUND_S = 2.0  # how soon a new session's login is stamped
EVERY_S = 60.0  # how often a login with an open session here is stamped again
AT_ONCE = 500  # logins per statement


class LoginStamps:
    def __init__(self, db: Database, open_logins: Callable[[], Iterable[str]], every_s: float = EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db, self._open, self._every_s, self._clock = db, open_logins, every_s, clock
        self._stamped: dict[str, float] = {}  # family -> when this node last stamped it

    def due(self) -> list[str]:
        """The open logins not stamped within `every_s` (marked stamped now). A closed login is
        forgotten once its stamp is that old: one that comes back sooner (every session of a
        reconnect storm) is as fresh as an open one's and is not stamped again (on MariaDB the
        storm's 20,000 re-stamps were measurable database CPU)."""
        now = self._clock()
        open_now = set(self._open())
        self._stamped = {f: at for f, at in self._stamped.items() if f in open_now or now - at < self._every_s}
        due = sorted(f for f in open_now if now - self._stamped.get(f, -self._every_s) >= self._every_s)
        for family in due:
            self._stamped[family] = now
        return due

    async def stamp_once(self) -> int:
        due = self.due()
        for start in range(0, len(due), AT_ONCE):
            await self._db.run(partial(login_store.seen_many, families=due[start:start + AT_ONCE]))
        return len(due)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(ROUND_S)
            try:
                await self.stamp_once()
            except Exception as exc:  # the database away: the next round stamps them again
                self._stamped.clear()
                log.warning("stamping logins as seen failed: %r", exc)
