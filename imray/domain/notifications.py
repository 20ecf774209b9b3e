"""Offline notifications (issue 18, point 8): who is told of a message, how often, and the signed body.

Plain Python: the shard's `Notifier` feeds it the deliveries of each fan-out and the members presence
calls online; it decides the notices (members with no live session, never the sender, never a member
who gets the message hidden), coalesces them per (user, conversation) and window, and builds the
signed request a receiver verifies with `verify` (docs/protocol.md §8).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from imray.domain.messaging import Delivery, hidden_stream

SIGNATURE_HEADER = "X-Imray-Signature"
TIMESTAMP_HEADER = "X-Imray-Timestamp"
DELIVERY_HEADER = "X-Imray-Delivery"  # the same for every attempt of one notice: receivers dedupe on it
ATTEMPT_HEADER = "X-Imray-Attempt"
SIGNATURE_PREFIX = "sha256="
# A receiver should refuse a timestamp further than this from its clock (a replayed request).
REPLAY_TOLERANCE_S = 300
_HIDDEN_SUFFIX = hidden_stream("")


@dataclass(frozen=True, slots=True)
class Message:
    """A committed message as a fan-out carried it, with who may be told of it (not its sender)."""

    conv: str
    seq: int
    msg_id: str
    sender: int
    kind: str
    body: str
    ts: int
    recipients: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Notice:
    """One call of the webhook: `user` has no live session and a message is waiting in `conv`."""

    user: int
    conv: str
    seq: int
    msg_id: str
    sender: int
    kind: str
    ts: int
    preview: str | None

    @property
    def id(self) -> str:
        """Unique per (message, recipient) and the same for every retry: a receiver's dedupe key."""
        return f"{self.msg_id}.{self.user}"


def messages_in(deliveries: Iterable[Delivery]) -> list[Message]:
    """The messages among a fan-out's deliveries. Receipts and typing carry no seq; the hidden copy
    of a group message (for the members who block its sender) is left out: they are never told. So are
    events (issue 18: a group change, an edit, a reaction): they say nothing to wake a phone for."""
    found: list[Message] = []
    for d in deliveries:
        if not d.seq or d.conv.endswith(_HIDDEN_SUFFIX):
            continue
        frame = orjson.loads(d.frame)
        if frame["kind"] == "event":
            continue
        sender = frame["from"]
        found.append(Message(d.conv, d.seq, frame["msg_id"], sender, frame["kind"], frame["body"], frame["ts"],
                             tuple(u for u in d.users if u != sender)))
    return found


def preview_of(body: str, chars: int) -> str | None:
    """The first `chars` characters (code points) of a body; None when previews are off or it is empty."""
    if chars <= 0 or not body:
        return None
    return body if len(body) <= chars else body[:chars] + "\u2026"


def notice_for(message: Message, user: int, preview_chars: int) -> Notice:
    return Notice(user, message.conv, message.seq, message.msg_id, message.sender, message.kind, message.ts,
                  preview_of(message.body, preview_chars))


class Coalescer:
    """At most one notice per (user, conversation) within `window_s`: the first message of a burst is
    notified, the rest of the window is not. Remembers at most `capacity` pairs (oldest forgotten
    first, which can let one more notice through for a pair forgotten early)."""

    def __init__(self, window_s: float, capacity: int = 100_000) -> None:
        self._window_s = window_s
        self._capacity = capacity
        self._since: OrderedDict[tuple[int, str], float] = OrderedDict()  # in the order they were admitted

    def holds(self, user: int, conv: str, now: float) -> bool:
        """Whether a notice for (user, conv) was admitted within the window."""
        at = self._since.get((user, conv))
        return at is not None and now - at < self._window_s

    def admit(self, user: int, conv: str, now: float) -> bool:
        """Take a notice for (user, conv) at `now` if none was taken within the window."""
        self._expire(now)
        key = (user, conv)
        if key in self._since:
            return False
        self._since[key] = now
        if len(self._since) > self._capacity:
            self._since.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._since)

    def _expire(self, now: float) -> None:
        since = self._since
        while since:
            key, at = next(iter(since.items()))
            if now - at < self._window_s:
                return
            del since[key]


def body_of(notice: Notice) -> bytes:
    """The JSON body the webhook receives (docs/protocol.md §8)."""
    return orjson.dumps({"type": "offline_message", "id": notice.id, "user_id": notice.user, "conv": notice.conv,
                         "seq": notice.seq, "msg_id": notice.msg_id, "from": notice.sender, "kind": notice.kind,
                         "ts": notice.ts, "preview": notice.preview})


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>." + body under secret>`: the timestamp is signed too,
    so a captured request cannot be replayed with a fresh one."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify(secret: str, timestamp: str, signed: str, body: bytes, now: float,
           tolerance_s: float = REPLAY_TOLERANCE_S) -> bool:
    """What a receiver checks: the timestamp is an integer near its clock, and the signature is the
    one `signature` makes of it and the raw body (compared in constant time)."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body), signed)


def signed_headers(secret: str, timestamp: int, body: bytes, notice_id: str, attempt: int) -> dict[str, str]:
    return {"Content-Type": "application/json", TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(secret, timestamp, body), DELIVERY_HEADER: notice_id,
            ATTEMPT_HEADER: str(attempt)}


def retryable(status: int | None) -> bool:
    """Whether an attempt that ended so is tried again: no answer (None), a 5xx, 408 or 429. Another
    4xx (or a 3xx: redirects are not followed) says the receiver will not take it."""
    return status is None or status >= 500 or status in (408, 429)


def backoff_s(attempt: int, base_s: float, cap_s: float, unit_random: float) -> float:
    """The wait after failed attempt `attempt` (1, 2, ...): exponential, capped, with "equal jitter"
    (half of it fixed, half random) so that calls failed together do not retry together."""
    step = min(cap_s, base_s * (1 << min(attempt - 1, 30)))
    return step / 2 + step / 2 * unit_random
