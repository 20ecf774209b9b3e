"""Changes to a stored message (issue 18): recall, edit, react, unreact — who may, and what results.

Plain Python: the shard reads the target message and the reacting user's reactions, asks `decide`,
and commits the event it returns together with the target's new state. Each change is a seq'd
`event` message that refers to its target by seq, so a client that was offline applies the changes
in order, and a history read shows the target as it is now.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from imray.domain.content import check_send
from imray.domain.errors import BadRequest, Forbidden, NotFound

ACTIONS = ("recall", "edit", "react", "unreact")
MAX_EMOJI_CHARS = 16  # a ZWJ family or a flag with tags is several code points


@dataclass(frozen=True, slots=True)
class ChangeItem:
    """A change to a stored message (issue 18): recall, edit, react, unreact. It becomes a seq'd
    `event` message that refers to its target, and the target row shows the change. `key` is the
    caller's id for it, unique per user like a message's client id (a repeat gets the same answer)."""

    user: int
    key: str
    conv: str
    target: int  # the seq of the message changed
    action: str  # "recall" | "edit" | "react" | "unreact"
    body: str = ""  # edit: the new text
    emoji: str = ""  # react / unreact


@dataclass(frozen=True, slots=True)
class Target:
    """A stored message as a change sees it (`meta`: the row's JSON object, {} when none)."""

    conv: str
    seq: int
    sender: int
    kind: str
    body: str
    file_id: str | None
    ts: int
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Effect:
    """What a change does: the event that records it, the target's new body, file and meta, and
    the reaction row to add (True) or remove (False), if any."""

    event: dict[str, Any]
    body: str
    file_id: str | None
    meta: dict[str, Any]
    reaction: bool | None = None


@dataclass(frozen=True, slots=True)
class Rules:
    recall_window_ms: int
    max_reactions: int  # distinct emoji on one message
    max_text: int


def check_emoji(emoji: str) -> None:
    """A reaction is 1..16 characters of something visible: no spaces, controls or direction marks."""
    if not 1 <= len(emoji) <= MAX_EMOJI_CHARS:
        raise BadRequest(f"an emoji is 1 to {MAX_EMOJI_CHARS} characters")
    for ch in emoji:
        # Cf (format) is allowed only as the zero-width joiner and the variation selectors emoji use.
        category = unicodedata.category(ch)
        if category[0] in "CZ" and ch not in "\u200d\ufe0e\ufe0f" and not 0xE0020 <= ord(ch) <= 0xE007F:
            raise BadRequest("an emoji may not contain spaces, controls or direction marks")


def decide(change: ChangeItem, target: Target | None, *, admin: bool, reacted: bool, now_ms: int,
           rules: Rules) -> Effect | None:
    """The effect of `change` on `target`, or None when it changes nothing (a repeat). `admin`: the
    user is an owner or admin of the target's group; `reacted`: the user has this emoji on it."""
    if change.action not in ACTIONS:
        raise BadRequest(f"unknown change {change.action!r}")
    if target is None or target.kind == "event":
        raise NotFound("no such message")
    recalled = bool(target.meta.get("recalled"))
    if change.action == "recall":
        return _recall(change, target, admin, recalled, now_ms, rules)
    if recalled:
        raise BadRequest("that message was recalled")
    if change.action == "edit":
        return _edit(change, target, now_ms, rules)
    check_emoji(change.emoji)
    counts: dict[str, int] = dict(target.meta.get("reactions", {}))
    if change.action == "react":
        if reacted:
            return None
        if change.emoji not in counts and len(counts) >= rules.max_reactions:
            raise BadRequest(f"a message has at most {rules.max_reactions} different reactions")
        counts[change.emoji] = counts.get(change.emoji, 0) + 1
    else:
        if not reacted:
            return None
        left = counts.get(change.emoji, 1) - 1
        if left > 0:
            counts[change.emoji] = left
        else:
            counts.pop(change.emoji, None)
    meta = {k: v for k, v in target.meta.items() if k != "reactions"}
    if counts:
        meta["reactions"] = counts
    return Effect({"type": change.action, "seq": target.seq, "emoji": change.emoji}, target.body, target.file_id, meta,
                  reaction=change.action == "react")


def _recall(change: ChangeItem, target: Target, admin: bool, recalled: bool, now_ms: int,
            rules: Rules) -> Effect | None:
    if recalled:
        return None
    if not admin:
        if change.user != target.sender:
            raise Forbidden("only the sender or a group admin can recall a message")
        if now_ms - target.ts > rules.recall_window_ms:
            raise Forbidden(f"a message can be recalled within {rules.recall_window_ms // 1000} s of sending")
    # What it said goes, and what pointed at people: mentions; its place and its reply link stay.
    meta: dict[str, Any] = {"recalled": True}
    if "reply_to" in target.meta:
        meta["reply_to"] = target.meta["reply_to"]
    return Effect({"type": "recall", "seq": target.seq}, "", None, meta)


def _edit(change: ChangeItem, target: Target, now_ms: int, rules: Rules) -> Effect | None:
    if change.user != target.sender:
        raise Forbidden("only the sender can edit a message")
    if target.kind != "text":
        raise BadRequest("only text messages can be edited")
    check_send("text", change.body, None, rules.max_text)
    if change.body == target.body:
        return None
    return Effect({"type": "edit", "seq": target.seq, "body": change.body}, change.body, None,
                  {**target.meta, "edited": now_ms})
