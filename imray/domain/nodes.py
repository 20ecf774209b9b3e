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
