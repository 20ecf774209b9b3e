"""The shard's fan-out: what was committed goes to the socket nodes whose sessions need it.

Everything committed since the last fan-out goes in one presence lookup (or, with few socket nodes,
to all of them), grouped by node, one DELIVER batch in flight per node: on the node's stream, or a
Ray `deliver` call while the node has no stream to this shard.

A node's stream coming back (HELLO) asks for what the node may have missed (`redelivery`): that
goes to the node before anything else still to come. A shard that starts (or restarts) waits for
a node's first HELLO, briefly, before delivering to it at all: a Ray `deliver` of something new
overtaking that re-delivery would make the node drop the older messages as out of order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import ray

from imray.actors.batching import Batcher
from imray.actors.redelivery import CommittedStore, missed_since
from imray.actors.shard_listener import NodeStreams
from imray.actors.wire import DeliveryPart, pack_deliveries
from imray.adapters import metrics
from imray.adapters.named_actors import ActorHandle, ActorMissing, NamedActors
from imray.adapters.presence import PresencePort
from imray.domain.messaging import Delivery
from imray.lifecycle import Tasks
from imray.settings import Settings

log = logging.getLogger("imray.shard")
NODES_TTL_S = 1.0
# A Ray call that should take milliseconds and has not answered in this time is taken as lost, so
# that one lost call cannot hold back a node's deliveries (one batch in flight per node) for good.
RAY_CALL_TIMEOUT_S = 5.0
# How long a node's first deliveries wait for its stream: a node's link retries every 2 s at most.
FIRST_HELLO_WAIT_S = 5.0
# A node whose stream was reset gets nothing until its HELLO, for up to this long (longer than Ray
# takes to declare a cut-off host dead, `deploy/ray-node.sh`); then by Ray calls, as a new node.
RESET_HELLO_WAIT_S = 60.0
# The offline notifier's hand-off (issue 18): a fan-out's deliveries, and the users presence found
# online (None when this fan-out did not ask presence). It only queues: it never waits.
Notify = Callable[[list[Delivery], set[int] | None], None]


class FanOut:
    """The fan-out loop, from `start(presence)` to `stop()`; `post` takes a commit's deliveries."""

    def __init__(self, index: int, settings: Settings, actors: NamedActors, streams: NodeStreams,
                 store: CommittedStore, notify: Notify | None = None) -> None:
        self._index = index
        self._tag = str(index)  # the metrics' shard tag
        self._notify = notify
        self._shard_count = settings.shard_count
        self._store = store
        self._broadcast_nodes = settings.fanout_broadcast_nodes
        self._actors = actors
        self._streams = streams
        # Bounded (`fanout_queue_deliveries`): beyond it, what was committed is dropped here and every
        # node's stream is reset, so each asks for what it missed and gets it from the database (as
        # after a shard crash). A socket node's own backlog is bounded below, by `_to_nodes`.
        self._queue: asyncio.Queue[list[Delivery]] = asyncio.Queue()
        self._queued = 0  # deliveries in `_queue`
        self._max_queued = settings.fanout_queue_deliveries
        self._ack_timeout_s = settings.delivery_ack_timeout_s
        self._tasks = Tasks(f"shard-{index} fan-out")
        self._loop: asyncio.Task[None] | None = None
        self._node_handles: dict[str, ActorHandle] = {}  # socket nodes reached by Ray calls
        self._live: list[str] = []
        self._nodes_refresh: asyncio.Task[None] | None = None
        self._nodes_asked_at = 0.0
        self._nodes_answered = False
        # One delivery batch in flight per socket node: batches merge meanwhile, and order holds. A
        # None only wakes a node's call up, for a re-delivery when nothing else is on its way.
        # A node with more than `fanout_node_pending` deliveries waiting has them dropped and its
        # stream reset: its new HELLO asks for what it missed, re-delivered from the database.
        self._to_nodes: Batcher[str, DeliveryPart | None, None] = Batcher(
            self._deliver, max_pending=settings.fanout_node_pending, on_overflow=self._node_overflowed)
        self._hellos: dict[str, asyncio.Event] = {}  # set once the node's stream has said HELLO
        self._waited: set[str] = set()  # nodes whose first HELLO was waited for (or long enough)
        self._reset: dict[str, float] = {}  # node -> when its stream was reset (until its HELLO)
        self._redeliver: dict[str, int] = {}  # node -> the `since` its last HELLO asked for
        self._flowing = asyncio.Event()
        self._flowing.set()
        # Looked up at construction (the shard's __init__), not at the first fan-out: a first lookup
        # loads the actor's class and its modules (Serve, FastAPI, websockets...: measured 150 ms),
        # and on the event loop that stalled the first seconds of traffic after every start (p99 0.8 s).
        self._supervisor: ActorHandle | None = self._find_supervisor()

    def start(self, presence: PresencePort) -> None:
        if self._loop is None:
            self._loop = self._tasks.spawn(self._fan_out_loop(presence), name="fan-out loop")
            self._refresh_nodes_if_stale()  # the first fan-out should find the answer there

    async def stop(self) -> None:
        await self._tasks.cancel_all()
        await self._to_nodes.stop()
        self._loop = None

    def post(self, deliveries: list[Delivery]) -> None:
        if self._queued + len(deliveries) > self._max_queued:
            why = f"{self._queued} deliveries already wait for the fan-out; {len(deliveries)} dropped"
            for node_id in list(self._streams.node_ids()):
                self._reset_node(node_id, why)
            return
        self._queued += len(deliveries)
        self._queue.put_nowait(deliveries)
        metrics.gauge("imray_fanout_queue", self._queued, shard=self._tag)

    def node_ready(self, node_id: str, since: int | None) -> None:
        """`node_id`'s stream said HELLO: re-deliver from `since` before anything else for it."""
        self._reset.pop(node_id, None)
        if since is not None:
            self._redeliver[node_id] = min(since, self._redeliver.get(node_id, since))
            self._to_nodes.post(node_id, None)
        self._hellos.setdefault(node_id, asyncio.Event()).set()

    def pause(self, paused: bool) -> None:
        """Hold committed deliveries back (they queue up) or let them go: commits and acks go on.
        For tests, to crash a shard deterministically between its commits and their fan-out."""
        if paused:
            self._flowing.clear()
        else:
            self._flowing.set()

    def _node_overflowed(self, node_id: str, dropped: int) -> None:
        self._reset_node(node_id, f"{dropped} deliveries waiting for it were dropped")

    def _reset_node(self, node_id: str, why: str) -> None:
        """Reset a node's stream; it reconnects and asks for what it missed. Until that HELLO (or
        FIRST_HELLO_WAIT_S) nothing more goes to it, which could overtake the re-delivery."""
        if self._streams.reset(node_id):
            log.warning("shard %s: stream of node %s reset: %s", self._index, node_id, why)
            self._waited.discard(node_id)
            self._hellos.pop(node_id, None)
            self._reset[node_id] = time.monotonic()
        else:
            log.warning("shard %s: node %s has no stream: %s", self._index, node_id, why)

    def _find_supervisor(self) -> ActorHandle | None:
        try:
            return self._actors.supervisor()
        except ActorMissing:  # not there (yet, or any more): asked again at the next refresh
            return None

    async def _fan_out_loop(self, presence: PresencePort) -> None:
        while True:
            deliveries = await self._queue.get()
            await self._flowing.wait()
            while not self._queue.empty():  # everything committed meanwhile goes in one lookup
                deliveries.extend(self._queue.get_nowait())
            self._queued -= len(deliveries)
            metrics.gauge("imray_fanout_queue", self._queued, shard=self._tag)
            try:
                await self._fan_out(presence, deliveries)
            except Exception:
                log.exception("shard %s: fan-out of %d deliveries failed", self._index, len(deliveries))

    async def _fan_out(self, presence: PresencePort, deliveries: list[Delivery]) -> None:
        users = sorted({u for d in deliveries for u in d.users})
        nodes = await self._live_nodes()
        where: dict[str, list[int]]
        asked = False  # whether `where` is presence's answer (then it says who is online)
        if len(nodes) <= self._broadcast_nodes:
            # So few nodes that nearly every batch goes to each anyway: skip the lookup (a round trip
            # per batch); each node keeps what its own sessions need.
            where = {node_id: users for node_id in nodes}
        else:
            try:
                where = await presence.lookup(users)
                asked = True
            except Exception as exc:
                # Presence is down: every socket node gets the batch and keeps what its sessions need.
                log.warning("shard %s: presence lookup failed (%r); delivering to every node", self._index, exc)
                where = {node_id: users for node_id in nodes}
        if self._notify is not None:
            self._notify(deliveries, {u for found in where.values() for u in found} if asked else None)
        for node_id, node_users in where.items():
            here = set(node_users)
            for d in deliveries:
                if not here.isdisjoint(d.users):
                    self._to_nodes.post(node_id, (d.frame, [u for u in d.users if u in here], d.skip, d.conv,
                                                  d.seq, d.ts))

    async def _live_nodes(self) -> list[str]:
        """The socket nodes to fan out to: every node with a stream here, and those the supervisor
        last called live (a node whose stream is reconnecting gets its deliveries by a Ray call).

        The supervisor is asked at most once a second, in the background: a slow answer must not
        hold deliveries back. Only the first fan-out waits for the first answer, asked for at start."""
        self._refresh_nodes_if_stale()
        if not self._nodes_answered and self._nodes_refresh is not None:
            await asyncio.shield(self._nodes_refresh)
        return list(dict.fromkeys([*self._live, *self._streams.node_ids()]))

    def _refresh_nodes_if_stale(self) -> None:
        if self._nodes_refresh is None or (
                self._nodes_refresh.done() and time.monotonic() - self._nodes_asked_at > NODES_TTL_S):
            self._nodes_asked_at = time.monotonic()
            self._nodes_refresh = self._tasks.spawn(self._refresh_nodes(), name="live socket nodes")

    async def _refresh_nodes(self) -> None:
        try:
            self._supervisor = self._supervisor or self._find_supervisor()
            if self._supervisor is None:
                raise RuntimeError("no supervisor to say which socket nodes are live")
            answer = await asyncio.wait_for(self._supervisor.nodes.remote(), RAY_CALL_TIMEOUT_S)
            self._live = [n.node_id for n in answer if n.alive]
        except (ray.exceptions.RayActorError, TimeoutError, RuntimeError) as exc:
            self._supervisor = None  # replaced, or not answering: look it up again next time
            log.warning("shard %s: live socket nodes unknown (%r); using the last known and the streams",
                        self._index, exc)
        finally:
            self._nodes_answered = True

    async def _deliver(self, node_id: str, queued: list[DeliveryPart | None]) -> None:
        reset_at = self._reset.get(node_id)
        if reset_at is not None and time.monotonic() - reset_at < RESET_HELLO_WAIT_S:
            # Its HELLO asks for all of these again (they are committed). Sent by Ray meanwhile to a
            # node cut off for 20 s, they reached it once its link came back, where they could overtake
            # the re-delivery: the node counts a seq as delivered and drops older ones that come after.
            return
        if node_id not in self._waited:
            try:
                await asyncio.wait_for(self._hellos.setdefault(node_id, asyncio.Event()).wait(), FIRST_HELLO_WAIT_S)
            except TimeoutError:
                log.warning("shard %s: no stream from node %s yet; delivering without", self._index, node_id)
            self._waited.add(node_id)
        part = [p for p in queued if p is not None]
        since = self._redeliver.pop(node_id, None)
        if since is not None:
            try:
                part = [*await missed_since(self._store, self._index, self._shard_count, since), *part]
            except Exception:  # the store away: the node's clients catch up from history, as before
                log.exception("shard %s: re-delivery to node %s failed", self._index, node_id)
        if not part:
            return
        blob = pack_deliveries(part)
        taken = self._streams.deliver(node_id, blob)
        if taken is not None:
            try:
                # A node that does not keep up holds back only its own deliveries, for so long.
                await asyncio.wait_for(taken, self._ack_timeout_s)
            except ConnectionError:
                pass  # the node went away: its clients catch up from history
            except TimeoutError:
                self._reset_node(node_id, f"no ack of a delivery in {self._ack_timeout_s} s")
            return
        handle = self._node_handles.get(node_id)
        if handle is None:
            try:
                handle = self._node_handles[node_id] = self._actors.socket_node(node_id)
            except ActorMissing:
                return  # gone since presence saw it; its clients catch up from history
        try:
            await asyncio.wait_for(handle.deliver.remote(blob), RAY_CALL_TIMEOUT_S)
        except (ray.exceptions.RayActorError, TimeoutError) as exc:
            log.warning("shard %s: delivering %d to node %s failed: %r", self._index, len(part), node_id, exc)
            self._node_handles.pop(node_id, None)  # look it up again next time: it may have been replaced
