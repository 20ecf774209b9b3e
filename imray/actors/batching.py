"""Group many small items into one call per destination, one call in flight per destination.

A call (a frame on a stream, a Ray call, a presence update) costs about the same whatever it
carries, so items go out as one call per destination per flush. Items for a destination whose
previous call is still in flight wait and go out together when it returns: batches grow by
themselves while the destination is slow (group commit's natural batching). A single call in
flight per destination is also what keeps order: each batch leaves only after the previous one
has been answered, whatever the transport does with calls sent side by side (Ray does not promise
that an async actor runs calls in the order they were submitted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar, cast

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

log = logging.getLogger("imray.batching")


class PendingOverflow(OverflowError):
    """More items waited for one destination than the batcher holds: they were dropped."""


class Batcher(Generic[K, I, R]):
    def __init__(self, send: Callable[[K, list[I]], Awaitable[Sequence[R] | None]], linger_s: float = 0.0,
                 max_pending: int = 0, on_overflow: Callable[[K, int], None] | None = None) -> None:
        """`linger_s`: how long a first item waits for company before its call goes out (0: the
        next turn of the loop), for destinations where fewer, larger calls beat a quick answer.

        `max_pending` (0: no bound): items waiting for one destination (its call in flight not
        counted). The item that would exceed it finds the waiting ones dropped (their futures fail
        with PendingOverflow, `on_overflow(key, how many)` is told) and waits alone in their place."""
        self._send = send
        self._linger_s = linger_s
        self._max_pending = max_pending
        self._on_overflow = on_overflow
        self._pending: dict[K, tuple[list[I], list[asyncio.Future[R] | None]]] = {}
        self._busy: set[K] = set()
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, key: K, item: I) -> asyncio.Future[R]:
        """Queue `item` for `key`; the future resolves with this item's result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue(key, item, future)
        return future

    def post(self, key: K, item: I) -> None:
        """Queue `item` for `key` with nobody waiting for its result (failures are logged)."""
        self._queue(key, item, None)

    def _queue(self, key: K, item: I, future: asyncio.Future[R] | None) -> None:
        items, futures = self._pending.setdefault(key, ([], []))
        if self._max_pending and len(items) >= self._max_pending:
            self._drop(key)
            items, futures = self._pending.setdefault(key, ([], []))
        items.append(item)
        futures.append(future)
        if key not in self._busy:
            self._schedule()

    def _drop(self, key: K) -> None:
        items, futures = self._pending.pop(key)
        overflow = PendingOverflow(f"{len(items)} items waited for {key!r}: dropped")
        for future in futures:
            if future is not None and not future.done():
                future.set_exception(overflow)
        if self._on_overflow is not None:
            self._on_overflow(key, len(items))
        else:
            log.warning("%s", overflow)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            if self._linger_s:
                loop.call_later(self._linger_s, self._flush)
            else:
                loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        for key in [k for k in self._pending if k not in self._busy]:
            self._start(key)

    def _start(self, key: K) -> None:
        items, futures = self._pending.pop(key)
        self._busy.add(key)
        task = asyncio.get_running_loop().create_task(self._call(key, items, futures))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, key: K, items: list[I], futures: list[asyncio.Future[R] | None]) -> None:
        try:
            results = await self._send(key, items)
        except Exception as exc:  # the destination failed: every item of the batch learns it
            if all(f is None for f in futures):
                log.warning("call to %r with %d items failed: %r", key, len(items), exc)
            for future in futures:
                if future is not None and not future.done():
                    future.set_exception(exc)
        else:
            # A destination that answers nothing (None) has a result type of None.
            answers: Sequence[R] = results if results is not None else [cast(R, None)] * len(futures)
            for future, result in zip(futures, answers, strict=True):
                if future is not None and not future.done():
                    future.set_result(result)
        finally:
            self._busy.discard(key)
            if key in self._pending:
                if self._linger_s:
                    self._schedule()  # what came meanwhile may wait for more company too
                else:
                    self._start(key)

    async def stop(self) -> None:
        """Cancel the calls in flight; their waiting items fail with CancelledError."""
        running = list(self._tasks)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
