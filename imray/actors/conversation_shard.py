"""ConversationShard: the single owner of a slice of conversations (hash of the conv id).

Batches arrive from socket nodes on their streams (see `stream`); one committer loop takes
everything queued since the last commit, plans it (membership, idempotency, seq), commits it in
one transaction, answers the callers, then hands the deliveries to the fan-out loop, which finds
recipients through presence (or, with few socket nodes, sends to all of them) and writes one
DELIVER frame per socket node on its stream (a Ray `deliver` call while a node has no stream).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial

import orjson
import ray
from sqlalchemy.exc import IntegrityError

from imray.actors import names
from imray.actors.batching import Batcher
from imray.actors.stream import DELIVER, DELIVERED, HELLO, MAX_HELLO, OUTCOMES, SUBMIT, frame, read_frame
from imray.actors.wire import DeliveryPart, pack_deliveries, pack_outcomes, unpack_items
from imray.adapters.live_config import LiveSettings
from imray.adapters.presence import make_presence
from imray.domain.messaging import NOT_STORED, Batch, ConversationLog, Delivery, Item, Outcome
from imray.heap import freeze_startup_heap
from imray.settings import Settings
from imray.storage.db import Database
from imray.storage.message_store import SqlMessageStore

log = logging.getLogger("imray.shard")
NODES_TTL_S = 1.0
# A Ray call that should take milliseconds and has not answered in this time is taken as lost, so
# that one lost call cannot hold back a node's deliveries for good (seen once: after a `deliver` call
# to a node that was reconnecting to this restarted shard, nothing more reached that node).
RAY_CALL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Forget:
    convs: tuple[str, ...]


@dataclass
class NodeStream:
    """A socket node's stream to this shard, and the delivery batches it has yet to acknowledge."""

    writer: asyncio.StreamWriter
    delivered: deque[asyncio.Future[None]] = field(default_factory=deque)


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
        self._nodes_refresh: asyncio.Task[None] | None = None
        self._nodes_asked_at = 0.0
        self._nodes_answered = False
        # One delivery batch in flight per socket node (on its stream, or a Ray call while it has none):
        # batches merge meanwhile, and order holds.
        self._to_nodes: Batcher[str, DeliveryPart, None] = Batcher(self._deliver)
        self._streams: dict[str, NodeStream] = {}  # by node id
        self._secret = secrets.token_hex(32)  # handed out through Ray, which authenticates who asks
        self._serving: asyncio.Future[dict] | None = None
        # Looked up here, not at the first fan-out: a first lookup loads the actor's class and its
        # modules (Serve, FastAPI, websockets...: measured 150 ms), and on the loop that stalled the
        # first seconds of traffic after every start (p99 0.8 s).
        self._supervisor: ray.actor.ActorHandle | None = self._find_supervisor()
        freeze_startup_heap()

    def _find_supervisor(self) -> ray.actor.ActorHandle | None:
        try:
            return ray.get_actor(names.SUPERVISOR, namespace=self._settings.namespace)
        except ValueError:  # not there (yet, or any more): asked again at the next fan-out
            return None

    def _ensure_loops(self) -> None:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
            self._fanout = asyncio.Queue()
            self._loops = [asyncio.create_task(self._commit_loop()),
                           asyncio.create_task(self._fanout_loop()),
                           asyncio.create_task(self._follow_settings())]
            self._refresh_nodes_if_stale()  # the first fan-out should find the answer there

    async def stream_endpoint(self) -> dict:
        """Where socket nodes open their stream to this shard, and the secret that admits them."""
        if self._serving is None:
            self._serving = asyncio.ensure_future(self._serve())
        return await asyncio.shield(self._serving)

    async def _serve(self) -> dict:
        host = self._settings.socket_host or ray.util.get_node_ip_address()
        self._server = await asyncio.start_server(self._on_stream, host, 0)
        return {"host": host, "port": self._server.sockets[0].getsockname()[1], "secret": self._secret}

    async def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        node_id, stream = None, None
        try:
            kind, payload = await asyncio.wait_for(read_frame(reader, MAX_HELLO), 10)
            hello = orjson.loads(payload) if kind == HELLO else {}
            if not (isinstance(hello, dict) and hmac.compare_digest(str(hello.get("secret", "")), self._secret)):
                log.warning("shard %s: a stream without the secret was refused", self._index)
                return
            node_id = str(hello["node"])
            self._ensure_loops()
            stream = self._streams[node_id] = NodeStream(writer)
            while True:
                kind, payload = await read_frame(reader)
                if kind == SUBMIT:
                    self._enqueue(unpack_items(payload), writer)
                elif kind == DELIVERED:
                    taken = stream.delivered.popleft()
                    if not taken.done():
                        taken.set_result(None)
                else:
                    raise ValueError(f"unexpected frame {kind!r}")
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ValueError, KeyError, TypeError,
                IndexError) as exc:
            if stream is not None:
                log.info("shard %s: stream from node %s ended: %r", self._index, node_id, exc)
        finally:
            if stream is not None:
                if self._streams.get(node_id) is stream:
                    del self._streams[node_id]
                for waiting in stream.delivered:  # the node is gone: what it had not taken is in history
                    if not waiting.done():
                        waiting.set_exception(ConnectionError(f"stream from node {node_id} lost"))
            writer.close()

    def _enqueue(self, items: list[Item], writer: asyncio.StreamWriter) -> None:
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(partial(self._answer, writer, len(items)))
        self._queue.append((items, future))
        self._wakeup.set()

    @staticmethod
    def _answer(writer: asyncio.StreamWriter, count: int, future: asyncio.Future[list[Outcome]]) -> None:
        # Futures resolve in queue order and their callbacks run in that order: so do the answers.
        if writer.is_closing():
            return
        if future.cancelled() or future.exception() is not None:
            outcomes = [Outcome(error=NOT_STORED)] * count
        else:
            outcomes = future.result()
        writer.write(frame(OUTCOMES, pack_outcomes(outcomes)))

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
        """The socket nodes to fan out to: every node with a stream here, and those the supervisor
        last called live (a node whose stream is reconnecting gets its deliveries by a Ray call).

        The supervisor is asked at most once a second, in the background: a slow answer (seen: over
        the time of six sends, on a busy box) must not hold deliveries back. Only a new owner's first
        fan-out waits for the first answer, which it asked for when its first stream came."""
        self._refresh_nodes_if_stale()
        if not self._nodes_answered:
            await asyncio.shield(self._nodes_refresh)
        return list(dict.fromkeys([*self._live, *self._streams]))

    def _refresh_nodes_if_stale(self) -> None:
        if self._nodes_refresh is None or (
                self._nodes_refresh.done() and time.monotonic() - self._nodes_asked_at > NODES_TTL_S):
            self._nodes_asked_at = time.monotonic()
            self._nodes_refresh = asyncio.create_task(self._refresh_nodes())

    async def _refresh_nodes(self) -> None:
        try:
            self._supervisor = self._supervisor or self._find_supervisor()
            if self._supervisor is None:
                raise RuntimeError("no supervisor to say which socket nodes are live")
            answer = await asyncio.wait_for(self._supervisor.nodes.remote(), RAY_CALL_TIMEOUT_S)
            self._live = [n["node_id"] for n in answer if n["alive"]]
        except (ray.exceptions.RayActorError, TimeoutError, RuntimeError) as exc:
            self._supervisor = None  # replaced, or not answering: look it up again next time
            log.warning("shard %s: live socket nodes unknown (%r); using the last known and the streams",
                        self._index, exc)
        finally:
            self._nodes_answered = True

    async def _deliver(self, node_id: str, part: list[DeliveryPart]) -> None:
        blob = pack_deliveries(part)
        stream = self._streams.get(node_id)
        if stream is not None and not stream.writer.is_closing():
            taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            stream.delivered.append(taken)
            stream.writer.write(frame(DELIVER, blob))
            try:
                await taken  # a node that does not keep up holds back only its own deliveries
            except ConnectionError:
                pass  # the node went away: its clients catch up from history
            return
        handle = self._nodes.get(node_id)
        if handle is None:
            try:
                handle = self._nodes[node_id] = ray.get_actor(names.socket_node(node_id),
                                                              namespace=self._settings.namespace)
            except ValueError:
                return  # gone since presence saw it; its clients catch up from history
        try:
            await asyncio.wait_for(handle.deliver.remote(blob), RAY_CALL_TIMEOUT_S)
        except (ray.exceptions.RayActorError, TimeoutError) as exc:
            log.warning("shard %s: delivering %d to node %s failed: %r", self._index, len(part), node_id, exc)
            self._nodes.pop(node_id, None)  # look it up again next time: it may have been replaced

    def ping(self) -> int:
        return self._index
