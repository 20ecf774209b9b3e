"""ConversationShard: the single owner of a slice of conversations (hash of the conv id).

Batches arrive from socket nodes; one committer loop takes everything queued since the last
commit, plans it (membership, idempotency, seq), commits it in one transaction, answers the
callers, then hands the deliveries to the fan-out loop, which finds recipients through presence
(or, with few socket nodes, sends to all of them) and makes one `deliver` call per socket node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import ray
from sqlalchemy.exc import IntegrityError

from imray.actors import names
from imray.actors.batching import Batcher
from imray.actors.wire import DeliveryPart, pack_deliveries, pack_outcomes, unpack_items
from imray.adapters.live_config import LiveSettings
from imray.adapters.presence import make_presence
from imray.domain.messaging import Batch, ConversationLog, Delivery, Item, Outcome
from imray.heap import freeze_startup_heap
from imray.settings import Settings
from imray.storage.db import Database
from imray.storage.message_store import SqlMessageStore

log = logging.getLogger("imray.shard")
NODES_TTL_S = 1.0


@dataclass(frozen=True)
class Forget:
    convs: tuple[str, ...]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=10000)
class ConversationShard:
    def __init__(self, index: int, settings: Settings) -> None:
        self._index = index
        self._settings = settings
        self._db = Database(settings.db_url, threads=2)
        self._store = SqlMessageStore(self._db)
        self._log = ConversationLog(self._store)
        # (items, future) for a batch from a socket node; (Forget, future) for a membership change.
        self._queue: list[tuple[list[Item] | Forget, asyncio.Future[list[Outcome]]]] = []
        self._wakeup: asyncio.Event | None = None
        self._fanout: asyncio.Queue[list[Delivery]] | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._nodes: dict[str, ray.actor.ActorHandle] = {}
        self._live: list[str] = []
        self._nodes_seen_at = -NODES_TTL_S
        # One deliver() in flight per socket node: batches merge while it runs, and order holds.
        self._to_nodes: Batcher[str, DeliveryPart, None] = Batcher(self._deliver)
        freeze_startup_heap()

    def _ensure_loops(self) -> None:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
            self._fanout = asyncio.Queue()
            self._loops = [asyncio.create_task(self._commit_loop()),
                           asyncio.create_task(self._fanout_loop()),
                           asyncio.create_task(self._follow_settings())]

    async def submit(self, blob: bytes) -> bytes:
        """A socket node's batch of items (`wire.pack_items`); answers with their outcomes, in order."""
        self._ensure_loops()
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._queue.append((unpack_items(blob), future))
        self._wakeup.set()
        return pack_outcomes(await future)

    async def forget(self, convs: list[str]) -> None:
        """Membership of these conversations changed (group add/remove)."""
        self._ensure_loops()
        done: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._queue.append((Forget(tuple(convs)), done))  # in line with the batches, so order holds
        self._wakeup.set()
        await done

    async def _follow_settings(self) -> None:
        live = LiveSettings(self._settings)
        live.on_change(lambda values: setattr(self._log, "direct_messages", values["direct_messages"]))
        try:
            await live.start(f"shard-{self._index}")
        except Exception as exc:
            log.warning("shard %s: live settings unavailable: %r", self._index, exc)

    async def _commit_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                queued, self._queue = self._queue, []
                await self._process(queued)

    async def _process(self, queued: list[tuple[list[Item] | Forget, asyncio.Future[list[Outcome]]]]) -> None:
        # Membership changes apply in queue order, between the batches around them.
        run: list[tuple[list[Item], asyncio.Future[list[Outcome]]]] = []
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

    async def _commit(self, run: list[tuple[list[Item], asyncio.Future[list[Outcome]]]]) -> None:
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
            self._fanout.put_nowait(batch.deliveries)

    async def _plan_and_commit(self, items: list[Item]) -> Batch:
        for attempt in range(3):
            batch = await self._log.plan(items, check_store=attempt > 0)
            try:
                if batch.rows or batch.cursor_moves:
                    await self._store.commit(batch)
            except IntegrityError:
                # A (sender, client id) already stored (a resend this owner had not seen, or another
                # shard's): plan again, checking the store, and it becomes a resend.
                self._log.rollback(batch)
                if attempt == 2:
                    raise
                continue
            except Exception:
                self._log.rollback(batch)
                raise
            self._log.committed(batch)
            return batch
        raise AssertionError("unreachable")

    async def _fanout_loop(self) -> None:
        presence = make_presence(self._settings)
        while True:
            deliveries = await self._fanout.get()
            while not self._fanout.empty():  # everything committed meanwhile goes in one lookup
                deliveries.extend(self._fanout.get_nowait())
            try:
                await self._fan_out(presence, deliveries)
            except Exception:
                log.exception("shard %s: fan-out of %d deliveries failed", self._index, len(deliveries))

    async def _fan_out(self, presence, deliveries: list[Delivery]) -> None:
        users = sorted({u for d in deliveries for u in d.users})
        nodes = await self._live_nodes()
        if len(nodes) <= self._settings.fanout_broadcast_nodes:
            # So few nodes that nearly every batch goes to each anyway: skip the lookup (a round trip
            # per batch); each node keeps what its own sessions need.
            where = {node_id: users for node_id in nodes}
        else:
            try:
                where: dict[str, list[int]] = await presence.lookup(users)
            except Exception as exc:
                # Presence is down: every socket node gets the batch and keeps what its sessions need.
                log.warning("shard %s: presence lookup failed (%r); delivering to every node", self._index, exc)
                where = {node_id: users for node_id in nodes}
        for node_id, node_users in where.items():
            here = set(node_users)
            for d in deliveries:
                if not here.isdisjoint(d.users):
                    self._to_nodes.post(node_id, (d.frame, [u for u in d.users if u in here], d.skip))

    async def _live_nodes(self) -> list[str]:
        """The supervisor's live socket nodes, asked at most once a second."""
        now = time.monotonic()
        if now - self._nodes_seen_at > NODES_TTL_S:
            supervisor = ray.get_actor(names.SUPERVISOR, namespace=self._settings.namespace)
            self._live = [n["node_id"] for n in await supervisor.nodes.remote() if n["alive"]]
            self._nodes_seen_at = now
        return self._live

    async def _deliver(self, node_id: str, part: list[DeliveryPart]) -> None:
        handle = self._nodes.get(node_id)
        if handle is None:
            try:
                handle = self._nodes[node_id] = ray.get_actor(names.socket_node(node_id),
                                                              namespace=self._settings.namespace)
            except ValueError:
                return  # gone since presence saw it; its clients catch up from history
        try:
            await handle.deliver.remote(pack_deliveries(part))
        except ray.exceptions.RayActorError:
            self._nodes.pop(node_id, None)  # look it up again next time: it may have been replaced

    def ping(self) -> int:
        return self._index
