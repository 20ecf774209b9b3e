"""A socket node's stream to one conversation shard (see `stream`).

Batches go out as SUBMIT frames and their outcomes come back in the same order, so the oldest
waiting batch owns each OUTCOMES frame. The shard's deliveries for this node arrive on the same
stream. When the stream breaks (the shard died, or restarts elsewhere), every batch still waiting
fails, its senders are told to send again (resends are idempotent), and the link reconnects: the
shard's address is asked of the shard again, through Ray, since a restarted shard listens anew.
Every HELLO carries `since`, from which the shard re-delivers what this node may have missed
(`redelivery`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import orjson

from imray.actors.redelivery import SinceClock
from imray.actors.stream import DELIVER, DELIVERED, HELLO, OUTCOMES, SUBMIT, frame, read_frame
from imray.adapters.named_actors import NamedActors
from imray.domain.nodes import ShardEndpoint
from imray.lifecycle import Tasks

log = logging.getLogger("imray.socket")
RECONNECT_S = (0.1, 0.25, 0.5, 1.0, 2.0)  # backoff while a shard restarts: quick first, then 2 s apart
ENDPOINT_TIMEOUT_S = 5.0  # also bounds opening the TCP connection to the shard
SUBMIT_TIMEOUT_S = 30.0  # the default of `shard_submit_timeout_s`


class ShardLinkLost(ConnectionError):
    pass


class ShardTimeout(TimeoutError):
    """The shard gave no outcome in time: unknown whether it stored the batch (a resend is safe)."""


class ShardLink:
    """`on_deliver` takes a DELIVER payload and returns the newest message ts in it (0 if none)."""

    def __init__(self, node_id: str, index: int, actors: NamedActors, on_deliver: Callable[[bytes], int],
                 timeout_s: float = SUBMIT_TIMEOUT_S) -> None:
        self._node_id = node_id
        self._timeout_s = timeout_s
        self._index = index
        self._actors = actors
        self._on_deliver = on_deliver
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: deque[asyncio.Future[bytes]] = deque()
        self._lock = asyncio.Lock()
        self._tasks = Tasks(f"{node_id} stream to shard {index}")
        self._stopped = False
        self._since = SinceClock()

    def start(self) -> None:
        """Connect now, in the background: the shard's deliveries need the stream before any send."""
        self._tasks.spawn(self._reconnect(), name=f"connect to shard {self._index}")

    async def stop(self) -> None:
        """Stop reconnecting, close the stream, and fail every batch still waiting for its outcome."""
        self._stopped = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._fail_waiting()
        await self._tasks.cancel_all()

    async def submit(self, blob: bytes) -> bytes:
        """One batch of items; their outcomes, once the shard has committed them (ShardTimeout
        after `timeout_s`, connecting included)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                writer = await self._connected()
                if writer.is_closing():
                    raise self._lost()
                future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                self._waiting.append(future)
                writer.write(frame(SUBMIT, blob))
                # On timeout the future is cancelled but keeps its place: the shard answers in order,
                # and its late OUTCOMES frame must still be matched to it (and dropped).
                return await future
        except TimeoutError:
            raise ShardTimeout(f"shard {self._index} gave no outcome in {self._timeout_s} s") from None

    async def _connected(self) -> asyncio.StreamWriter:
        async with self._lock:
            if self._stopped:
                raise self._lost()
            if self._writer is None:
                shard = self._actors.shard(self._index)
                # Bounded: this holds the lock every send waits for, and an endpoint call that never
                # answers must not stall them all; the next attempt asks afresh.
                endpoint: ShardEndpoint = await asyncio.wait_for(shard.stream_endpoint.remote(), ENDPOINT_TIMEOUT_S)
                reader, writer = await asyncio.wait_for(asyncio.open_connection(endpoint.host, endpoint.port),
                                                        ENDPOINT_TIMEOUT_S)
                writer.write(frame(HELLO, orjson.dumps({"node": self._node_id, "secret": endpoint.secret,
                                                        "since": self._since.since()})))
                self._writer = writer
                self._tasks.spawn(self._read(reader, writer), name=f"read shard {self._index}")
            return self._writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                kind, payload = await read_frame(reader)
                if kind == OUTCOMES:
                    future = self._waiting.popleft()
                    if not future.done():
                        future.set_result(payload)
                elif kind == DELIVER:
                    newest = self._on_deliver(payload)
                    if newest > self._since.newest:
                        self._since.newest = newest
                    writer.write(frame(DELIVERED, b""))
                else:
                    raise ValueError(f"unexpected frame {kind!r} from shard {self._index}")
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError) as exc:
            log.warning("stream to shard %s ended: %r", self._index, exc)
        finally:
            self._since.broke()
            writer.close()
            if self._writer is writer:
                self._writer = None
            self._fail_waiting()
            if not self._stopped:
                self._tasks.spawn(self._reconnect(), name=f"reconnect to shard {self._index}")

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._stopped:  # as long as this node lives; the shard restarts by itself
            try:
                await self._connected()
                return
            except Exception as exc:  # the shard is restarting or gone for now
                if self._stopped:
                    return
                if attempt % 10 == 0:
                    log.warning("no stream to shard %s yet: %r", self._index, exc)
                await asyncio.sleep(RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)])
                attempt += 1

    def _fail_waiting(self) -> None:
        lost = self._lost()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(lost)

    def _lost(self) -> ShardLinkLost:
        return ShardLinkLost(f"stream to shard {self._index} lost")
