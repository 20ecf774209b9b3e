"""A user's conversation list, a page at a time, and their own settings of a conversation (pin, mute)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from sqlalchemy import and_, func, or_, select, tuple_, update
from sqlalchemy.engine import Connection

from imray.domain.conversation_list import ListPosition
from imray.domain.messaging import MsgFrame
from imray.storage.messages import frame_of
from imray.storage.schema import conversations, messages, read_cursors
from imray.storage.sql_compat import insert_ignore


class ConversationItem(TypedDict):
    """One entry of a user's conversation list (PROTOCOL §3, and issue 18's pin, mute and paging)."""

    conv: str
    last_seq: int
    read_seq: int
    unread: int
    last_message: MsgFrame | None
    pinned: bool
    muted: bool
    updated_at: int  # ms of the last message; 0 without one
    cursor: str  # pass as `after` for the page after this item


def _mine(group_ids: Sequence[int]):  # type: ignore[no-untyped-def]  # a SQL condition
    return or_(read_cursors.c.conv.like("d:%"), read_cursors.c.conv.in_([f"g:{g}" for g in group_ids]))


def page(conn: Connection, user_id: int, group_ids: Sequence[int], after: ListPosition | None,
         limit: int) -> list[ConversationItem]:
    """The user's direct conversations and current groups, pinned first, then newest activity first:
    at most `limit`, starting after `after`. Unread counts and last messages are read for the page only."""
    activity = func.coalesce(conversations.c.updated_at, 0)
    query = (select(read_cursors.c.conv, read_cursors.c.read_seq, read_cursors.c.pinned_at, read_cursors.c.muted,
                    conversations.c.last_seq, activity.label("activity"))
             .select_from(read_cursors.outerjoin(conversations, conversations.c.conv == read_cursors.c.conv))
             .where(read_cursors.c.user_id == user_id, _mine(group_ids)))
    if after is not None:  # the order is (pinned_at desc, activity desc, conv asc): strictly after `after`
        pinned = read_cursors.c.pinned_at
        query = query.where(or_(
            pinned < after.pinned_at,
            and_(pinned == after.pinned_at, or_(
                activity < after.activity,
                and_(activity == after.activity, read_cursors.c.conv > after.conv)))))
    rows = conn.execute(query.order_by(read_cursors.c.pinned_at.desc(), activity.desc(), read_cursors.c.conv)
                        .limit(limit)).all()
    if not rows:
        return []
    convs = [r.conv for r in rows]
    unread: dict[str, int] = dict(conn.execute(
        select(messages.c.conv, func.count())
        .select_from(messages.join(read_cursors, and_(read_cursors.c.conv == messages.c.conv,
                                                      read_cursors.c.user_id == user_id)))
        .where(messages.c.conv.in_(convs), messages.c.seq > read_cursors.c.read_seq, messages.c.sender_id != user_id)
        .group_by(messages.c.conv)
    ).tuples().all())
    heads = [(r.conv, r.last_seq) for r in rows if r.last_seq]
    last: dict[str, MsgFrame] = {}
    if heads:
        last = {r.conv: frame_of(r) for r in conn.execute(
            select(messages).where(tuple_(messages.c.conv, messages.c.seq).in_(heads)))}
    return [{"conv": r.conv, "last_seq": int(r.last_seq or 0), "read_seq": int(r.read_seq),
             "unread": int(unread.get(r.conv, 0)), "last_message": last.get(r.conv),
             "pinned": bool(r.pinned_at), "muted": bool(r.muted), "updated_at": int(r.activity),
             "cursor": ListPosition(int(r.pinned_at), int(r.activity), r.conv).cursor()}
            for r in rows]


def pinned_count(conn: Connection, user_id: int) -> int:
    return int(conn.execute(select(func.count()).select_from(read_cursors).where(
        read_cursors.c.user_id == user_id, read_cursors.c.pinned_at > 0)).scalar() or 0)


def settings_of(conn: Connection, user_id: int, conv: str) -> tuple[int, bool]:
    """(pinned_at, muted) of the user's row for the conversation; (0, False) without one."""
    row = conn.execute(select(read_cursors.c.pinned_at, read_cursors.c.muted).where(
        read_cursors.c.user_id == user_id, read_cursors.c.conv == conv)).first()
    return (int(row.pinned_at), bool(row.muted)) if row is not None else (0, False)


def save_settings(conn: Connection, user_id: int, conv: str, pinned_at: int, muted: bool) -> None:
    """The row is made (read cursor at 0: nothing stored is read yet) for a conversation with no message."""
    insert_ignore(conn, read_cursors, [{"user_id": user_id, "conv": conv, "read_seq": 0}])
    conn.execute(update(read_cursors).where(read_cursors.c.user_id == user_id, read_cursors.c.conv == conv)
                 .values(pinned_at=pinned_at, muted=muted))


def muted_among(conn: Connection, pairs: Sequence[tuple[int, str]]) -> set[tuple[int, str]]:
    """The (user, conv) pairs among `pairs` whose user muted the conversation."""
    if not pairs:
        return set()
    rows = conn.execute(select(read_cursors.c.user_id, read_cursors.c.conv).where(
        read_cursors.c.muted.is_(True), tuple_(read_cursors.c.user_id, read_cursors.c.conv).in_(list(pairs))))
    return {(int(r.user_id), str(r.conv)) for r in rows}
