"""`/readyz`'s checks, run in the gateway replica: the database, each shard and each socket node, asked
directly (not through the supervisor, whose restart must not read as an outage), at most once a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text

from imray.adapters.named_actors import ActorHandle, NamedActors
from imray.domain.readiness import PartsSeen
from imray.storage.db import Database

CHECK_TIMEOUT_S = 2.0
FRESH_S = 1.0  # a result this young answers the next probes too (load balancers probe every replica often)


class Readiness:
    def __init__(self, db: Database, actors: NamedActors, shards: int, socket_nodes: int) -> None:
        self._db, self._actors = db, actors
        self._shards, self._nodes = shards, socket_nodes
        self._last: tuple[float, PartsSeen] | None = None
        self._running: asyncio.Future[PartsSeen] | None = None

    async def check(self) -> PartsSeen:
        if self._last is not None and time.monotonic() - self._last[0] < FRESH_S:
            return self._last[1]
        if self._running is None:  # concurrent probes share one round of checks
            self._running = asyncio.ensure_future(self._round())
            self._running.add_done_callback(lambda _: setattr(self, "_running", None))
        return await asyncio.shield(self._running)

    async def _round(self) -> PartsSeen:
        database, shards, nodes = await asyncio.gather(
            _answers(self._db.read(lambda conn: conn.execute(text("SELECT 1")).scalar())),
            asyncio.gather(*(_answers(self._ask(self._shard(i), "ping")) for i in range(self._shards))),
            asyncio.gather(*(_answers(self._ask(self._node(f"sn-{n + 1}"), "stats")) for n in range(self._nodes))))
        seen = PartsSeen(database, sum(shards), self._shards, sum(nodes), self._nodes)
        self._last = (time.monotonic(), seen)
        return seen

    def _shard(self, index: int) -> Callable[[], ActorHandle]:
        return lambda: self._actors.shard(index)

    def _node(self, node_id: str) -> Callable[[], ActorHandle]:
        return lambda: self._actors.socket_node(node_id)

    @staticmethod
    async def _ask(lookup: Callable[[], ActorHandle], method: str) -> object:
        actor = await asyncio.to_thread(lookup)  # a GCS round trip: never on the event loop
        return await getattr(actor, method).remote()


async def _answers(call: Awaitable[object]) -> bool:
    try:
        await asyncio.wait_for(call, CHECK_TIMEOUT_S)
        return True
    except Exception:  # missing, dead, unreachable or slow: not answering is all readiness needs to know
        return False
