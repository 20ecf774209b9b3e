"""Whether imray can serve (`/readyz`): the verdict from what each part answered, and how it reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PartsSeen:
    """What one round of checks saw: the database answered or not; how many shards and socket nodes did."""

    database: bool
    shards_up: int
    shards: int
    nodes_up: int
    nodes: int

    @property
    def ready(self) -> bool:
        """Not ready while the database, every shard or every socket node is away: then no message can
        be stored, or no client can connect. One shard or node away is degraded, not unready: taking
        the gateway out of a load balancer would not bring it back, and the rest still serves."""
        return self.database and self.shards_up > 0 and self.nodes_up > 0

    def report(self) -> dict[str, object]:
        degraded = self.shards_up < self.shards or self.nodes_up < self.nodes
        return {"status": "unavailable" if not self.ready else ("degraded" if degraded else "ready"),
                "database": "ok" if self.database else "unavailable",
                "shards": {"up": self.shards_up, "of": self.shards},
                "socket_nodes": {"up": self.nodes_up, "of": self.nodes}}
