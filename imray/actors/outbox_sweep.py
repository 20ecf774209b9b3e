"""A shard's sweep of the group outbox (issue 18): events whose publisher died are committed anyway.

A group change and its outbox row are one transaction; the web service then asks the owning shard to
commit the event (`deployments.common.publish_events`). If it dies in between, or the shard does not
answer, the row waits: each shard looks every few seconds for rows of its conversations older than
that, and commits them like a publish would (at most once: the row goes in the event's transaction).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from imray.domain.conversations import shard_of

log = logging.getLogger("imray.shard")
OUTBOX_SWEEP_S = 5  # how long a group change may wait for its event when its publisher died


class StaleEvents(Protocol):
    async def stale_event_convs(self, older_than_ms: int, limit: int) -> list[str]: ...


async def sweep_once(store: StaleEvents, publish: Callable[[list[str]], Awaitable[None]], index: int, shards: int,
                     older_than_ms: int) -> list[str]:
    """Publish this shard's conversations with events waiting since before `older_than_ms`."""
    mine = [conv for conv in await store.stale_event_convs(older_than_ms, 500) if shard_of(conv, shards) == index]
    if mine:
        log.warning("shard %s: committing the group events of %d conversations left behind", index, len(mine))
        await publish(mine)
    return mine


async def sweep_forever(store: StaleEvents, publish: Callable[[list[str]], Awaitable[None]], index: int,
                        shards: int) -> None:
    while True:
        await asyncio.sleep(OUTBOX_SWEEP_S)
        try:
            await sweep_once(store, publish, index, shards, int(time.time() * 1000) - OUTBOX_SWEEP_S * 1000)
        except Exception:  # the database away: the next sweep tries again
            log.warning("shard %s: outbox sweep failed", index, exc_info=True)
