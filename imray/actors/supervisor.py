"""SocketSupervisor: the in-cluster registry of socket nodes, and the root of imray's actors.

It creates presence and the conversation shards, pins the socket nodes to Ray nodes with a
placement group (STRICT_SPREAD when the cluster has a socket_node-capable node for each, SPREAD
otherwise), watches them, replaces the ones that die, and answers which node a login should use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from imray.actors.conversation_shard import ConversationShard
from imray.actors.socket_node import SocketNode
from imray.adapters.nacos import SOCKET_SERVICE
from imray.adapters.named_actors import ActorHandle, shard_name, socket_node_name
from imray.backends import Backends
from imray.domain.nodes import NodeEndpoint, NodeStats, NodeStatus
from imray.domain.placement import least_connections
from imray.domain.tokens import PublicKey
from imray.lifecycle import Tasks
from imray.settings import Settings

log = logging.getLogger("imray.supervisor")
PENDING_WINDOW_S = 10.0  # a login counts against its node until its socket has had time to connect
MISSES_BEFORE_DOWN = 3  # checks run every second, each waits up to 5 s
STATS_TIMEOUT_S = 5.0


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

    def load(self, now: float) -> int:
        while self.pending and now - self.pending[0] > PENDING_WINDOW_S:
            self.pending.popleft()
        return self.connections + len(self.pending)

    def status(self, now: float) -> NodeStatus:
        load = self.load(now)
        return NodeStatus(self.endpoint, self.alive, self.connections, self.rss_bytes, load - self.connections)


@ray.remote(num_cpus=0, max_concurrency=1000)  # type: ignore[call-overload]  # stubs lack max_concurrency
class SocketSupervisor:
    def __init__(self, settings: Settings, keys: list[PublicKey]) -> None:
        self._settings = settings
        self._keys = keys
        self._backends = Backends(settings, "supervisor")
        self._directory = self._backends.directory(SOCKET_SERVICE)
        self._tasks = Tasks("supervisor")
        self._nodes: dict[str, NodeRecord] = {}
        self._shards: list[ActorHandle] = []
        self._presence_actor: ActorHandle | None = None
        self._presence_epoch = ""

    async def start(self) -> list[NodeStatus]:
        s = self._settings
        # Embedded, presence is an actor this supervisor hosts (and keeps a handle to); with Redis, None.
        self._presence_actor = self._backends.host_presence()
        if self._presence_actor is not None:
            await self._presence_actor.start.remote()
        self._presence = self._backends.presence()
        self._presence_epoch = await self._presence.epoch()
        self._shards = [ConversationShard.options(  # type: ignore[attr-defined]  # a Ray actor class
                            name=shard_name(i), namespace=s.namespace).remote(i, s) for i in range(s.shard_count)]
        await asyncio.gather(*(shard.start.remote() for shard in self._shards))
        capable = sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("socket_node", 0) >= 1)
        strategy = "STRICT_SPREAD" if capable >= s.socket_nodes else "SPREAD"
        self._pg = placement_group([{"socket_node": 1}] * s.socket_nodes, strategy=strategy,
                                   name="imray-socket-nodes")
        await self._pg.ready()
        await asyncio.gather(*(self._launch(slot) for slot in range(s.socket_nodes)))
        self._tasks.spawn(self._watch(), name="monitor")
        log.info("socket nodes up (%s): %s", strategy, self.nodes())
        return self.nodes()

    async def _launch(self, slot: int) -> None:
        node_id = f"sn-{slot + 1}"
        actor = SocketNode.options(  # type: ignore[attr-defined]  # a Ray actor class
            name=socket_node_name(node_id), namespace=self._settings.namespace,
            resources={"socket_node": 1},
            scheduling_strategy=PlacementGroupSchedulingStrategy(self._pg, placement_group_bundle_index=slot),
        ).remote(node_id, self._settings.socket_base_port + slot, self._settings, self._keys)
        endpoint: NodeEndpoint = await actor.start.remote()
        self._nodes[node_id] = NodeRecord(slot, actor, endpoint)

    def nodes(self) -> list[NodeStatus]:
        now = time.monotonic()
        return [r.status(now) for r in sorted(self._nodes.values(), key=lambda r: r.slot)]

    async def node_stats(self) -> list[NodeStats]:
        """Fresh figures from every live socket node (connections, users, resident memory)."""
        live = [r.actor.stats.remote() for r in self._nodes.values() if r.alive]
        return list(await asyncio.gather(*live))

    def url_of(self, node_id: object) -> str | None:
        record = self._nodes.get(node_id) if isinstance(node_id, str) else None
        return record.endpoint.url if record and record.alive else None

    async def pick(self, user_id: int) -> NodeEndpoint | None:
        """The node a login of `user_id` is pinned to, or None when no node is alive.

        With an outside registry (Nacos), the candidates are the live nodes it shows (the fleet an
        outside load balancer or an operator sees); otherwise, or while it does not answer, every
        live node. Either way a node's load is what it reported itself within the last second, plus
        the logins sent its way since. The connection count in Nacos metadata is no measure of load:
        it reaches this process through pushes that lag (measured: 0 there while the node held 13),
        and picking by it sends a burst of logins in a row to one node.
        """
        now = time.monotonic()
        candidates = await self._directory.node_ids()
        alive = {node_id: r.load(now) for node_id, r in self._nodes.items()
                 if r.alive and (candidates is None or node_id in candidates)}
        chosen = least_connections(alive, user_id)
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
        try:
            stats: NodeStats = await asyncio.wait_for(record.actor.stats.remote(), STATS_TIMEOUT_S)
        except TimeoutError:
            # Busy (10,000 sessions closing at once keep a node's loop busy for seconds) or cut off:
            # only a node that stays silent stops getting new logins.
            record.misses += 1
            record.alive = record.misses < MISSES_BEFORE_DOWN
            return
        except ray.exceptions.RayActorError:
            log.warning("socket node %s died; starting a replacement", node_id)
            record.alive = False
            try:
                await self._presence.drop_node(node_id)
            except Exception as exc:  # entries expire by themselves anyway
                log.warning("presence: dropping %s failed: %r", node_id, exc)
            await self._launch(record.slot)
            return
        record.connections, record.rss_bytes, record.alive, record.misses = (
            stats.connections, stats.rss_bytes, True, 0)

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
        and presence, then the backends."""
        await self._tasks.cancel_all()
        await asyncio.gather(*(r.actor.stop.remote() for r in self._nodes.values()), return_exceptions=True)
        await asyncio.gather(*(shard.stop.remote() for shard in self._shards), return_exceptions=True)
        if self._presence_actor is not None:
            await asyncio.gather(self._presence_actor.stop.remote(), return_exceptions=True)
        await self._backends.stop()
