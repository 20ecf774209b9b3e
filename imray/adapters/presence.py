"""Presence: which socket nodes hold live sessions of which users.

Two adapters behind one small interface: the in-cluster `Presence` actor (embedded default) and
Redis (production). Socket nodes report sessions opening and closing and rewrite their whole
share every `REFRESH_S`; entries expire unless refreshed, so a node that vanishes without
saying so is forgotten, and a Redis that restarted empty is full again within one refresh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Protocol

REFRESH_S = 15.0
TTL_S = 45


class PresencePort(Protocol):
    async def epoch(self) -> str: ...  # changes when the store restarted empty: nodes then resync
    # Returns the users whose sessions on all nodes went from none to some (True) or from some to
    # none (False), net over `changes`: the store sees the totals (issue 18, contacts' presence).
    async def apply(self, node: str, changes: list[tuple[int, int]]) -> list[tuple[int, bool]]: ...
    async def replace_node(self, node: str, sessions: dict[int, int]) -> None: ...
    async def drop_node(self, node: str) -> list[int]: ...  # the users who had sessions there only
    async def lookup(self, users: list[int]) -> dict[str, list[int]]: ...


def net_transitions(users: list[int], states: list[tuple[bool, bool]]) -> list[tuple[int, bool]]:
    """(user, online now) for each user whose state before their first change differs from after
    their last (`users[i]` had `states[i]` = (online before, online after) its change)."""
    first: dict[int, bool] = {}
    last: dict[int, bool] = {}
    for user, (before, after) in zip(users, states, strict=True):
        first.setdefault(user, before)
        last[user] = after
    return [(user, last[user]) for user, was in first.items() if was != last[user]]


class ActorPresence:
    """The embedded adapter: one named actor holds the table."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    async def epoch(self) -> str:
        return str(await self._actor.epoch.remote())

    async def apply(self, node: str, changes: list[tuple[int, int]]) -> list[tuple[int, bool]]:
        transitions: list[list[tuple[int, bool]]] = await self._actor.apply.remote([(node, changes)])
        return transitions[0]

    async def replace_node(self, node: str, sessions: dict[int, int]) -> None:
        await self._actor.replace_node.remote(node, sessions)

    async def drop_node(self, node: str) -> list[int]:
        gone: list[int] = await self._actor.drop_node.remote(node)
        return gone

    async def lookup(self, users: list[int]) -> dict[str, list[int]]:
        return await self._actor.lookup.remote(users)


# KEYS[1] = the user's hash (node -> sessions), KEYS[2] = the node's set of users.
# ARGV = node, delta, ttl, user. Counts never go below zero; empty entries disappear. Returns
# whether the user had sessions anywhere before and after (the hash exists iff some node has one).
_APPLY = """
local before = redis.call('EXISTS', KEYS[1])
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[4])
else
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return {before, redis.call('EXISTS', KEYS[1])}
"""


class RedisPresence:
    """The production adapter: `imray:presence:u:{user}` hashes, `imray:presence:n:{node}` sets."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2,
                                              retry_on_timeout=False, health_check_interval=10)
        self._apply_sha = hashlib.sha1(_APPLY.encode()).hexdigest()

    async def epoch(self) -> str:
        return "redis"  # a Redis that restarted empty is refilled by the nodes' periodic rewrite

    async def close(self) -> None:
        await self._redis.aclose()

    @staticmethod
    def _user_key(user: int) -> str:
        return f"imray:presence:u:{user}"

    @staticmethod
    def _node_key(node: str) -> str:
        return f"imray:presence:n:{node}"

    async def apply(self, node: str, changes: list[tuple[int, int]]) -> list[tuple[int, bool]]:
        # Plain EVALSHA: redis-py's Script in a pipeline asks SCRIPT EXISTS first, a round trip more
        # for every batch (a batch of 5 changes: 370-385 -> 250-256 µs of client CPU, 465 -> 315 µs
        # wall, local Redis). A Redis that does not hold the script (new, restarted, flushed) refuses
        # each call with NOSCRIPT, having run none of them: those are sent again after SCRIPT LOAD.
        from redis.exceptions import NoScriptError

        results: list[Any] = [None] * len(changes)
        todo = list(range(len(changes)))
        for attempt in (1, 2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for i in todo:
                    user, delta = changes[i]
                    pipe.evalsha(self._apply_sha, 2, self._user_key(user), self._node_key(node),
                                 node, delta, TTL_S, user)
                replies = await pipe.execute(raise_on_error=False)
            refused = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    refused.append(i)
                elif isinstance(reply, Exception):
                    raise reply
                else:
                    results[i] = reply
            if not refused:
                break
            if attempt == 2:
                raise NoScriptError("the presence script was refused again right after SCRIPT LOAD")
            await self._redis.script_load(_APPLY)
            todo = refused
        return net_transitions([user for user, _ in changes], [(bool(b), bool(a)) for b, a in results])

    async def _idempotent(self, fill: Callable[[Any], object]) -> list[Any]:
        """A pipeline of commands that may run twice, tried twice: redis-py retries single commands
        on a dropped connection but not pipelines, and after a Redis restart every pooled connection
        fails once ("Connection closed by server": the server API's presence answered 500, CI)."""
        from redis.exceptions import ConnectionError as RedisConnectionError

        for attempt in (1, 2):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    fill(pipe)
                    return list(await pipe.execute())
            except RedisConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def replace_node(self, node: str, sessions: dict[int, int]) -> None:
        old = {int(u) for u in await self._redis.smembers(self._node_key(node))}

        def fill(pipe: Any) -> None:
            for user in old - set(sessions):
                pipe.hdel(self._user_key(user), node)
            for user, count in sessions.items():
                pipe.hset(self._user_key(user), node, count)
                pipe.expire(self._user_key(user), TTL_S)
            pipe.delete(self._node_key(node))
            if sessions:
                pipe.sadd(self._node_key(node), *sessions)
                pipe.expire(self._node_key(node), TTL_S)
        await self._idempotent(fill)

    async def drop_node(self, node: str) -> list[int]:
        had = sorted(int(u) for u in await self._redis.smembers(self._node_key(node)))
        await self.replace_node(node, {})
        if not had:
            return []
        left = await self._idempotent(lambda pipe: [pipe.exists(self._user_key(user)) for user in had])
        return [user for user, exists in zip(had, left, strict=True) if not exists]

    async def lookup(self, users: list[int]) -> dict[str, list[int]]:
        found = await self._idempotent(lambda pipe: [pipe.hkeys(self._user_key(user)) for user in users])
        out: dict[str, list[int]] = {}
        for user, nodes in zip(users, found, strict=True):
            for node in nodes:
                out.setdefault(node.decode() if isinstance(node, bytes) else node, []).append(user)
        return out

