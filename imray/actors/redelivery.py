"""What a socket node may have missed from a shard: re-delivered when its stream comes back.

A shard answers a batch once it is committed, then fans its messages out. If it dies in between
(or a stream breaks with DELIVER frames in flight), those messages are in history but no open
session heard of them. So each socket node remembers, per shard, the newest message `ts` it has
had from it (the committing shard's clock, which is also the start of the message's msg_id, see
`MessageIds`), and sends `since` (that ts less a margin) in every HELLO. Before the shard delivers
anything else to that node, it reads what it owns that was committed since then and delivers it
first; the node drops every message whose seq it has already delivered for its conversation (see
`SocketServer.deliver`), so what arrives twice is shown once, and in order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import orjson

from imray.actors.wire import DeliveryPart
from imray.domain.conversations import ConvId, parse_conv, shard_of
from imray.domain.messaging import MsgFrame, hidden, hidden_stream

# Node side: `since` lies this far before the newest ts had from the shard, for a shard whose clock
# stepped back between commits (a restarted shard may run on another host).
MARGIN_MS = 2_000
# Node side: once a stream breaks, what was committed more than this before the break is not asked
# for again (a node that had nothing from a shard for long would otherwise ask for all of it): the
# fan-out runs milliseconds behind the commits, seconds when a node is slow.
LOOKBACK_MS = 10_000
# Shard side: bounds on one re-delivery, whatever a node asks for. Rows are read for every shard
# (the owner is a hash of the conversation, which SQL cannot filter on), the newest first.
WINDOW_MS = 60_000
MAX_ROWS = 10_000


def now_ms() -> int:
    return int(time.time() * 1000)


class CommittedStore(Protocol):
    """What a re-delivery reads (`SqlMessageStore`)."""

    async def committed_since(self, since_ms: int, limit: int) -> list[MsgFrame]: ...
    async def members(self, convs: Sequence[ConvId]) -> dict[str, frozenset[int] | None]: ...
    async def blockers(self, groups: Mapping[str, frozenset[int]]) -> dict[str, dict[int, frozenset[int]]]: ...


async def missed_since(store: CommittedStore, index: int, shard_count: int, since_ms: int) -> list[DeliveryPart]:
    """Shard `index`'s messages committed since `since_ms`, each for all its current members, in seq
    order per conversation; nobody is skipped (the sending session is not known any more)."""
    since_ms = max(since_ms, now_ms() - WINDOW_MS)
    mine = [m for m in await store.committed_since(since_ms, MAX_ROWS) if shard_of(m["conv"], shard_count) == index]
    if not mine:
        return []
    convs = [parse_conv(conv) for conv in {m["conv"] for m in mine}]
    members = await store.members(convs)
    blockers = await store.blockers({str(c): found for c in convs if c.is_group
                                     and (found := members.get(str(c))) is not None})
    mine.sort(key=lambda m: (m["conv"], m["seq"]))
    parts: list[DeliveryPart] = []
    for m in mine:
        users = members.get(m["conv"])
        if not users:
            continue
        hiding = blockers.get(m["conv"], {}).get(m["from"], frozenset())
        parts.append((orjson.dumps(m).decode(), sorted(users - hiding), None, m["conv"], m["seq"], m["ts"]))
        if hiding & users:
            parts.append((orjson.dumps(hidden(m)).decode(), sorted(hiding & users), None, hidden_stream(m["conv"]),
                          m["seq"], m["ts"]))
    return parts


class SinceClock:
    """A node's memory of one shard's stream: the `since` its next HELLO carries."""

    __slots__ = ("_floor", "newest")

    def __init__(self) -> None:
        self.newest = 0  # the newest message ts delivered from the shard (the shard's clock)
        self._floor = now_ms() - MARGIN_MS  # nothing before this node's stream existed concerns it

    def broke(self) -> None:
        self._floor = max(self._floor, now_ms() - LOOKBACK_MS)

    def since(self) -> int:
        return max(self.newest - MARGIN_MS, self._floor)
