"""Embedded presence: which socket nodes hold live sessions of which users.

Socket nodes report sessions opening and closing (batched); conversation shards ask, once per
fan-out flush, where the recipients of a batch are.
"""

from __future__ import annotations

import uuid
from collections import defaultdict

import ray


class PresenceTable:
    def __init__(self) -> None:
        self._where: dict[int, dict[str, int]] = defaultdict(dict)  # user -> node -> sessions

    def apply(self, node: str, changes: list[tuple[int, int]]) -> list[tuple[int, bool]]:
        """`changes`: (user, +1 for a session opened / -1 for one closed). Returns the users whose
        sessions on all nodes went from none to some (True: online) or from some to none (False),
        net over `changes` (issue 18: their contacts are told)."""
        before: dict[int, bool] = {}
        for user, delta in changes:
            before.setdefault(user, user in self._where)
            nodes = self._where[user]
            count = nodes.get(node, 0) + delta
            if count > 0:
                nodes[node] = count
            else:
                nodes.pop(node, None)
                if not nodes:
                    del self._where[user]
        return [(user, user in self._where) for user, was in before.items() if was != (user in self._where)]

    def replace_node(self, node: str, sessions: dict[int, int]) -> None:
        self.drop_node(node)
        for user, count in sessions.items():
            if count > 0:
                self._where[user][node] = count

    def drop_node(self, node: str) -> list[int]:
        """Forget a node that is gone; the users who had sessions there only (now offline)."""
        gone = []
        for user in [u for u, nodes in self._where.items() if node in nodes]:
            del self._where[user][node]
            if not self._where[user]:
                del self._where[user]
                gone.append(user)
        return gone

    def lookup(self, users: list[int]) -> dict[str, list[int]]:
        """node -> the users among `users` with a session there."""
        out: dict[str, list[int]] = defaultdict(list)
        for user in users:
            for node in self._where.get(user, ()):
                out[node].append(user)
        return dict(out)

    def online(self, users: list[int]) -> list[int]:
        return [u for u in users if u in self._where]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class Presence:
    def __init__(self) -> None:
        self._table = PresenceTable()
        self._epoch = uuid.uuid4().hex  # a restarted actor has lost its table: nodes resync on change

    async def start(self) -> None:
        """Nothing to start: the table is in memory, and socket nodes fill it (see `epoch`)."""

    async def stop(self) -> None:
        """Nothing to stop: no background work, and the table dies with the actor."""

    def epoch(self) -> str:
        return self._epoch

    def apply(self, batches: list[tuple[str, list[tuple[int, int]]]]) -> list[list[tuple[int, bool]]]:
        """Each batch's online/offline transitions (`PresenceTable.apply`)."""
        return [self._table.apply(node, changes) for node, changes in batches]

    def replace_node(self, node: str, sessions: dict[int, int]) -> None:
        self._table.replace_node(node, sessions)

    def drop_node(self, node: str) -> list[int]:
        return self._table.drop_node(node)

    def lookup(self, users: list[int]) -> dict[str, list[int]]:
        return self._table.lookup(users)

    def online(self, users: list[int]) -> list[int]:
        return self._table.online(users)
