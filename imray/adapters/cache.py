"""Read-through caches (users, group memberships) and the refresh-token denylist.

Embedded: a small TTL map per process. Production: Redis, shared by every replica, so an
invalidation by one replica is seen by all. A cache that fails is skipped, never an error.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson

log = logging.getLogger("imray.cache")
# No sentinel object here: Serve pickles deployment classes by value, which would copy a sentinel.
# Absent is None, so cached values are never None themselves.


class Cache(Protocol):
    async def get(self, key: str) -> Any: ...  # None when absent
    async def set(self, key: str, value: Any, ttl_s: int) -> None: ...
    async def delete(self, *keys: str) -> None: ...


class LocalCache:
    def __init__(self, capacity: int = 50_000) -> None:
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._capacity = capacity

    async def get(self, key: str) -> Any:
        found = self._data.get(key)
        if found is None or found[0] < time.monotonic():
            self._data.pop(key, None)
            return None
        return found[1]

    async def set(self, key: str, value: Any, ttl_s: int) -> None:
        self._data[key] = (time.monotonic() + ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self._capacity:
            self._data.popitem(last=False)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)


class RedisCache:
    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)

    async def close(self) -> None:
        await self._redis.aclose()

    async def get(self, key: str) -> Any:
        try:
            raw = await self._redis.get(key)
        except Exception as exc:
            log.debug("cache get %s: %r", key, exc)
            return None
        return None if raw is None else orjson.loads(raw)

    async def set(self, key: str, value: Any, ttl_s: int) -> None:
        try:
            await self._redis.set(key, orjson.dumps(value), ex=ttl_s)
        except Exception as exc:
            log.debug("cache set %s: %r", key, exc)

    async def delete(self, *keys: str) -> None:
        try:
            await self._redis.delete(*keys)
        except Exception as exc:  # a stale entry then lives until its TTL: keep TTLs short
            log.warning("cache invalidation of %s failed: %r", keys, exc)


def user_key(user_id: int) -> str:
    return f"imray:cache:user:{user_id}"


def revoked_family_key(family: str) -> str:
    return f"imray:revoked:family:{family}"
