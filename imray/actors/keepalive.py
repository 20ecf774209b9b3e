"""One task pings every open connection of a socket node, instead of one task per connection.

The websockets library's own keepalive runs a task per connection (a sleeping coroutine, its
timer and futures): measured at ~1.5 KB of an idle connection's ~4.5 KB in a bare websockets
server, which is most of the margin of a session's memory against the peer's (issue 21). Here the
connections are split into `slices` rounds; every `interval / slices` seconds one round is pinged,
so each connection is pinged once per `interval`, as before, and a node's pings are spread over the
interval rather than sent in one burst. A connection whose pong has not come within `timeout` of
its ping is closed with 1011, as the library does.
"""

from __future__ import annotations

import asyncio
import logging

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

log = logging.getLogger("imray.socket")
CLOSE_GRACE_S = 2.0  # a close handshake the peer does not finish within this is cut (it did not pong)


class KeepAlive:
    """`add` a connection when it is accepted and `discard` it when it is lost; `run` pings them."""

    def __init__(self, interval: float, timeout: float, slices: int = 20) -> None:
        self.interval = interval
        self.timeout = timeout
        self._rounds: list[set[Connection]] = [set() for _ in range(max(1, slices))]
        self._next = 0  # the round the next added connection joins
        self._waiting: dict[Connection, tuple[asyncio.Future[float], float]] = {}  # pong, its deadline
        self._closing: set[asyncio.Task[None]] = set()

    def add(self, conn: Connection) -> None:
        self._rounds[self._next].add(conn)
        self._next = (self._next + 1) % len(self._rounds)

    def discard(self, conn: Connection) -> None:
        for connections in self._rounds:
            connections.discard(conn)
        self._waiting.pop(conn, None)

    def __len__(self) -> int:
        return sum(len(connections) for connections in self._rounds)

    async def run(self) -> None:
        """Forever: one round of pings per `interval / slices`, after failing the overdue pongs."""
        pause = self.interval / len(self._rounds)
        loop = asyncio.get_running_loop()
        while True:
            for connections in self._rounds:
                await asyncio.sleep(pause)
                self._fail_overdue(loop.time())
                deadline = loop.time() + self.timeout
                for conn in list(connections):
                    # A connection over its high-water mark (a client that does not read) is skipped,
                    # as the library's ping would wait for it to drain: its session's backlog limit
                    # is what cuts such a client.
                    if conn.protocol.state is State.OPEN and not conn.paused and conn not in self._waiting:
                        await self._ping(conn, deadline)

    async def _ping(self, conn: Connection, deadline: float) -> None:
        try:
            # Not suspended: the transport is below its high-water mark. The library types the pong
            # as an Awaitable; it is a Future, which ensure_future returns as it is.
            pong = asyncio.ensure_future(await conn.ping())
        except ConnectionClosed:
            return  # closing meanwhile: its loss discards it
        if not pong.done():
            self._waiting[conn] = (pong, deadline)

    def _fail_overdue(self, now: float) -> None:
        for conn, (pong, deadline) in list(self._waiting.items()):
            if pong.done():
                del self._waiting[conn]
            elif now >= deadline:
                del self._waiting[conn]
                task = asyncio.get_running_loop().create_task(self._close(conn))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def _close(self, conn: Connection) -> None:
        log.info("keepalive: no pong within %s s; closing the connection", self.timeout)
        try:
            await asyncio.wait_for(conn.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout"), CLOSE_GRACE_S)
        except TimeoutError:
            conn.transport.abort()
