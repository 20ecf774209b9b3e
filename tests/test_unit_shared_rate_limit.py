"""The shared (Redis) rate limiter when Redis is not there: checks made together fall back to the
replica's own counters, so a flood is still cut and nobody is refused for the store being down."""

from __future__ import annotations

import asyncio
import socket

from imray.adapters.rate_limits import SharedRateLimiter


def _closed_port() -> int:
    with socket.socket() as s:  # bound then released: nothing listens there
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_with_redis_down_checks_made_together_count_on_the_replicas_own_counters():
    async def test() -> tuple[list[bool], list[bool]]:
        limiter = SharedRateLimiter(f"redis://127.0.0.1:{_closed_port()}/0", 25)
        flood = await asyncio.gather(*(limiter.check("u:flood") for _ in range(40)))
        quiet = await asyncio.gather(*(limiter.check("u:quiet") for _ in range(3)))
        return flood, quiet

    flood, quiet = asyncio.run(test())
    assert sum(flood) == 25 and flood[:25] == [True] * 25  # the first 25 pass, the rest are refused
    assert quiet == [True] * 3
