"""Start and stop, the same way everywhere: owned background tasks, and teardowns paired with setups.

Every actor and replica keeps its background work in a `Tasks` (no task without a reference, all
cancelled at stop) and registers the teardown of each thing it set up in a `Teardowns`, which runs
them in reverse order and collects their errors instead of stopping at the first (aiohttp's
`cleanup_ctx` does the same).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("imray.lifecycle")


class Tasks:
    """Background tasks with an owner: kept referenced while they run, cancelled together at stop."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: background task %s failed", self._owner, task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        """Cancel every task still running and wait until each has finished."""
        running = list(self._tasks)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        self._tasks.clear()


Teardown = Callable[[], Awaitable[None] | None]


class Teardowns:
    """Teardowns registered as things are set up; `run()` undoes them last-in first-out."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._steps: list[tuple[str, Teardown]] = []

    def add(self, what: str, teardown: Teardown) -> None:
        self._steps.append((what, teardown))

    async def run(self) -> list[BaseException]:
        """Run every teardown, newest first; the errors (logged too), never raised."""
        errors: list[BaseException] = []
        while self._steps:
            what, teardown = self._steps.pop()
            try:
                result = teardown()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.warning("%s: stopping %s failed: %r", self._owner, what, exc)
                errors.append(exc)
        return errors
