"""A socket node's stream to one conversation shard (see `stream`).

Batches go out as SUBMIT frames and their outcomes come back in the same order, so the oldest
waiting batch owns each OUTCOMES frame. The shard's deliveries for this node arrive on the same
stream. When the stream breaks (the shard died, or restarts elsewhere), every batch still waiting
fails, its senders are told to send again (resends are idempotent), and the link reconnects: the
shard's address is asked of the shard again, through Ray, since a restarted shard listens anew.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import orjson
import ray

from imray.actors import names
from imray.actors.stream import DELIVER, DELIVERED, HELLO, OUTCOMES, SUBMIT, frame, read_frame

log = logging.getLogger("imray.socket")
RECONNECT_S = (0.1, 0.25, 0.5, 1.0, 2.0)
ENDPOINT_TIMEOUT_S = 5.0


class ShardLinkLost(ConnectionError):
    pass


class ShardLink:
    def __init__(self, node_id: str, index: int, namespace: str, on_deliver: Callable[[bytes], None]) -> None:
        self._node_id = node_id
        self._index = index
        self._namespace = namespace
        self._on_deliver = on_deliver
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: deque[asyncio.Future[bytes]] = deque()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Connect now, in the background: the shard's deliveries need the stream before any send."""
        self._spawn(self._reconnect())

    async def submit(self, blob: bytes) -> bytes:
        """One batch of items; their outcomes, once the shard has committed them."""
        writer = await self._connected()
        if writer.is_closing():
            raise ShardLinkLost(f"stream to shard {self._index} lost")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        writer.write(frame(SUBMIT, blob))
        return await future

    async def _connected(self) -> asyncio.StreamWriter:
        async with self._lock:
            if self._writer is None:
                shard = ray.get_actor(names.shard(self._index), namespace=self._namespace)
                # Bounded: this holds the lock every send waits for, and once a node's reconnect to a
                # restarted shard stalled for good (where, unknown); the next attempt asks afresh.
                endpoint = await asyncio.wait_for(shard.stream_endpoint.remote(), ENDPOINT_TIMEOUT_S)
                reader, writer = await asyncio.open_connection(endpoint["host"], endpoint["port"])
                writer.write(frame(HELLO, orjson.dumps({"node": self._node_id, "secret": endpoint["secret"]})))
                self._writer = writer
                self._spawn(self._read(reader, writer))
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
                    self._on_deliver(payload)
                    writer.write(frame(DELIVERED, b""))
                else:
                    raise ValueError(f"unexpected frame {kind!r} from shard {self._index}")
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError) as exc:
            log.warning("stream to shard %s ended: %r", self._index, exc)
        finally:
            writer.close()
            if self._writer is writer:
                self._writer = None
            lost = ShardLinkLost(f"stream to shard {self._index} lost")
            while self._waiting:
                future = self._waiting.popleft()
                if not future.done():
                    future.set_exception(lost)
            self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        for attempt in range(1_000_000):  # as long as this node lives; the shard restarts by itself
            try:
                await self._connected()
                return
            except Exception as exc:  # the shard is restarting or gone for now
                if attempt % 10 == 0:
                    log.warning("no stream to shard %s yet: %r", self._index, exc)
                await asyncio.sleep(RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)])

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
