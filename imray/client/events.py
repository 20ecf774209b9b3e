"""The typed events an ImrayClient delivers (docs/sdk.md "Events"), parsed from socket frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Message:
    """One message of a conversation (the §2.4 `msg` object); `from_` is the frame's `from`.

    Optional fields are None when the message does not carry them: `file_id` (image/file),
    `reply_to`, `mentions`, `edited`, `recalled`, `reactions`, `event` (for `kind == "event"`),
    `hidden` (a blocked sender's message in a group), `deleted` (deleted for yourself).
    """

    type: ClassVar[str] = "message"
    conv: str
    seq: int
    msg_id: str
    from_: int
    kind: str
    body: str
    ts: int
    file_id: str | None = None
    reply_to: int | None = None
    mentions: list[int] | None = None
    edited: Any = None
    recalled: bool | None = None
    reactions: Any = None
    event: dict[str, Any] | None = None
    hidden: bool | None = None
    deleted: bool | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> Message:
        return cls(conv=frame["conv"], seq=int(frame["seq"]), msg_id=str(frame.get("msg_id", "")),
                   from_=int(frame.get("from", 0)), kind=str(frame.get("kind", "text")),
                   body=str(frame.get("body", "")), ts=int(frame.get("ts", 0)), file_id=frame.get("file_id"),
                   reply_to=frame.get("reply_to"), mentions=frame.get("mentions"), edited=frame.get("edited"),
                   recalled=frame.get("recalled"), reactions=frame.get("reactions"), event=frame.get("event"),
                   hidden=frame.get("hidden"), deleted=frame.get("deleted"), raw=frame)


@dataclass(frozen=True)
class Receipt:
    """`user_id` has read `conv` up to `seq`."""

    type: ClassVar[str] = "receipt"
    conv: str
    user_id: int
    seq: int


@dataclass(frozen=True)
class Typing:
    """`user_id` is typing in `conv`."""

    type: ClassVar[str] = "typing"
    conv: str
    user_id: int


@dataclass(frozen=True)
class Presence:
    """A contact came online or went offline (`last_seen` in ms when given)."""

    type: ClassVar[str] = "presence"
    user_id: int
    online: bool
    last_seen: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Contact:
    """A friend-request event (`requested`, `accepted`, `declined`, `cancelled`, `removed`)."""

    type: ClassVar[str] = "contact"
    event: str
    from_id: int
    to_id: int
    ts: int = 0
    message: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Deleted:
    """Message `seq` of `conv` was deleted for yourself by another of your sessions."""

    type: ClassVar[str] = "deleted"
    conv: str
    seq: int


@dataclass(frozen=True)
class StateChange:
    """The client's state changed: `connecting`, `connected`, `reconnecting` or `closed`."""

    type: ClassVar[str] = "state"
    state: str


@dataclass(frozen=True)
class ErrorEvent:
    """An error frame not tied to a send, or the reason the client closed."""

    type: ClassVar[str] = "error"
    code: str
    message: str = ""


@dataclass(frozen=True)
class Frame:
    """A frame the SDK has no type for, as it came (forward compatible)."""

    type: ClassVar[str] = "frame"
    frame: dict[str, Any]


@dataclass(frozen=True)
class Ack:
    """The server stored a send: its `seq` in `conv`, `msg_id` and `ts` (ms)."""

    id: str
    conv: str
    seq: int
    msg_id: str
    ts: int

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> Ack:
        return cls(id=frame["id"], conv=frame["conv"], seq=int(frame["seq"]), msg_id=str(frame["msg_id"]),
                   ts=int(frame["ts"]))


Event = Message | Receipt | Typing | Presence | Contact | Deleted | StateChange | ErrorEvent | Frame
EVENT_TYPES = ("message", "receipt", "typing", "presence", "contact", "deleted", "state", "error", "frame")


def parse_event(frame: dict[str, Any]) -> Event:
    """The event for a delivery frame (`msg`, `receipt`, `typing`, `presence`, `contact`, `deleted`);
    anything else, or a frame missing what its type needs, is a `Frame`."""
    kind = frame.get("type")
    try:
        if kind == "msg":
            return Message.from_frame(frame)
        if kind == "receipt":
            return Receipt(frame["conv"], int(frame["user_id"]), int(frame["seq"]))
        if kind == "typing":
            return Typing(frame["conv"], int(frame["user_id"]))
        if kind == "presence":
            return Presence(int(frame["user_id"]), bool(frame["online"]), frame.get("last_seen"), frame)
        if kind == "contact":
            return Contact(str(frame["event"]), int(frame["from_id"]), int(frame["to_id"]), int(frame.get("ts", 0)),
                           frame.get("message"), frame)
        if kind == "deleted":
            return Deleted(frame["conv"], int(frame["seq"]))
    except (KeyError, TypeError, ValueError):
        pass
    return Frame(frame)
