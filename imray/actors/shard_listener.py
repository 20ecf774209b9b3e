"""The shard's end of its socket nodes' streams (`shard_link` is the node's end; see `stream`).

A node opens its stream with a HELLO carrying the secret this shard handed out through Ray, and
`since`, from which the fan-out re-delivers what the node may have missed (`redelivery`). Its
SUBMIT frames go to the committer, and the OUTCOMES go back in the order the SUBMITs came. The
fan-out writes the node's DELIVER frames on the same stream; each DELIVERED ack resolves the oldest
delivery still waiting, and a stream that breaks fails every delivery still waiting on it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections import deque
from collections.abc import Callable, KeysView
from functools import partial

import orjson

from imray.actors.stream import DELIVER, DELIVERED, HELLO, MAX_HELLO, OUTCOMES, SUBMIT, frame, read_frame
from imray.actors.wire import pack_outcomes, unpack_items
from imray.domain.messaging import NOT_STORED, Item, Outcome
from imray.domain.nodes import ShardEndpoint

log = logging.getLogger("imray.shard")
HELLO_TIMEOUT_S = 10.0

# Queues one SUBMIT's items for commit; the future resolves with their outcomes, futures in queue order.
Submit = Callable[[list[Item]], "asyncio.Future[list[Outcome]]"]
# A node's stream is open: (node id, its HELLO's `since` in ms, None if it sent none).
OnHello = Callable[[str, "int | None"], None]


class NodeStream:
    """A socket node's stream to this shard, and the delivery batches it has yet to acknowledge."""

    __slots__ = ("_delivered", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._delivered: deque[asyncio.Future[None]] = deque()

    def deliver(self, blob: bytes) -> asyncio.Future[None]:
        """Write one DELIVER frame; the future resolves when the node acknowledges it."""
        taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._delivered.append(taken)
        self.writer.write(frame(DELIVER, blob))
        return taken

    def acknowledged(self) -> None:
        """A DELIVERED ack: the node acknowledges in the order it was sent (IndexError if nothing waits)."""
        taken = self._delivered.popleft()
        if not taken.done():
            taken.set_result(None)

    def fail(self, exc: BaseException) -> None:
        """The node is gone: what it had not taken is in history, for its clients to catch up from."""
        while self._delivered:
            waiting = self._delivered.popleft()
            if not waiting.done():
                waiting.set_exception(exc)


class NodeStreams:
    """The open streams by node id: where the fan-out writes each node's deliveries."""

    def __init__(self) -> None:
        self._by_node: dict[str, NodeStream] = {}

    def node_ids(self) -> KeysView[str]:
        return self._by_node.keys()

    def deliver(self, node_id: str, blob: bytes) -> asyncio.Future[None] | None:
        """Send on `node_id`'s stream: the future of its ack, or None when that node has no stream."""
        stream = self._by_node.get(node_id)
        if stream is None or stream.writer.is_closing():
            return None
        return stream.deliver(blob)

    def opened(self, node_id: str, writer: asyncio.StreamWriter) -> NodeStream:
        stream = self._by_node[node_id] = NodeStream(writer)  # a node's new stream replaces its old one
        return stream

    def closed(self, node_id: str, stream: NodeStream) -> None:
        if self._by_node.get(node_id) is stream:
            del self._by_node[node_id]
        stream.fail(ConnectionError(f"stream from node {node_id} lost"))

    def reset(self, node_id: str) -> bool:
        """Close `node_id`'s stream (it fell behind or stopped acknowledging): the node opens a new
        one, whose HELLO asks for what it missed (`redelivery`). False if it had no stream."""
        stream = self._by_node.get(node_id)
        if stream is None:
            return False
        stream.writer.close()  # its reader then ends, and `closed` fails what it had not acknowledged
        return True

    def close_all(self) -> None:
        for stream in list(self._by_node.values()):
            stream.writer.close()  # each stream's reader then ends, and `closed` runs for it


class ShardListener:
    """The TCP server socket nodes stream to, on this shard's host, from `start()` to `stop()`."""

    def __init__(self, index: int, host: str, submit: Submit, streams: NodeStreams, on_hello: OnHello) -> None:
        self._index = index
        self._host = host
        self._submit = submit
        self._streams = streams
        self._on_hello = on_hello
        self._secret = secrets.token_hex(32)  # handed out through Ray, which authenticates who asks
        self._server: asyncio.Server | None = None
        self._port = 0

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._on_stream, self._host, 0)
            self._port = self._server.sockets[0].getsockname()[1]

    def endpoint(self) -> ShardEndpoint:
        """Where socket nodes open their stream to this shard, and the secret that admits them."""
        if self._server is None:
            raise RuntimeError(f"shard {self._index}: the listener has not started")
        return ShardEndpoint(self._host, self._port, self._secret)

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        self._streams.close_all()
        await server.wait_closed()

    async def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        node_id, stream = "", None
        try:
            kind, payload = await asyncio.wait_for(read_frame(reader, MAX_HELLO), HELLO_TIMEOUT_S)
            hello = orjson.loads(payload) if kind == HELLO else {}
            if not (isinstance(hello, dict) and hmac.compare_digest(str(hello.get("secret", "")), self._secret)):
                log.warning("shard %s: a stream without the secret was refused", self._index)
                return
            node_id = str(hello["node"])
            stream = self._streams.opened(node_id, writer)
            since = hello.get("since")
            self._on_hello(node_id, since if isinstance(since, int) and not isinstance(since, bool) else None)
            submit = self._submit
            while True:
                kind, payload = await read_frame(reader)
                if kind == SUBMIT:
                    items = unpack_items(payload)
                    submit(items).add_done_callback(partial(_answer, writer, len(items)))
                elif kind == DELIVERED:
                    stream.acknowledged()
                else:
                    raise ValueError(f"unexpected frame {kind!r}")
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ValueError, KeyError, TypeError,
                IndexError) as exc:
            if stream is not None:
                log.info("shard %s: stream from node %s ended: %r", self._index, node_id, exc)
        finally:
            if stream is not None:
                self._streams.closed(node_id, stream)
            writer.close()


def _answer(writer: asyncio.StreamWriter, count: int, future: asyncio.Future[list[Outcome]]) -> None:
    # Futures resolve in queue order and their callbacks run in that order: so do the answers.
    if writer.is_closing():
        return
    if future.cancelled() or future.exception() is not None:
        outcomes = [Outcome(error=NOT_STORED)] * count
    else:
        outcomes = future.result()
    writer.write(frame(OUTCOMES, pack_outcomes(outcomes)))
