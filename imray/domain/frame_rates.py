"""Per-session frame rates on a socket: a token bucket for each class of frame, and what to do over it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

SENDS, SIGNALS, CONTROLS = 0, 1, 2  # send; read and typing; everything else (ping, refresh, junk)
_CLASS_OF = {"send": SENDS, "read": SIGNALS, "typing": SIGNALS}


def frame_class(frame_type: object) -> int:
    """The bucket a frame of this `type` draws on; frames that do not parse are CONTROLS."""
    return _CLASS_OF.get(frame_type, CONTROLS) if isinstance(frame_type, str) else CONTROLS


class Verdict(Enum):
    PASS = 0
    LIMITED = 1  # answered `rate_limited`, not acted on
    CLOSE = 2  # a client that kept going through a whole burst of refusals


@dataclass(frozen=True, slots=True)
class FrameRates:
    """Sustained frames per second for SENDS, SIGNALS and CONTROLS, and each one's burst in seconds
    of its rate (at least one frame)."""

    per_s: tuple[float, float, float]
    burst_s: float

    def capacity(self, kind: int) -> float:
        return max(1.0, self.per_s[kind] * self.burst_s)


class FrameBudget:
    """One session's buckets. A frame over the rate is refused but still counted, as a debt: a
    client that sends another full burst while refused is closed; one that backs off recovers at the
    sustained rate. Two floats per bucket: sessions are the node's per-connection memory."""

    __slots__ = ("at", "levels")

    def __init__(self, rates: FrameRates, now: float | None = None) -> None:
        start = time.monotonic() if now is None else now
        self.levels = [rates.capacity(kind) for kind in (SENDS, SIGNALS, CONTROLS)]
        self.at = [start, start, start]

    def take(self, rates: FrameRates, kind: int, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        capacity = rates.capacity(kind)
        level = min(capacity, self.levels[kind] + (now - self.at[kind]) * rates.per_s[kind]) - 1.0
        self.levels[kind], self.at[kind] = level, now
        if level >= 0:
            return Verdict.PASS
        return Verdict.LIMITED if level >= -capacity else Verdict.CLOSE
