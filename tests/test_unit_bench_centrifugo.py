"""The Centrifugo baseline's memory reading, without a server."""

from __future__ import annotations

import asyncio

from imray.bench.centrifugo import held_open


class _Conn:
    def __init__(self, open_now: list[int]) -> None:
        self._open_now = open_now
        open_now[0] += 1

    async def close(self) -> None:
        self._open_now[0] -= 1


def test_memory_is_read_once_every_connection_is_open_however_long_the_opening_takes():
    open_now, seen = [0], []

    async def slow_open(i: int) -> _Conn:
        await asyncio.sleep(0.002)  # 300 of them: longer than any fixed wait of a few milliseconds
        return _Conn(open_now)

    opened = asyncio.run(held_open(slow_open, 300, lambda n: seen.append((n, open_now[0])), settle_s=0.01))
    assert opened == 300
    assert seen == [(300, 300)]  # read once, with all 300 open
    assert open_now == [0]  # and all closed after
