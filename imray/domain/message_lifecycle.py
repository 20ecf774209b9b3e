"""The edge of the message lifecycle (issue 18): change keys, and messages a reader deleted for themselves.

Who may recall, edit or react is the shard's decision (`domain.message_changes`); this module holds
what the HTTP edge checks before asking it, and what delete-for-me (a view of one user, not a
change to the conversation) shows.
"""

from __future__ import annotations

import uuid

import orjson

from imray.domain.errors import BadRequest, NotFound
from imray.domain.messaging import SERVER_KEY_PREFIX, MsgFrame

MAX_KEY_CHARS = 64  # a change's key shares the namespace of message client ids (a socket frame's `id`)
MAX_SEQ = 2**53  # seqs from outside: what a JSON number holds exactly, as in a send frame's reply_to


def key_problem(key: str) -> str | None:
    """Why `key` cannot be a change's key, or None: 1..64 characters like a socket frame's `id`. A
    lone surrogate (JSON allows "\\ud800"; a socket frame cannot carry one) has no UTF-8 to store."""
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        return f"id must be 1 to {MAX_KEY_CHARS} characters"
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in key):
        return "id must be valid Unicode (no lone surrogates)"
    if key.startswith(SERVER_KEY_PREFIX):
        return f"id may not begin with {SERVER_KEY_PREFIX!r}: such keys are the server's"
    return None


def new_key() -> str:
    """A key for a change whose caller gave none (a repeat of it is then a new change)."""
    return uuid.uuid4().hex


def deleted(conv: str, seq: int, msg_id: str, sender: int, kind: str, ts: int) -> MsgFrame:
    """A message its reader deleted for themselves, as their history shows it: its place (seq, id,
    sender, time) without what it says or any of its meta, so the reader's seqs stay gap-free."""
    return {"type": "msg", "conv": conv, "seq": seq, "msg_id": msg_id, "from": sender, "kind": kind, "body": "",
            "ts": ts, "deleted": True}


def check_deletable(kind: str | None) -> None:
    """`kind`: the target's, None when there is no such message. An event stays in every history: a
    client rebuilds a group's state from them."""
    if kind is None:
        raise NotFound("no such message")
    if kind == "event":
        raise BadRequest("an event cannot be deleted")


def deleted_frame(conv: str, seq: int) -> str:
    """The live frame that tells the deleter's sessions to drop a message from their view."""
    return orjson.dumps({"type": "deleted", "conv": conv, "seq": seq}).decode()
