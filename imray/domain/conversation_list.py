"""A user's conversation list: its order (pinned first, then by last activity), its paging cursor, pins."""

from __future__ import annotations

import re
from dataclasses import dataclass

from imray.domain.conversations import parse_conv
from imray.domain.errors import Conflict, Invalid

# <pinned_at>.<activity>.<conv>: the sort key of the last item of a page, which the next page starts after.
_CURSOR = re.compile(r"(0|[1-9][0-9]{0,15})\.(0|[1-9][0-9]{0,15})\.([dg]:[0-9:]{1,38})")


@dataclass(frozen=True, slots=True)
class ListPosition:
    """Where an item sorts: pinned ones first (latest pinned first), then newest activity first, then by
    conversation id, so the order is total and a page boundary never repeats or skips an item."""

    pinned_at: int  # ms since epoch; 0 when not pinned
    activity: int  # ms of the conversation's last message (0 without one)
    conv: str

    def cursor(self) -> str:
        return f"{self.pinned_at}.{self.activity}.{self.conv}"


def parse_cursor(text: str) -> ListPosition:
    """The position a `cursor` names; 422 for anything that is not one an item carried."""
    m = _CURSOR.fullmatch(text)
    if m is None:
        raise Invalid("cursor must be the `cursor` of an item of the list")
    try:
        conv = str(parse_conv(m.group(3)))
    except Exception as exc:  # not a canonical conversation id
        raise Invalid("cursor must be the `cursor` of an item of the list") from exc
    return ListPosition(int(m.group(1)), int(m.group(2)), conv)


def check_may_pin(pinned: int, limit: int) -> None:
    """A user pins at most `limit` conversations (the list's first page holds them)."""
    if pinned >= limit:
        raise Conflict(f"at most {limit} conversations can be pinned: unpin one first")
