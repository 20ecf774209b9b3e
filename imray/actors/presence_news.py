"""Contacts' presence news: users who went online or offline are announced to their contacts.

The presence store sees every node's sessions, so it is the one that says when a user's first
session opened or last one closed (`PresencePort.apply`); whoever reported the change (a socket
node, or the supervisor dropping a dead node) posts those transitions here. Off the hot path: a
batch at a time, one call in flight (a burst of logins becomes one database round trip and one
push per socket node), and a failure costs only the frames (the HTTP query stays right).
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.engine import Connection

from imray.actors.batching import Batcher
from imray.adapters.user_push import UserPush
from imray.domain.contacts import presence_frame
from imray.storage import contacts as store
from imray.storage.db import Database

log = logging.getLogger("imray.presence")
NEWS_LINGER_S = 0.05  # transitions gather this long into one batch
NEWS_KEY = "news"  # one destination: the batcher's single call in flight keeps the order


class PresenceNews:
    """`post(transitions)`, then `stop()`: last-seen times stored, contacts told (unless hidden)."""

    def __init__(self, db: Database, push: UserPush) -> None:
        self._db = db
        self._push = push
        self._batcher: Batcher[str, tuple[int, bool, int], None] = Batcher(self._announce, NEWS_LINGER_S)

    def post(self, transitions: list[tuple[int, bool]]) -> None:
        """(user, online now) for each user whose first session opened or last one closed."""
        now = int(time.time() * 1000)
        for user, online in transitions:
            self._batcher.post(NEWS_KEY, (user, online, now))

    async def stop(self) -> None:
        await self._batcher.stop()

    async def _announce(self, _key: str, items: list[tuple[int, bool, int]]) -> list[None]:
        latest: dict[int, tuple[bool, int]] = {}
        for user, online, at in items:  # in order: a user's last transition in the batch stands
            latest[user] = (online, at)
        users = sorted(latest)
        offline = {user: at for user, (online, at) in latest.items() if not online}

        def record(conn: Connection) -> tuple[dict[int, list[int]], dict[int, tuple[bool, int | None]]]:
            rows = store.presence_rows(conn, users)
            # A user who hides their presence leaves no last-seen behind either: showing it again
            # later must not reveal when they were last on while hidden.
            store.set_last_seen(conn, {u: at for u, at in offline.items() if rows.get(u, (True, None))[0]})
            return store.contacts_of(conn, users), rows

        try:
            contacts, rows = await self._db.run(record)  # in the pool: never on the node's loop
        except Exception as exc:
            log.warning("presence news: the database failed, %d transitions not announced: %r", len(users), exc)
            return [None] * len(items)
        pushes = [(contacts[user], presence_frame(user, online, at))
                  for user, (online, at) in latest.items()
                  if contacts.get(user) and rows.get(user, (True, None))[0]]
        if pushes:
            await self._push.push_many(pushes)
        return [None] * len(items)
