"""Which socket node a login is pinned to: least connections, ties by rendezvous hashing of the user id."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


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
