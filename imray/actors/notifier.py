"""A shard's offline notifier: the webhook calls for members with no live session (issue 18, point 8).

It lives in the shard process, next to the fan-out that feeds it: `post` only appends a fan-out's
deliveries (and the members presence called online, when the fan-out asked) to a bounded list; a
planning task decides the notices (`domain.notifications`), asking presence itself when the fan-out
did not (few socket nodes: it broadcasts), and worker tasks make the HTTP calls with retries. So
neither the ack nor the delivery ever waits for it. A conversation has one shard, so "one notice per
user per conversation per window" holds across the cluster.

At most once: what is queued or being retried when a shard stops or crashes is lost, and a
restarted shard's window starts empty (a user may be told twice in one window then).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from imray.adapters.webhook import WebhookUnreachable
from imray.domain.messaging import Delivery
from imray.domain.notifications import (
    Coalescer,
    Message,
    Notice,
    backoff_s,
    body_of,
    messages_in,
    notice_for,
    retryable,
)
from imray.lifecycle import Tasks
from imray.settings import Settings

log = logging.getLogger("imray.notify")
LOG_EVERY_S = 60.0  # failures and drops are logged as counts, at most this often


class Lookup(Protocol):
    async def lookup(self, users: list[int]) -> dict[str, list[int]]: ...


class Muted(Protocol):
    async def __call__(self, pairs: list[tuple[int, str]]) -> set[tuple[int, str]]: ...  # (user, conv) muted


class Poster(Protocol):
    async def post(self, body: bytes, notice_id: str, attempt: int) -> int: ...
    async def close(self) -> None: ...


class Notifier:
    """From `start(presence)` to `stop()`; `post(deliveries, online)` is the fan-out's hand-off."""

    def __init__(self, index: int, settings: Settings, client: Poster,
                 clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] = random.random,
                 muted: Muted | None = None) -> None:
        self._index = index
        self._client = client
        self._muted = muted  # the conversations a recipient muted are not notified (issue 18, point 7)
        self._where = _origin(settings.notify_webhook_url)
        self._coalescer = Coalescer(settings.notify_window_s)
        self._preview_chars = settings.notify_preview_chars
        self._attempts = max(1, settings.notify_attempts)
        self._base_s = settings.notify_retry_base_s
        self._cap_s = settings.notify_retry_max_s
        self._workers = max(1, settings.notify_concurrency)
        self._max_queued = max(1, settings.notify_queue_max)
        self._clock = clock
        self._rand = rand
        self._incoming: list[tuple[list[Delivery], set[int] | None]] = []
        self._incoming_count = 0  # deliveries in `_incoming`, bounded by `_max_queued`
        self._wakeup = asyncio.Event()
        self._queue: asyncio.Queue[Notice] = asyncio.Queue()  # bounded by hand: the oldest goes first
        self._tasks = Tasks(f"shard-{index} notifier")
        self.counts = {"notified": 0, "coalesced": 0, "retried": 0, "failed": 0, "dropped": 0, "muted": 0}
        self._logged = dict(self.counts)
        self._logged_at = -LOG_EVERY_S
        self._presence_warned_at = -LOG_EVERY_S

    def start(self, presence: Lookup) -> None:
        if not self._tasks:
            self._tasks.spawn(self._plan_loop(presence), name="plan notices")
            for i in range(self._workers):
                self._tasks.spawn(self._work(), name=f"webhook worker {i}")

    async def stop(self) -> None:
        await self._tasks.cancel_all()
        await self._client.close()

    def post(self, deliveries: list[Delivery], online: set[int] | None) -> None:
        """A fan-out's deliveries, and the users presence found online (None: not asked). Never
        waits; past `notify_queue_max` deliveries waiting to be planned, these are dropped."""
        if self._incoming_count + len(deliveries) > self._max_queued:
            self.counts["dropped"] += len(deliveries)
            return
        self._incoming_count += len(deliveries)
        self._incoming.append((deliveries, online))
        self._wakeup.set()

    async def _plan_loop(self, presence: Lookup) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            taken, self._incoming, self._incoming_count = self._incoming, [], 0
            try:
                await self._plan(presence, taken)
            except Exception:
                log.exception("shard %s: planning notices failed", self._index)
            self._log_counts()

    async def _plan(self, presence: Lookup, taken: list[tuple[list[Delivery], set[int] | None]]) -> None:
        now = self._clock()
        found: list[tuple[Message, set[int] | None]] = [
            (m, online) for deliveries, online in taken for m in messages_in(deliveries)]
        # Presence is asked only of the users nobody has asked about and whose window is open.
        unknown = sorted({u for m, online in found if online is None for u in m.recipients
                          if not self._coalescer.holds(u, m.conv, now)})
        looked_up: set[int] | None = set()
        if unknown:
            try:
                looked_up = {u for users in (await presence.lookup(unknown)).values() for u in users}
            except Exception as exc:  # who is offline is not known: nobody is told (at most once)
                if now - self._presence_warned_at >= LOG_EVERY_S:
                    self._presence_warned_at = now
                    log.warning("shard %s: presence lookup for notices failed: %r", self._index, exc)
                looked_up = None
        wanted: list[tuple[Message, int]] = []
        for message, online in found:
            known = online if online is not None else looked_up
            for user in message.recipients:
                if known is not None and user in known:
                    continue
                if self._coalescer.holds(user, message.conv, now):
                    self.counts["coalesced"] += 1
                elif known is None:
                    self.counts["dropped"] += 1
                else:
                    wanted.append((message, user))
        muted = await self._muted_among(wanted)
        for message, user in wanted:
            if (user, message.conv) in muted:
                self.counts["muted"] += 1
            elif self._coalescer.admit(user, message.conv, now):
                self._enqueue(notice_for(message, user, self._preview_chars))
            else:  # an earlier message of this batch opened the window
                self.counts["coalesced"] += 1

    async def _muted_among(self, wanted: list[tuple[Message, int]]) -> set[tuple[int, str]]:
        """One read for the batch; one that fails mutes nobody (a notice too many beats one lost)."""
        if self._muted is None or not wanted:
            return set()
        try:
            return await self._muted(sorted({(user, message.conv) for message, user in wanted}))
        except Exception as exc:
            log.warning("shard %s: reading muted conversations failed, notifying regardless: %r", self._index, exc)
            return set()

    def _enqueue(self, notice: Notice) -> None:
        if self._queue.qsize() >= self._max_queued:  # full: the oldest notice is the least useful
            self._queue.get_nowait()
            self.counts["dropped"] += 1
        self._queue.put_nowait(notice)

    async def _work(self) -> None:
        while True:
            notice = await self._queue.get()
            try:
                await self._deliver(notice)
            except Exception:
                log.exception("shard %s: a notice failed", self._index)
                self.counts["failed"] += 1
            self._log_counts()

    async def _deliver(self, notice: Notice) -> None:
        body = body_of(notice)
        for attempt in range(1, self._attempts + 1):
            try:
                status: int | None = await self._client.post(body, notice.id, attempt)
            except WebhookUnreachable:
                status = None
            if status is not None and 200 <= status < 300:
                self.counts["notified"] += 1
                return
            if not retryable(status) or attempt == self._attempts:
                self.counts["failed"] += 1
                return
            self.counts["retried"] += 1
            await asyncio.sleep(backoff_s(attempt, self._base_s, self._cap_s, self._rand()))

    def _log_counts(self) -> None:
        """Failures and drops, as counts since the last such line, at most every LOG_EVERY_S."""
        now = self._clock()
        if now - self._logged_at < LOG_EVERY_S:
            return
        failed = self.counts["failed"] - self._logged["failed"]
        dropped = self.counts["dropped"] - self._logged["dropped"]
        if failed or dropped:
            log.warning("shard %s: webhook %s: %d notices failed after retries, %d dropped (queue full or "
                        "presence unknown); %d sent in all", self._index, self._where, failed, dropped,
                        self.counts["notified"])
            self._logged_at = now
            self._logged = dict(self.counts)


def _origin(url: str) -> str:
    """What logs say of the webhook: scheme, host and port only (a path or query may hold a token)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"

