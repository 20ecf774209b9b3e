"""Which socket node a login is pinned to: least connections, ties by rendezvous hashing of the user id."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from imray.domain.nodes import NodeEndpoint


def _weight(user_id: int, node_id: str) -> int:
    digest = hashlib.blake2b(f"{user_id}/{node_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def least_connections(loads: Mapping[str, int], user_id: int) -> str | None:
    """Pick among healthy nodes (`loads`: node id -> current load); None if there are none.

    Among the least loaded, the node with the highest hash weight for this user wins, so a user
    keeps landing on the same node while loads are even (consistent hashing: removing a node
    moves only the users that were on it).
    """
    if not loads:
        return None
    low = min(loads.values())
    tied = [node for node, load in loads.items() if load == low]
    return max(tied, key=lambda node: _weight(user_id, node))


def pick_listed(listed: Sequence[tuple[NodeEndpoint, int]], user_id: int, prefer: str | None = None
                ) -> NodeEndpoint | None:
    """The same choice among the nodes a registry lists (each with the connection count it published):
    `prefer` when listed, else the least connections, ties by the user's hash; None if none is listed."""
    by_id = {endpoint.node_id: (endpoint, connections) for endpoint, connections in listed}
    if prefer in by_id:
        return by_id[prefer][0]
    chosen = least_connections({node_id: connections for node_id, (_, connections) in by_id.items()}, user_id)
    return by_id[chosen][0] if chosen is not None else None
