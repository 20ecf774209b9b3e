"""Pushing a frame to users' live sessions, wherever they are: the path for news that is not a message.

Presence says which socket nodes hold sessions of which users; each of those nodes gets one
`SocketNode.push_many([(users, frame), ...])` Ray call, all at once. Best effort by design: a frame pushed here
is not stored, ordered with messages or re-delivered, so what it says must also be readable over
HTTP (a client that reconnects asks again). A node that is gone or slow is skipped and logged; the
caller is never failed by a push.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from imray.adapters.named_actors import NamedActors
from imray.adapters.presence import PresencePort

log = logging.getLogger("imray.push")
PUSH_TIMEOUT_S = 5.0


class UserPush:
    """`push(users, frame)`: the frame (JSON text) to every live session of `users`, on any node."""

    def __init__(self, presence: PresencePort, actors: NamedActors) -> None:
        self._presence = presence
        self._actors = actors

    async def push(self, users: Iterable[int], frame: str) -> int:
        """How many sessions it reached (those of nodes that answered in time)."""
        return await self.push_many([(list(users), frame)])

    async def push_many(self, pushes: list[tuple[list[int], str]]) -> int:
        """Several frames, each to its users: one presence lookup, one call per node for them all."""
        wanted = sorted({user for users, _ in pushes for user in users})
        if not wanted:
            return 0
        try:
            where = await self._presence.lookup(wanted)
        except Exception as exc:
            log.warning("push: presence lookup failed: %r", exc)
            return 0
        reached = await asyncio.gather(*(self._to_node(node, set(found), pushes) for node, found in where.items()))
        return sum(reached)

    async def _to_node(self, node: str, here: set[int], pushes: list[tuple[list[int], str]]) -> int:
        mine = [(users, frame) for users, frame in ((sorted(here.intersection(u)), f) for u, f in pushes) if users]
        try:
            handle = self._actors.socket_node(node)
            reached: int = await asyncio.wait_for(handle.push_many.remote(mine), PUSH_TIMEOUT_S)
        except Exception as exc:  # gone, draining or slow: its sessions reconnect elsewhere and ask again
            log.warning("push to socket node %s failed: %r", node, exc)
            return 0
        return reached
