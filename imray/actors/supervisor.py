"""SocketSupervisor: the in-cluster registry of socket nodes, and the one that starts imray's actors.

It hosts presence, spreads the conversation shards over the cluster's nodes, pins the socket
nodes to Ray nodes with a placement group (STRICT_SPREAD when the cluster has a socket_node-capable
node for each, SPREAD otherwise), watches them, replaces the ones that die, and answers which node
a login should use. Nothing shares its fate: presence, the shards, the socket nodes and the
placement groups are detached and named, and Ray restarts the supervisor itself. A restarted one
runs only `__init__`; `start()` adopts what is alive (the first deploy's path, which finds
nothing), and every call a peer makes awaits it first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import ray
from ray.util.placement_group import PlacementGroup, get_placement_group, placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from imray.actors.conversation_shard import ConversationShard
from imray.actors.presence_news import PresenceNews
from imray.actors.socket_node import SocketNode
from imray.adapters.nacos import SOCKET_SERVICE
from imray.adapters.named_actors import ActorHandle, ActorMissing, shard_name, socket_node_name
from imray.adapters.user_push import UserPush
from imray.backends import Backends
from imray.domain.nodes import DrainReport, NodeEndpoint, NodeStats, NodeStatus
from imray.domain.placement import least_connections
from imray.lifecycle import Tasks
from imray.settings import Settings

log = logging.getLogger("imray.supervisor")
PLACEMENT_GROUP = "imray-socket-nodes"
SHARD_GROUP = "imray-shards"
SHARD_CPU = 0.001  # a shard's token share of a CPU: what places it in its bundle (it runs on I/O waits)
PENDING_WINDOW_S = 10.0  # a login counts against its node until its socket has had time to connect
MISSES_BEFORE_DOWN = 3  # checks run every second, each waits up to 5 s
STATS_TIMEOUT_S = 5.0
ADOPT_TIMEOUT_S = 30.0  # how long a stop waits for a just-restarted supervisor to adopt what it can
UNREACHABLE_ADOPT_S = 120.0  # a node that stays unreachable this long after a restart is replaced
NAME_RELEASE_S = 15.0  # a replaced node's name is free once Ray has marked it dead
LAUNCH_WAIT_S = 20.0  # a node not started by then (its bundle waits for a host) joins in the background
RESUME_RETRY_S = 2.0


@dataclass
class NodeRecord:
    slot: int
    actor: ActorHandle
    endpoint: NodeEndpoint
    connections: int = 0
    alive: bool = True
    misses: int = 0  # stats calls in a row that timed out
    rss_bytes: int = 0
    pending: deque[float] = field(default_factory=deque)
    draining: bool = False  # issue 20: no new logins; its sessions move elsewhere

    def load(self, now: float) -> int:
        while self.pending and now - self.pending[0] > PENDING_WINDOW_S:
            self.pending.popleft()
        return self.connections + len(self.pending)

    def status(self, now: float) -> NodeStatus:
        load = self.load(now)
        return NodeStatus(self.endpoint, self.alive, self.connections, self.rss_bytes, load - self.connections)


# Restarted by Ray when it dies; calls made meanwhile wait for the restarted one (every method is
# safe to run again), so peers (logins, `imray status`, wrong_node answers) ride out a restart.
@ray.remote(num_cpus=0, max_concurrency=1000, max_restarts=-1, max_task_retries=-1)  # type: ignore[call-overload]
class SocketSupervisor:
    def __init__(self, settings: Settings) -> None:  # keys: each socket node reads settings.keys_path
        self._settings = settings
        self._backends = Backends(settings, "supervisor")
        self._directory = self._backends.directory(SOCKET_SERVICE)
        self._tasks = Tasks("supervisor")
        self._news: PresenceNews | None = None  # contacts' presence news, built when a node dies
        self._adopting: set[str] = set()  # unreachable nodes asked again in the background (`_adopt`)
        self._launching: set[str] = set()  # nodes being created or started (`_launch`)
        self._nodes: dict[str, NodeRecord] = {}
        self._shards: list[ActorHandle] = []
        self._presence_actor: ActorHandle | None = None
        self._presence_epoch = ""
        self._pg: PlacementGroup | None = None
        self._started: asyncio.Future[None] | None = None
        self._stopping = False
        # Restarted, nobody else would call start() (Ray queues this call until __init__ returns).
        ray.get_runtime_context().current_actor.resume.remote()

    async def resume(self) -> None:
        """start(), again every few seconds until it succeeds (or the supervisor is stopping)."""
        while not self._stopping:
            try:
                await self.start()
                return
            except Exception as exc:
                log.warning("starting failed, trying again in %s s: %r", RESUME_RETRY_S, exc)
                await asyncio.sleep(RESUME_RETRY_S)

    async def start(self) -> list[NodeStatus]:
        """Adopt what is alive, create what is missing, watch the nodes. Idempotent, and safe to call
        concurrently: every caller awaits the same start."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)
        return self._view()

    async def _start(self) -> None:
        try:
            await self._start_presence()
            await self._start_shards()
            self._pg = await self._socket_node_group()
            await asyncio.gather(*(self._adopt(slot) for slot in range(self._settings.socket_nodes)))
        except BaseException:
            self._started = None  # the next caller tries again; what was adopted so far is kept
            raise
        if not self._stopping:
            self._tasks.spawn(self._watch(), name="monitor")
        log.info("socket nodes up: %s", self._view())

    async def _start_presence(self) -> None:
        # Embedded, presence is an actor hosted here (adopted if alive); with Redis, None.
        self._presence_actor = self._backends.host_presence()
        if self._presence_actor is not None:
            await self._presence_actor.start.remote()
        self._presence = self._backends.presence()
        self._presence_epoch = await self._presence.epoch()

    async def _start_shards(self) -> None:
        """The live shards, and new ones for those missing, spread over the cluster's nodes by a
        placement group of token bundles (Ray places a SPREAD group's bundles on distinct nodes while
        it can, and moves those of a lost node; SPREAD or soft node affinity on the actors themselves
        put two shards of three on one node of three in our runs)."""
        s = self._settings
        group = await self._placement_group(SHARD_GROUP, [{"CPU": SHARD_CPU}] * s.shard_count, "SPREAD")
        self._shards = [ConversationShard.options(  # type: ignore[attr-defined]  # a Ray actor class
            name=shard_name(i), namespace=s.namespace, lifetime="detached", get_if_exists=True, num_cpus=SHARD_CPU,
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i),
        ).remote(i, s) for i in range(s.shard_count)]
        await asyncio.gather(*(shard.start.remote() for shard in self._shards))

    async def _socket_node_group(self) -> PlacementGroup:
        s = self._settings
        capable = sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("socket_node", 0) >= 1)
        strategy = "STRICT_SPREAD" if capable >= s.socket_nodes else "SPREAD"
        return await self._placement_group(PLACEMENT_GROUP, [{"socket_node": 1}] * s.socket_nodes, strategy)

    @staticmethod
    async def _placement_group(name: str, bundles: list[dict[str, float]], strategy: str) -> PlacementGroup:
        """The named, detached group if there is one (a restarted supervisor adopts it as it is), else a
        new one, once it is placed. An adopted group is not awaited: after a host loss its bundle there
        waits for a host (STRICT_SPREAD with none spare) and `ready()` with it; a restarted supervisor
        that waited never answered a login again (multi-host CI run, 2026-11-30)."""
        try:
            return get_placement_group(name)
        except ValueError:  # none yet (first deploy)
            log.info("placement group %s: %d bundles, %s", name, len(bundles), strategy)
            group = placement_group(bundles, strategy=strategy, name=name, lifetime="detached")
        await group.ready()
        return group

    async def _adopt(self, slot: int) -> None:
        """The slot's node if it is alive and started; otherwise a new one in its place."""
        node_id = f"sn-{slot + 1}"
        if node_id in self._nodes:
            return
        try:
            actor = self._backends.actors().socket_node(node_id)
        except ActorMissing:
            await self._launch(slot)
            return
        try:
            endpoint, stats = await asyncio.wait_for(
                asyncio.gather(actor.endpoint.remote(), actor.stats.remote()), STATS_TIMEOUT_S)
        except (ray.exceptions.ActorUnavailableError, TimeoutError) as exc:
            # Its host does not answer (cut off, or going; Ray says "unavailable" or the call hangs), and
            # Ray has not said "dead": replacing it now would close sessions that may still be open.
            # It gets no logins meanwhile, and is adopted (or replaced) once it answers (or Ray knows).
            if node_id not in self._adopting:
                log.warning("socket node %s is unreachable (%r): adopting it once it answers", node_id, exc,
                            extra={"node": node_id})
                self._adopting.add(node_id)
                self._tasks.spawn(self._adopt_when_reachable(slot, actor), name=f"adopt-{node_id}")
            return
        except ray.exceptions.RayActorError as exc:
            log.warning("socket node %s died (%r): replacing it", node_id, exc, extra={"node": node_id})
            endpoint = None
        await self._take_or_replace(slot, actor, endpoint, stats if endpoint else None)

    async def _adopt_when_reachable(self, slot: int, actor: ActorHandle) -> None:
        """Ask an unreachable node again every second: adopt it when it answers, replace it when Ray
        declares it dead (at most ~45 s for a host whose packets are dropped, `deploy/ray-node.sh`),
        or after UNREACHABLE_ADOPT_S whatever Ray says."""
        node_id = f"sn-{slot + 1}"
        deadline = time.monotonic() + UNREACHABLE_ADOPT_S
        try:
            while not self._stopping:
                await asyncio.sleep(1.0)
                try:
                    endpoint, stats = await asyncio.wait_for(
                        asyncio.gather(actor.endpoint.remote(), actor.stats.remote()), STATS_TIMEOUT_S)
                except (ray.exceptions.ActorUnavailableError, TimeoutError):
                    if time.monotonic() < deadline:
                        continue
                    endpoint = stats = None
                except ray.exceptions.RayActorError:
                    endpoint = stats = None
                await self._take_or_replace(slot, actor, endpoint, stats)
                return
        finally:
            self._adopting.discard(node_id)

    async def _take_or_replace(self, slot: int, actor: ActorHandle, endpoint: NodeEndpoint | None,
                               stats: NodeStats | None) -> None:
        node_id = f"sn-{slot + 1}"
        if endpoint is None or stats is None or not endpoint.host:  # dead, stuck, or never started
            ray.kill(actor, no_restart=True)
            await self._forget_sessions(node_id)
            await self._launch(slot)
            return
        record = self._nodes[node_id] = NodeRecord(slot, actor, endpoint)
        record.connections, record.rss_bytes = stats.connections, stats.rss_bytes
        log.info("adopted socket node %s (%s, %d connections)", node_id, endpoint.actor_id, stats.connections,
                 extra={"node": node_id})

    async def _launch(self, slot: int) -> None:
        """A new node for the slot, awaited up to LAUNCH_WAIT_S. Its bundle may have no host (its host
        was lost and no spare is left): neither `start()` nor the watch loop may wait for one, or logins
        and the checks of the other nodes stop with them; the node joins the fleet once it starts."""
        launch = self._begin_launch(slot)
        if launch is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(launch), LAUNCH_WAIT_S)
        except TimeoutError:
            log.warning("socket node sn-%d not started within %s s: it joins once it is placed",
                        slot + 1, LAUNCH_WAIT_S)

    def _begin_launch(self, slot: int) -> asyncio.Task[None] | None:
        node_id = f"sn-{slot + 1}"
        if node_id in self._launching:
            return None
        self._launching.add(node_id)
        return self._tasks.spawn(self._create_and_start(slot), name=f"launch-{node_id}")

    async def _create_and_start(self, slot: int) -> None:
        node_id, pg = f"sn-{slot + 1}", self._pg
        assert pg is not None, "placed after the placement group is ready"
        try:
            deadline = time.monotonic() + NAME_RELEASE_S
            while True:
                try:
                    actor = SocketNode.options(  # type: ignore[attr-defined]  # a Ray actor class
                        name=socket_node_name(node_id), namespace=self._settings.namespace, lifetime="detached",
                        resources={"socket_node": 1},
                        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=slot),
                    ).remote(node_id, self._settings.socket_base_port + slot, self._settings)
                    break
                except ValueError:  # the name is still taken by the node this one replaces
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            endpoint: NodeEndpoint = await actor.start.remote()
            self._nodes[node_id] = NodeRecord(slot, actor, endpoint)
            log.info("socket node %s started (%s)", node_id, endpoint.url, extra={"node": node_id})
        finally:
            self._launching.discard(node_id)

    def _view(self) -> list[NodeStatus]:
        now = time.monotonic()
        return [r.status(now) for r in sorted(self._nodes.values(), key=lambda r: r.slot)]

    async def nodes(self) -> list[NodeStatus]:
        await self.start()
        return self._view()

    async def node_stats(self) -> list[NodeStats]:
        """Fresh figures from every live socket node (connections, users, resident memory)."""
        await self.start()
        live = [r.actor.stats.remote() for r in self._nodes.values() if r.alive]
        return list(await asyncio.gather(*live))

    async def url_of(self, node_id: object) -> str | None:
        await self.start()
        record = self._nodes.get(node_id) if isinstance(node_id, str) else None
        return record.endpoint.url if record and record.alive else None

    async def pick(self, user_id: int, prefer: str | None = None) -> NodeEndpoint | None:
        """The node a login of `user_id` is pinned to, or None when no node is alive; `prefer` when
        that node is alive (a refresh that keeps its socket's pin).

        With an outside registry (Nacos), the candidates are the live nodes it shows (the fleet an
        outside load balancer or an operator sees); otherwise, or while it does not answer, every
        live node. Either way a node's load is what it reported itself within the last second, plus
        the logins sent its way since. The connection count in Nacos metadata is no measure of load:
        it reaches this process through pushes that lag (measured: 0 there while the node held 13),
        and picking by it sends a burst of logins in a row to one node.
        """
        await self.start()
        now = time.monotonic()
        candidates = await self._directory.node_ids()
        alive = {node_id: r.load(now) for node_id, r in self._nodes.items()
                 if r.alive and not r.draining and (candidates is None or node_id in candidates)}
        chosen = prefer if prefer in alive else least_connections(alive, user_id)
        if chosen is None:
            return None
        self._nodes[chosen].pending.append(now)
        return self._nodes[chosen].endpoint

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await asyncio.gather(*(self._check(node_id) for node_id in list(self._nodes)),
                                 return_exceptions=True)
            await self._check_presence()

    async def _check(self, node_id: str) -> None:
        record = self._nodes[node_id]
        if node_id in self._launching:  # its replacement is on the way
            return
        try:
            stats: NodeStats = await asyncio.wait_for(record.actor.stats.remote(), STATS_TIMEOUT_S)
        except (TimeoutError, ray.exceptions.ActorUnavailableError):
            # Busy (10,000 sessions closing at once keep a node's loop busy for seconds) or cut off
            # (Ray says "unavailable", not "died", while its host does not answer): only a node that
            # stays silent stops getting new logins, and it is replaced only once Ray declares it
            # dead. Replacing it earlier dropped its sessions' presence while they were still open.
            record.misses += 1
            record.alive = record.misses < MISSES_BEFORE_DOWN
            return
        except ray.exceptions.RayActorError:
            log.warning("socket node %s died; starting a replacement", node_id, extra={"node": node_id})
            record.alive = False
            self._begin_launch(record.slot)  # in the background: it may wait for a host for long
            await self._forget_sessions(node_id)
            return
        record.connections, record.rss_bytes, record.alive, record.misses = (
            stats.connections, stats.rss_bytes, True, 0)
        record.draining = record.draining or stats.draining  # a supervisor restarted mid-drain learns it here

    # -- drain and rolling restart (issue 20) -----------------------------------------------------

    async def drain(self, node_id: str, timeout_s: float) -> DrainReport:
        """No new logins to `node_id`; its sessions are told to move to the other live nodes (a `move`
        frame with a new pin) and the call returns once it is empty, or after `timeout_s` with the
        rest closed."""
        await self.start()
        record = self._nodes.get(node_id)
        if record is None or not record.alive:
            raise ValueError(f"no live socket node {node_id}")
        targets = [r.endpoint for other, r in sorted(self._nodes.items())
                   if other != node_id and r.alive and not r.draining]
        if not targets:
            raise ValueError(f"no other live socket node to move {node_id}'s sessions to")
        record.draining = True
        started = time.monotonic()
        told, closed = await record.actor.drain.remote(targets, timeout_s)
        log.info("drained %s: %d sessions told to move, %d closed", node_id, told, closed, extra={"node": node_id})
        return DrainReport(node_id, told, closed, round(time.monotonic() - started, 2))

    async def restart_node(self, node_id: str, timeout_s: float) -> DrainReport:
        """Drain `node_id`, stop it, and wait until its replacement (same id, slot and port) takes
        logins again: one step of a rolling restart."""
        report = await self.drain(node_id, timeout_s)
        old = self._nodes[node_id]
        ray.kill(old.actor, no_restart=True)
        deadline = time.monotonic() + LAUNCH_WAIT_S * 3
        while time.monotonic() < deadline:  # the watch loop sees it dead and launches the replacement
            await asyncio.sleep(0.5)
            record = self._nodes.get(node_id)
            if record is not None and record is not old and record.alive:  # a new record: the replacement's
                return DrainReport(node_id, report.told, report.closed, report.took_s, restarted=True)
        raise TimeoutError(f"{node_id} was stopped but no replacement started within {LAUNCH_WAIT_S * 3:g} s")

    async def _forget_sessions(self, node_id: str) -> None:
        try:
            gone = await self._presence.drop_node(node_id)
        except Exception as exc:  # entries expire by themselves anyway
            log.warning("presence: dropping %s failed: %r", node_id, exc)
            return
        if gone:  # their last sessions were on the dead node: their contacts hear it (issue 18)
            if self._news is None:
                self._news = PresenceNews(self._backends.database(threads=1),
                                          UserPush(self._presence, self._backends.actors()))
            self._news.post([(user, False) for user in gone])

    async def _check_presence(self) -> None:
        """A presence store that restarted empty (a new epoch): have every node resync at once."""
        try:
            epoch = await self._presence.epoch()
        except Exception as exc:  # restarting: look again next round
            log.debug("presence epoch unknown: %r", exc)
            return
        if epoch != self._presence_epoch:
            self._presence_epoch = epoch
            await asyncio.gather(*(r.actor.resync_presence.remote() for r in self._nodes.values() if r.alive),
                                 return_exceptions=True)

    async def stop(self) -> None:
        """Stop watching (so nothing is replaced meanwhile), drain the socket nodes, stop the shards
        and presence, then the backends; adopt first, if just restarted. `runtime.undeploy` removes them."""
        self._stopping = True
        try:
            await asyncio.wait_for(self.start(), ADOPT_TIMEOUT_S)
        except Exception as exc:  # stop what was adopted; undeploy removes the rest regardless
            log.warning("stopping before every part was adopted: %r", exc)
        await self._tasks.cancel_all()
        await asyncio.gather(*(r.actor.stop.remote() for r in self._nodes.values()), return_exceptions=True)
        await asyncio.gather(*(shard.stop.remote() for shard in self._shards), return_exceptions=True)
        if self._presence_actor is not None:
            await asyncio.gather(self._presence_actor.stop.remote(), return_exceptions=True)
        if self._news is not None:
            await self._news.stop()
        await self._backends.stop()
