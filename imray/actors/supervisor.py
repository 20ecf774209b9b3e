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

from imray.actors import names
from imray.actors.conversation_shard import ConversationShard
from imray.actors.presence import Presence
from imray.actors.socket_node import SocketNode
from imray.adapters.nacos import SOCKET_SERVICE, NacosDirectory
from imray.adapters.presence import make_presence
from imray.domain.placement import least_connections
from imray.domain.tokens import PublicKey
from imray.settings import Settings

log = logging.getLogger("imray.supervisor")
PENDING_WINDOW_S = 10.0  # a login counts against its node until its socket has had time to connect
MISSES_BEFORE_DOWN = 3  # checks run every second, each waits up to 5 s


@dataclass
class NodeRecord:
    slot: int
    actor: ray.actor.ActorHandle
    endpoint: dict
    connections: int = 0
    alive: bool = True
    misses: int = 0  # stats calls in a row that timed out
    rss_bytes: int = 0
    pending: deque[float] = field(default_factory=deque)

    def load(self, now: float) -> int:
        while self.pending and now - self.pending[0] > PENDING_WINDOW_S:
            self.pending.popleft()
        return self.connections + len(self.pending)


@ray.remote(num_cpus=0, max_concurrency=1000)
class SocketSupervisor:
    def __init__(self, settings: Settings, keys: list[PublicKey]) -> None:
        self._settings = settings
        self._keys = keys
        self._nodes: dict[str, NodeRecord] = {}
        self._monitor: asyncio.Task[None] | None = None
        self._presence_epoch = ""
        self._presence_actor: ray.actor.ActorHandle | None = None
        self._directory = NacosDirectory(settings, SOCKET_SERVICE, "supervisor") if settings.nacos_server else None

    async def start(self) -> list[dict]:
        s = self._settings
        if not s.redis_url:  # embedded presence lives in an actor; with Redis there is nothing to host
            self._presence_actor = Presence.options(name=names.PRESENCE, namespace=s.namespace).remote()
            self._presence_epoch = await self._presence_actor.epoch.remote()
        self._presence = make_presence(s)
        self._shards = [ConversationShard.options(name=names.shard(i), namespace=s.namespace).remote(i, s)
                        for i in range(s.shard_count)]
        await asyncio.gather(*(shard.ping.remote() for shard in self._shards))
        capable = sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("socket_node", 0) >= 1)
        strategy = "STRICT_SPREAD" if capable >= s.socket_nodes else "SPREAD"
        self._pg = placement_group([{"socket_node": 1}] * s.socket_nodes, strategy=strategy,
                                   name="imray-socket-nodes")
        await self._pg.ready()
        await asyncio.gather(*(self._launch(slot) for slot in range(s.socket_nodes)))
        self._monitor = asyncio.create_task(self._watch())
        log.info("socket nodes up (%s): %s", strategy, self.nodes())
        return self.nodes()

    async def _launch(self, slot: int) -> None:
        node_id = f"sn-{slot + 1}"
        actor = SocketNode.options(
            name=names.socket_node(node_id), namespace=self._settings.namespace,
            resources={"socket_node": 1},
            scheduling_strategy=PlacementGroupSchedulingStrategy(self._pg, placement_group_bundle_index=slot),
        ).remote(node_id, self._settings.socket_base_port + slot, self._settings, self._keys)
        endpoint = await actor.start.remote()
        self._nodes[node_id] = NodeRecord(slot, actor, endpoint)

    def nodes(self) -> list[dict]:
        now = time.monotonic()
        return [{**r.endpoint, "connections": r.connections, "alive": r.alive, "rss_bytes": r.rss_bytes,
                 "pending_logins": r.load(now) - r.connections}
                for r in sorted(self._nodes.values(), key=lambda r: r.slot)]

    async def node_stats(self) -> list[dict]:
        """Fresh figures from every live socket node (connections, users, resident memory)."""
        live = [r.actor.stats.remote() for r in self._nodes.values() if r.alive]
        return list(await asyncio.gather(*live))

    def url_of(self, node_id: object) -> str | None:
        record = self._nodes.get(node_id) if isinstance(node_id, str) else None
        return record.endpoint["url"] if record and record.alive else None

    async def pick(self, user_id: int) -> dict | None:
        """The node a login of `user_id` is pinned to, or None when no node is alive.

        With Nacos configured, the candidates are the live nodes Nacos shows (the fleet an outside
        load balancer or an operator sees); otherwise every live node. Either way a node's load is
        what it reported itself within the last second, plus the logins sent its way since. The
        connection count in Nacos metadata reaches this process through pushes that lag (seen: 0
        there while the node held 13), and picking by it once sent 20 logins in a row to one node.
        """
        now = time.monotonic()
        candidates = await self._nacos_listed() if self._directory else None
        alive = {node_id: r.load(now) for node_id, r in self._nodes.items()
                 if r.alive and (candidates is None or node_id in candidates)}
        chosen = least_connections(alive, user_id)
        if chosen is None:
            return None
        self._nodes[chosen].pending.append(now)
        return self._nodes[chosen].endpoint

    async def _nacos_listed(self) -> set[str] | None:
        """Node ids of the healthy `imray-socket` instances in Nacos; None when Nacos is away."""
        try:
            instances = await self._directory.instances()
        except Exception as exc:  # Nacos away: fall back to the supervisor's own view
            log.warning("nacos: listing %s failed: %r", SOCKET_SERVICE, exc)
            return None
        return {instance["metadata"].get("node_id", "") for instance in instances}

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await asyncio.gather(*(self._check(node_id) for node_id in list(self._nodes)),
                                 return_exceptions=True)
            await self._check_presence()

    async def _check(self, node_id: str) -> None:
        record = self._nodes[node_id]
        try:
            stats = await asyncio.wait_for(record.actor.stats.remote(), 5.0)
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
            stats["connections"], stats["rss_bytes"], True, 0)

    async def _check_presence(self) -> None:
        """The embedded presence actor restarts empty: have every node resync at once."""
        if self._presence_actor is None:
            return
        try:
            epoch = await self._presence_actor.epoch.remote()
        except ray.exceptions.RayActorError:
            return  # restarting; look again next round
        if epoch != self._presence_epoch:
            self._presence_epoch = epoch
            await asyncio.gather(*(r.actor.resync_presence.remote() for r in self._nodes.values() if r.alive),
                                 return_exceptions=True)

    async def stop(self) -> None:
        if self._monitor:
            self._monitor.cancel()
        await asyncio.gather(*(r.actor.stop.remote() for r in self._nodes.values()), return_exceptions=True)
