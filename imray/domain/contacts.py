"""Contacts and their presence: the rules of friend requests, and what a contact is told.

Plain Python: the caller reads the state of a pair in a transaction, asks here what to do, and
writes it in the same transaction; frames are built here so that every path sends the same ones.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Literal, NotRequired, TypedDict

import orjson

from imray.domain.errors import BadRequest, Conflict, Forbidden, Invalid, NotFound

ContactEvent = Literal["requested", "accepted", "declined", "cancelled", "removed"]


@dataclass(frozen=True, slots=True)
class ContactLimits:
    """Settings (`contact_*`): the longest request message, pending requests a user may have sent
    and received, and contacts a user may have."""

    message_chars: int = 200
    pending_sent: int = 100
    pending_received: int = 500
    contacts: int = 2000


@dataclass(frozen=True, slots=True)
class PairState:
    """What stands between `me` and `other`, read in the transaction that changes it."""

    contacts: bool = False
    sent: bool = False  # me -> other pending
    received: bool = False  # other -> me pending
    i_block: bool = False
    they_block: bool = False


class RequestOutcome(Enum):
    ALREADY_CONTACTS = "contact"  # a request to a contact: nothing changes
    ALREADY_SENT = "pending"  # a repeat: nothing changes (the first message stays)
    ACCEPTS = "accepts"  # they asked first: the request accepts theirs, both are contacts now
    NEW = "new"  # a new pending request


def check_message(message: str | None, limits: ContactLimits) -> str:
    """The request's message as stored ("" for none): at most `message_chars` characters, text only."""
    if message is None:
        return ""
    if len(message) > limits.message_chars:
        raise Invalid(f"the message is longer than {limits.message_chars} characters")
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("the message is not valid Unicode text") from None
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in message):
        raise Invalid("the message holds control characters")
    return message


def check_other(me: int, other: int) -> None:
    if me == other:
        raise BadRequest("you cannot be your own contact")


def decide_request(state: PairState, sent_pending: int, their_received_pending: int, my_contacts: int,
                   their_contacts: int, limits: ContactLimits) -> RequestOutcome:
    """What a request from me to other does. A block either way refuses it (a blocked user cannot
    knock, and whoever blocks must unblock first); a repeat and a request to a contact change nothing."""
    if state.they_block:
        raise Forbidden("you cannot send a contact request to this user")
    if state.i_block:
        raise Forbidden("you block this user: unblock them first")
    if state.contacts:
        return RequestOutcome.ALREADY_CONTACTS
    if state.sent:
        return RequestOutcome.ALREADY_SENT
    if state.received:
        check_room(my_contacts, their_contacts, limits)
        return RequestOutcome.ACCEPTS
    if sent_pending >= limits.pending_sent:
        raise Conflict(f"you have {limits.pending_sent} pending contact requests: wait for answers or cancel some")
    if their_received_pending >= limits.pending_received:
        raise Conflict("this user has too many pending contact requests")
    return RequestOutcome.NEW


def decide_accept(state: PairState, my_contacts: int, their_contacts: int, limits: ContactLimits) -> bool:
    """Whether accepting other's request makes a new contact (False: already contacts, a repeat)."""
    if state.contacts:
        return False
    if not state.received:
        raise NotFound("no pending contact request from this user")
    check_room(my_contacts, their_contacts, limits)
    return True


def check_room(my_contacts: int, their_contacts: int, limits: ContactLimits) -> None:
    if my_contacts >= limits.contacts:
        raise Conflict(f"you have {limits.contacts} contacts already")
    if their_contacts >= limits.contacts:
        raise Conflict("this user has too many contacts")


class ContactFrame(TypedDict):
    """A contact event, pushed to every live session of both sides (docs/protocol.md §5)."""

    type: Literal["contact"]
    event: ContactEvent
    from_id: int  # the request's sender (for "removed": who removed)
    to_id: int
    ts: int
    message: NotRequired[str]


def contact_frame(event: ContactEvent, from_id: int, to_id: int, ts: int, message: str | None = None) -> str:
    frame: ContactFrame = {"type": "contact", "event": event, "from_id": from_id, "to_id": to_id, "ts": ts}
    if message:
        frame["message"] = message
    return orjson.dumps(frame).decode()


def ended_by_block(blocker: int, blocked: int, state: PairState) -> list[tuple[ContactEvent, int, int]]:
    """What a block ends between the two, as (event, from, to): the contact (removed by the blocker)
    and any pending request either way (the blocker's cancelled, the blocked user's declined)."""
    ended: list[tuple[ContactEvent, int, int]] = []
    if state.contacts:
        ended.append(("removed", blocker, blocked))
    if state.sent:
        ended.append(("cancelled", blocker, blocked))
    if state.received:
        ended.append(("declined", blocked, blocker))
    return ended


# -- presence ------------------------------------------------------------------------------------

class PresenceFrame(TypedDict):
    """A contact went online or offline (docs/protocol.md §5); `last_seen` (ms) only when offline."""

    type: Literal["presence"]
    user_id: int
    online: bool
    last_seen: NotRequired[int]


def presence_frame(user_id: int, online: bool, last_seen: int | None = None) -> str:
    frame: PresenceFrame = {"type": "presence", "user_id": user_id, "online": online}
    if not online and last_seen is not None:
        frame["last_seen"] = last_seen
    return orjson.dumps(frame).decode()


class ContactPresence(TypedDict):
    """One contact's presence as the query answers it; a contact who hides it reads as offline, never seen."""

    user_id: int
    online: bool
    last_seen: int | None


def visible_presence(user_id: int, shown: bool, online: bool, last_seen: int | None) -> ContactPresence:
    if not shown:
        return {"user_id": user_id, "online": False, "last_seen": None}
    return {"user_id": user_id, "online": online, "last_seen": None if online else last_seen}
