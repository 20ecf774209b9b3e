"""The batches between socket nodes and shards (items, outcomes, deliveries): one orjson blob each.

The blobs are the payloads of the node-shard TCP streams (`stream`); a deliveries blob is also the
argument of the Ray `deliver` call, the fallback while a node has no stream to a shard. orjson
encodes an item in about 0.1 µs, and a bytes argument crosses a Ray call as it is (0.3 µs per
call), where Ray serializes a list of small Python objects through msgpack with cloudpickle for
every tuple and dataclass in it (measured: 2.8 µs per send item and 1.3 µs per delivery on each
side of a call). Strings reach here only from frames orjson has already parsed (no lone
surrogates), so encoding cannot fail on client input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from imray.domain.messaging import Item, Outcome, ReadItem, SendItem, TypingItem

# A delivery as it travels to a socket node: (frame text, users, the session to skip, conv, seq,
# ts). conv, seq and ts are a message's (`Delivery`); receipts and typing carry "", 0, 0. The node
# drops a message whose seq it has already delivered for that conversation, and remembers the
# newest ts it has had from each shard, to ask for what it may have missed when a stream comes back.
# A group message's copy for readers who block its sender travels under `messaging.hidden_stream(conv)`.
DeliveryPart = tuple[str, Sequence[int], str | None, str, int, int]

_SEND, _READ, _TYPING = 0, 1, 2


def _row(item: Item) -> tuple[Any, ...]:
    """An item as a JSON array: its kind, then its fields in order."""
    if isinstance(item, SendItem):
        if item.reply_to or item.mentions:  # issue 18's fields travel only when set
            return (_SEND, item.sender, item.session, item.client_id, item.conv, item.kind, item.body, item.file_id,
                    item.reply_to, item.mentions)
        return (_SEND, item.sender, item.session, item.client_id, item.conv, item.kind, item.body, item.file_id)
    if isinstance(item, ReadItem):
        return (_READ, item.user, item.session, item.conv, item.seq)
    if isinstance(item, TypingItem):
        return (_TYPING, item.user, item.session, item.conv)
    raise TypeError(f"{type(item).__name__} does not travel on the node streams")  # changes and events go by Ray


def _send(sender: int, session: str, client_id: str, conv: str, kind: str, body: str, file_id: str | None,
          reply_to: int = 0, mentions: Sequence[int] = ()) -> SendItem:
    return SendItem(sender, session, client_id, conv, kind, body, file_id, reply_to, tuple(mentions))


_KINDS: dict[int, Any] = {_SEND: _send, _READ: ReadItem, _TYPING: TypingItem}


def pack_items(items: Sequence[Item]) -> bytes:
    return orjson.dumps([_row(item) for item in items])


def unpack_items(blob: bytes) -> list[Item]:
    return [_KINDS[row[0]](*row[1:]) for row in orjson.loads(blob)]


def pack_outcomes(outcomes: Sequence[Outcome]) -> bytes:
    return orjson.dumps([(o.ack, o.error) for o in outcomes])


def unpack_outcomes(blob: bytes) -> list[Outcome]:
    return [Outcome(ack, tuple(error) if error is not None else None) for ack, error in orjson.loads(blob)]


def pack_deliveries(part: Sequence[DeliveryPart]) -> bytes:
    return orjson.dumps(part)


def unpack_deliveries(blob: bytes) -> list[DeliveryPart]:
    """The deliveries in the order they were packed; each comes back as a JSON array (a list, with a
    list of users), which its reader unpacks as `text, users, skip, conv, seq, ts`."""
    return orjson.loads(blob)
