"""Catch-up over the socket (issue 21): what a reconnecting session missed, read where it connects.

A session that authenticates with `resume: true` names the last seq it has of each conversation in
a `resume` frame; the node reads what came after from the database, with the same access rules and
the same frames as HTTP history (`HistoryReader`: 403 for a stranger, deleted-for-me placeholders,
blocked senders hidden), and sends it before anything live. A reconnect storm then costs one frame
per session instead of an HTTP request through Serve, and the first pages of the sessions resuming
together are read in one database call (`storage.catch_up_pages`): a batch leaves when the reader
it goes to is free, so batches grow with the storm.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson

from imray.actors.batching import Batcher
from imray.deployments.history import HistoryReader
from imray.domain.conversations import parse_conv
from imray.domain.errors import DomainError
from imray.domain.messaging import MsgFrame
from imray.storage.catch_up_pages import PageWant

PAGE = 200  # history's own page size
PER_CONV = 1000  # messages caught up per conversation; beyond, the client pages through history
READERS = 2  # batched first-page reads in flight at once (the node's database threads)


@dataclass
class Resumed:
    frames: list[bytes] = field(default_factory=list)  # msg frames (JSON), conversation by conversation
    caught: dict[str, int] = field(default_factory=dict)  # conv -> the last seq sent (its seen if none)
    truncated: list[str] = field(default_factory=list)  # more than PER_CONV missed: page the rest
    refused: dict[str, str] = field(default_factory=dict)  # conv -> error code (forbidden, not_found...)

    def summary(self) -> bytes:
        """The `resume_ok` frame that follows the catch-up."""
        return orjson.dumps({"type": "resume_ok", "caught": self.caught, "truncated": self.truncated,
                             "refused": self.refused})


class CatchUp:
    def __init__(self, history: HistoryReader, per_conv: int = PER_CONV) -> None:
        self._history = history
        self._per_conv = per_conv
        self._firsts: Batcher[int, PageWant, list[MsgFrame] | None] = Batcher(self._first_pages)

    async def _first_pages(self, _reader: int, wants: list[PageWant]) -> list[list[MsgFrame] | None]:
        return await self._history.first_pages(wants)

    async def __call__(self, user_id: int, seen: dict[str, int]) -> Resumed:
        resumed = Resumed()
        first = min(PAGE, self._per_conv)
        wants: dict[str, asyncio.Future[list[MsgFrame] | None]] = {}
        if first > 0:
            for conv, after in seen.items():
                try:
                    want = PageWant(user_id, parse_conv(conv), after, first)
                except DomainError:
                    continue  # not a conversation id: `read` below refuses it and says why
                wants[conv] = self._firsts.submit(user_id % READERS, want)
        # The database away: the batch fails, and with it this catch-up (the caller says so to the client).
        pages = dict(zip(wants, await asyncio.gather(*wants.values()), strict=True))
        for conv, after in seen.items():
            page = pages.get(conv)
            frames = [orjson.dumps(frame) for frame in page or ()]
            last = page[-1]["seq"] if page else after
            if page is None or len(page) == first:  # not answered in the batch, or more than its page
                try:
                    last = await self._rest(user_id, conv, after, last, frames, resumed)
                except DomainError as exc:  # not a member, no such conversation, not a conversation id
                    resumed.refused[conv] = exc.code
                    continue
            resumed.frames += frames
            resumed.caught[conv] = last
        return resumed

    async def _rest(self, user_id: int, conv: str, after: int, last: int, frames: list[bytes],
                    resumed: Resumed) -> int:
        """The pages after `last` onto `frames`, up to the conversation's cap (then it is marked
        truncated); the last seq read."""
        while True:
            want = min(PAGE, self._per_conv - (last - after))  # seqs have no gaps: seqs are messages
            if want <= 0:
                resumed.truncated.append(conv)
                return last
            page = (await self._history.read(user_id, conv, last, None, want))["messages"]
            frames += [orjson.dumps(frame) for frame in page]
            if page:
                last = page[-1]["seq"]
            if len(page) < want:
                return last
