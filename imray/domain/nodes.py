"""Socket nodes as the rest of the system sees them: where a node listens, and how it is doing."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class NodeEndpoint:
    """Where a socket node takes WebSockets (`url` is what clients are told) and which actor it is."""

    node_id: str
    url: str
    host: str
    port: int
    ray_node_id: str
    actor_id: str


@dataclass(frozen=True, slots=True)
class NodeStats:
    """What a socket node reports of itself."""

    node_id: str
    connections: int
    users: int
    rss_bytes: int
    draining: bool = False  # issue 20: it takes no new logins and moves its sessions elsewhere


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """The supervisor's view of one node: its endpoint, last report, and logins sent its way."""

    endpoint: NodeEndpoint
    alive: bool
    connections: int
    rss_bytes: int
    pending_logins: int

    @property
    def node_id(self) -> str:
        return self.endpoint.node_id

    @property
    def url(self) -> str:
        return self.endpoint.url


@dataclass(frozen=True, slots=True)
class ShardEndpoint:
    """Where a conversation shard takes its socket nodes' streams, and the secret that admits them."""

    host: str
    port: int
    secret: str = field(repr=False)  # never printed or logged


@dataclass(frozen=True)
class DrainReport:
    """What draining a socket node came to (issue 20): sessions told to move, those closed at the
    deadline, how long it took, and whether the node was then replaced (a rolling restart's step)."""

    node_id: str
    told: int
    closed: int
    took_s: float
    restarted: bool = False
