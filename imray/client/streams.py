"""Per-conversation ordering without I/O: deliver each seq once, in order, hold what runs ahead."""

from __future__ import annotations

from dataclasses import dataclass

from imray.client.events import Message


@dataclass(frozen=True)
class Gap:
    """Conversation `conv` is missing seqs `after_seq + 1` to `before_seq - 1`: read them from history."""

    conv: str
    after_seq: int
    before_seq: int


class Streams:
    """The `seen` map (conv -> last seq delivered) and the messages held beyond a gap.

    `offer` takes messages from any source (live frames, history, own acks) in any order and
    returns those that may be delivered now, in seq order; duplicates are dropped. A conversation
    with no `seen` entry starts at 0.
    """

    def __init__(self, seen: dict[str, int] | None = None) -> None:
        self.seen: dict[str, int] = dict(seen or {})
        self._held: dict[str, dict[int, Message]] = {}
        self._gap_since: dict[str, float] = {}

    def last(self, conv: str) -> int:
        """The last seq of `conv` delivered (0 if none)."""
        return self.seen.get(conv, 0)

    def baseline(self, conv: str, last_seq: int) -> None:
        """Count everything up to `last_seq` as seen, unless the conversation already has a `seen`."""
        self.seen.setdefault(conv, last_seq)

    def offer(self, message: Message, now: float) -> list[Message]:
        """The messages that may be delivered now that `message` is known, in seq order."""
        conv, seq = message.conv, message.seq
        if seq <= self.last(conv):
            return []
        held = self._held.setdefault(conv, {})
        held.setdefault(seq, message)
        ready: list[Message] = []
        while (nxt := self.last(conv) + 1) in held:
            ready.append(held.pop(nxt))
            self.seen[conv] = nxt
        if held:
            self._gap_since.setdefault(conv, now)
            if ready:  # the gap moved: its wait starts again
                self._gap_since[conv] = now
        else:
            del self._held[conv]
            self._gap_since.pop(conv, None)
        return ready

    def release(self, conv: str) -> list[Message]:
        """Give up on `conv`'s gap (nothing can fill it: the conversation was left): its held messages,
        in seq order, counted as seen."""
        held = self._held.pop(conv, {})
        self._gap_since.pop(conv, None)
        ready = [held[seq] for seq in sorted(held)]
        if ready:
            self.seen[conv] = ready[-1].seq
        return ready

    def holding(self, conv: str) -> bool:
        """Whether `conv` has messages held behind a gap."""
        return conv in self._held

    def gap(self, conv: str) -> Gap | None:
        """The gap in front of `conv`'s held messages, if it has one."""
        held = self._held.get(conv)
        return Gap(conv, self.last(conv), min(held)) if held else None

    def gaps_due(self, now: float, wait: float) -> list[Gap]:
        """The gaps live frames have not filled within `wait` seconds: fill them from history."""
        due = [conv for conv, since in self._gap_since.items() if now - since >= wait]
        return [gap for conv in due if (gap := self.gap(conv)) is not None]
