"""Catch-up over the socket (issue 21): what a reconnecting session missed, read where it connects.

A session that authenticates with `resume: true` names the last seq it has of each conversation in
a `resume` frame; the node reads what came after from the database, with the same access rules and
the same frames as HTTP history (`HistoryReader`: 403 for a stranger, deleted-for-me placeholders,
blocked senders hidden), and sends it before anything live. A reconnect storm then costs one frame
per session instead of an HTTP request through Serve.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from imray.deployments.history import HistoryReader
from imray.domain.errors import DomainError

PAGE = 200  # history's own page size
PER_CONV = 1000  # messages caught up per conversation; beyond, the client pages through history


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

    async def __call__(self, user_id: int, seen: dict[str, int]) -> Resumed:
        resumed = Resumed()
        for conv, after in seen.items():
            last = after
            frames: list[bytes] = []
            try:
                while True:
                    want = min(PAGE, self._per_conv - (last - after))  # seqs have no gaps: seqs are messages
                    if want <= 0:
                        resumed.truncated.append(conv)
                        break
                    page = (await self._history.read(user_id, conv, last, None, want))["messages"]
                    frames += [orjson.dumps(frame) for frame in page]
                    if page:
                        last = page[-1]["seq"]
                    if len(page) < want:
                        break
            except DomainError as exc:  # not a member, no such conversation, not a conversation id
                resumed.refused[conv] = exc.code
                continue
            resumed.frames += frames
            resumed.caught[conv] = last
        return resumed
