"""The shard's group commit: everything queued since the last commit, planned and committed at once.

One loop takes the whole queue, plans it (membership, idempotency, seq), commits it in one
transaction, answers the callers' futures in queue order, then hands the deliveries to the fan-out.
Membership changes (`forget`) wait in the same queue, so they apply between the batches around them.
A row the database refuses fails alone, never its batch, and after any refusal the conversations
involved are read again from the database (`_settle`). The queue is bounded (`shard_queue_items`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import DataError, IntegrityError

from imray.adapters import metrics
from imray.domain.messaging import (
    REFUSED,
    SHARD_BUSY,
    Batch,
    ConversationLog,
    Delivery,
    EventItem,
    Item,
    MessageStore,
    Outcome,
)
from imray.lifecycle import Tasks

log = logging.getLogger("imray.shard")
# What the database answers about rows rather than about itself: a (sender, client id) or a seq
# already taken (a resend this owner had not seen, another writer of the same conversation, a
# commit whose answer was lost), or a value a column cannot hold. Such a batch is planned again
# from what the database holds; what it still refuses is split off until it fails alone.
RowRefused = (IntegrityError, DataError, OverflowError)
UNCERTAIN_KEPT = 16  # failed commits checked for rows that landed anyway (`_deliver_uncertain`)


@dataclass(frozen=True, slots=True)
class Forget:
    """Membership of these conversations changed: drop what the log caches of them."""

    convs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Publish:
    """Commit these conversations' group events from the outbox (issue 18), their members read again
    first: the changes are in the database already, and the events apply them in line."""

    convs: tuple[str, ...]


Queued = tuple[list[Item] | Forget | Publish, "asyncio.Future[list[Outcome]]"]
Run = list[tuple[list[Item], "asyncio.Future[list[Outcome]]"]]


class ShardCommitter:
    """The commit loop, from `start()` to `stop()`; `on_committed` takes each batch's deliveries."""

    def __init__(self, index: int, conversations: ConversationLog, store: MessageStore,
                 on_committed: Callable[[list[Delivery]], None], max_queued: int = 50_000) -> None:
        self._index = index
        self._tag = str(index)  # the metrics' shard tag
        self._log = conversations
        self._store = store
        self._on_committed = on_committed
        self._queue: list[Queued] = []
        self._queued_items = 0  # items in `_queue`, bounded by `max_queued`
        self._max_queued = max_queued
        self._current: list[Queued] = []  # what the loop took from the queue and has not answered yet
        # Batches whose commit failed without a verdict (`_deliver_uncertain`); the next commit
        # checks them first, so a run of failures adds at most one while the database is away.
        self._uncertain: list[Batch] = []
        self._wakeup = asyncio.Event()
        self._tasks = Tasks(f"shard-{index} committer")

    def start(self) -> None:
        if not self._tasks:
            self._tasks.spawn(self._loop(), name="commit loop")

    async def stop(self) -> None:
        """End the loop; whatever it had not answered fails (the streams answer NOT_STORED)."""
        await self._tasks.cancel_all()
        stopped = ConnectionError(f"shard {self._index} stopped")
        for _, future in [*self._current, *self._queue]:
            if not future.done():
                future.set_exception(stopped)
        self._current, self._queue, self._queued_items = [], [], 0

    def submit(self, items: list[Item]) -> asyncio.Future[list[Outcome]]:
        """Queue one batch from a socket node; the future resolves with its outcomes. Past
        `max_queued` waiting items, a batch is refused whole at once (SHARD_BUSY, nothing stored)."""
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        if self._queued_items + len(items) > self._max_queued:
            log.warning("shard %s: %d items already wait for a commit; %d refused", self._index,
                        self._queued_items, len(items))
            future.set_result([Outcome(error=SHARD_BUSY) for _ in items])
            return future
        self._queued_items += len(items)
        self._queue.append((items, future))
        self._wakeup.set()
        return future

    async def forget(self, convs: list[str]) -> None:
        """Membership of these conversations changed (group add/remove): applied in line with the
        batches, so every batch queued before sees the old members and every one after the new."""
        await self._queued(Forget(tuple(convs)))

    async def publish(self, convs: list[str]) -> None:
        """Commit the group events waiting for `convs` (see `Publish`), in line with the batches."""
        await self._queued(Publish(tuple(convs)))

    async def _queued(self, payload: Forget | Publish) -> None:
        done: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._queue.append((payload, done))
        self._wakeup.set()
        await done

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                self._current, self._queue, self._queued_items = self._queue, [], 0
                await self._process(self._current)
                self._current = []

    async def _process(self, queued: list[Queued]) -> None:
        run: Run = []
        for payload, future in queued:
            if isinstance(payload, Forget | Publish):
                await self._commit(run)
                run = []
                for conv in payload.convs:
                    self._log.forget(conv)
                if isinstance(payload, Publish):
                    await self._commit([([EventItem(conv) for conv in payload.convs], future)])
                else:
                    future.set_result([])
            else:
                run.append((payload, future))
        await self._commit(run)

    async def _commit(self, run: Run) -> None:
        if not run:
            return
        items = [item for batch, _ in run for item in batch]
        started = time.perf_counter()
        try:
            if self._uncertain:
                await self._deliver_uncertain()
            batch = await self._plan_and_commit(items)
        except Exception as exc:
            metrics.backend_error("database")
            log.exception("shard %s: batch of %d failed", self._index, len(items), extra={"shard": self._index})
            for _, future in run:
                if not future.done():
                    future.set_exception(exc)
            return
        shard = self._tag
        metrics.observe("imray_commit_ms", (time.perf_counter() - started) * 1000, shard=shard)
        metrics.observe("imray_commit_batch_size", len(items), shard=shard)
        metrics.count("imray_messages_acked", len(batch.rows), shard=shard)
        start = 0
        for part, future in run:
            if not future.done():
                future.set_result(batch.outcomes[start:start + len(part)])
            start += len(part)
        if batch.deliveries:
            self._on_committed(batch.deliveries)

    async def _plan_and_commit(self, items: list[Item]) -> Batch:
        # The hot path skips the idempotency query for client ids this owner has not seen (the
        # unique key still refuses a duplicate, and `_settle` then finds it).
        batch = await self._log.plan(items, check_store=False)
        try:
            await self._write(batch)
        except RowRefused as exc:
            log.info("shard %s: a batch of %d was refused (%s); planning it again from the database",
                     self._index, len(items), type(exc).__name__)
            return await self._settle(items)
        return batch

    async def _settle(self, items: list[Item]) -> Batch:
        """Plan `items` again from what the database holds; what it still refuses is halved until
        the item it refuses fails alone (REFUSED), and every other item is committed."""
        batch = await self._log.plan(items, check_store=True)
        try:
            await self._write(batch)
            return batch
        except RowRefused as exc:
            if len(items) == 1:
                log.warning("shard %s: the database refuses an item for %s: %s", self._index, items[0].conv,
                            type(exc).__name__, extra={"shard": self._index, "conv": items[0].conv})
                return Batch(outcomes=[Outcome(error=REFUSED)])
        half = len(items) // 2
        first, second = await self._settle(items[:half]), await self._settle(items[half:])
        return Batch(outcomes=first.outcomes + second.outcomes, deliveries=first.deliveries + second.deliveries)

    async def _write(self, batch: Batch) -> None:
        try:
            if batch.rows or batch.cursor_moves or batch.outbox_done:
                await self._store.commit(batch)
        except RowRefused:
            self._log.refused(batch)  # its conversations are read again: the database knows better
            raise
        except Exception:
            self._log.rollback(batch)
            if batch.deliveries:  # the connection may have dropped after the COMMIT went through
                self._uncertain = [*self._uncertain[-(UNCERTAIN_KEPT - 1):], batch]
            raise
        self._log.committed(batch)

    async def _deliver_uncertain(self) -> None:
        """Fan out what a commit whose answer was lost stored after all. Its senders were told
        `internal` and resend; the resend finds the stored row and gets its ack, but only this fan-out
        brings the message to the members who stay connected. It goes before anything newer (its seqs
        are lower), once the database answers again; until then the batch waits here."""
        rows = {(row["sender_id"], row["client_id"]): row for batch in self._uncertain for row in batch.rows}
        stored = await self._store.find_by_client_ids(list(rows))  # raises while the database is away
        landed = {(row["conv"], row["seq"]) for key, row in rows.items()
                  if key in stored and stored[key]["msg_id"] == row["msg_id"]}
        deliveries = [d for batch in self._uncertain for d in batch.deliveries
                      if (d.conv.split("/", 1)[0], d.seq) in landed]  # a hidden copy's key is "<conv>/hidden"
        self._uncertain = []
        if deliveries:
            log.warning("shard %s: %d messages of a commit whose answer was lost were stored: fanned out now",
                        self._index, len(deliveries), extra={"shard": self._index})
            self._on_committed(deliveries)
