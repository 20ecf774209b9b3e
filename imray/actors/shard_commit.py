"""The shard's group commit: everything queued since the last commit, planned and committed at once.

One loop takes the whole queue, plans it (membership, idempotency, seq), commits it in one
transaction, answers the callers' futures in queue order, then hands the deliveries to the fan-out.
Membership changes (`forget`) wait in the same queue, so they apply between the batches around them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from imray.domain.messaging import Batch, ConversationLog, Delivery, Item, MessageStore, Outcome
from imray.lifecycle import Tasks

log = logging.getLogger("imray.shard")
COMMIT_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Forget:
    """Membership of these conversations changed: drop what the log caches of them."""

    convs: tuple[str, ...]


Queued = tuple[list[Item] | Forget, "asyncio.Future[list[Outcome]]"]
Run = list[tuple[list[Item], "asyncio.Future[list[Outcome]]"]]


class ShardCommitter:
    """The commit loop, from `start()` to `stop()`; `on_committed` takes each batch's deliveries."""

    def __init__(self, index: int, conversations: ConversationLog, store: MessageStore,
                 on_committed: Callable[[list[Delivery]], None]) -> None:
        self._index = index
        self._log = conversations
        self._store = store
        self._on_committed = on_committed
        self._queue: list[Queued] = []
        self._current: list[Queued] = []  # what the loop took from the queue and has not answered yet
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
        self._current, self._queue = [], []

    def submit(self, items: list[Item]) -> asyncio.Future[list[Outcome]]:
        """Queue one batch from a socket node; the future resolves with its outcomes."""
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._queue.append((items, future))
        self._wakeup.set()
        return future

    async def forget(self, convs: list[str]) -> None:
        """Membership of these conversations changed (group add/remove): applied in line with the
        batches, so every batch queued before sees the old members and every one after the new."""
        done: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._queue.append((Forget(tuple(convs)), done))
        self._wakeup.set()
        await done

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                self._current, self._queue = self._queue, []
                await self._process(self._current)
                self._current = []

    async def _process(self, queued: list[Queued]) -> None:
        run: Run = []
        for payload, future in queued:
            if isinstance(payload, Forget):
                await self._commit(run)
                run = []
                for conv in payload.convs:
                    self._log.forget(conv)
                future.set_result([])
            else:
                run.append((payload, future))
        await self._commit(run)

    async def _commit(self, run: Run) -> None:
        if not run:
            return
        items = [item for batch, _ in run for item in batch]
        try:
            batch = await self._plan_and_commit(items)
        except Exception as exc:
            log.exception("shard %s: batch of %d failed", self._index, len(items))
            for _, future in run:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for part, future in run:
            if not future.done():
                future.set_result(batch.outcomes[start:start + len(part)])
            start += len(part)
        if batch.deliveries:
            self._on_committed(batch.deliveries)

    async def _plan_and_commit(self, items: list[Item]) -> Batch:
        for attempt in range(COMMIT_ATTEMPTS):
            batch = await self._log.plan(items, check_store=attempt > 0)
            try:
                if batch.rows or batch.cursor_moves:
                    await self._store.commit(batch)
            except IntegrityError:
                # A (sender, client id) already stored (a resend this owner had not seen, or another
                # shard's): plan again, checking the store, and it becomes a resend.
                self._log.rollback(batch)
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise
                continue
            except Exception:
                self._log.rollback(batch)
                raise
            self._log.committed(batch)
            return batch
        raise AssertionError("unreachable")
