"""The data plane between socket nodes and conversation shards: one TCP stream per (node, shard).

Measured on a 2-core box between two async actors: a Ray actor call takes 1.2 ms there and back
(p50, one at a time; 3.7 ms with eight in flight, 2,000 calls/s at most), a frame on an open stream
between the same two actors 0.08 ms (86,000/s). So Ray stays the control plane (it places, restarts
and finds the actors, and hands each node a shard's address and the secret that admits it) and the
batches travel on the stream. TCP keeps them in order, and so do both ends (each handles a
stream's frames in the order they came): that is what keeps per-conversation order. Deliveries are
acknowledged, and a shard keeps one DELIVER batch in flight per node: otherwise a node slower than
its shards (a big group's fan-out) lets seconds of deliveries wait in socket buffers, out of reach
of batching.

A frame is 1 byte of kind, 4 bytes of big-endian length, then the payload (see `wire`).
"""

from __future__ import annotations

import asyncio
import struct

HELLO = b"H"  # node -> shard, first: {"node": id, "secret": ..., "since": ms} (see `redelivery`)
SUBMIT = b"S"  # node -> shard: wire.pack_items
OUTCOMES = b"O"  # shard -> node: wire.pack_outcomes, one per SUBMIT, in the same order
DELIVER = b"D"  # shard -> node: wire.pack_deliveries
DELIVERED = b"K"  # node -> shard, empty: one per DELIVER, once its frames are with the sessions

HEADER = struct.Struct(">cI")
MAX_HELLO = 4096
MAX_FRAME = 1 << 30  # past the hello the peer is a trusted actor: this only stops a runaway length


def frame(kind: bytes, payload: bytes) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader, max_bytes: int = MAX_FRAME) -> tuple[bytes, bytes]:
    """The next frame; IncompleteReadError at the end of the stream, ValueError for an oversized one."""
    kind, size = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > max_bytes:
        raise ValueError(f"a frame of {size} bytes is over the limit of {max_bytes}")
    return kind, await reader.readexactly(size)
