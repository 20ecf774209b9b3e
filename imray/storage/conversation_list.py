"""A user's conversation list, a page at a time, and their own settings of a conversation (pin, mute)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from sqlalchemy import and_, exists, func, or_, select, tuple_, update
from sqlalchemy.engine import Connection

from imray.domain.conversation_list import ListPosition
from imray.domain.messaging import MsgFrame
from imray.storage.messages import frame_of
from imray.storage.schema import conversations, hidden_messages, mentions, messages, read_cursors
from imray.storage.sql_compat import insert_ignore


class ConversationItem(TypedDict):
    """One entry of a user's conversation list (PROTOCOL §3, and issue 18's pin, mute and paging)."""

    conv: str
    last_seq: int
    read_seq: int
    unread: int  # from others, after read_seq: no events, nothing recalled or deleted for the user
    mentioned: bool  # one of those unread messages mentions the user (issue 18)
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
    unread = _unread(conn, user_id, convs)
    last = _last_messages(conn, user_id, [(r.conv, r.last_seq) for r in rows if r.last_seq])
    return [{"conv": r.conv, "last_seq": int(r.last_seq or 0), "read_seq": int(r.read_seq),
             "unread": unread.get(r.conv, (0, False))[0], "mentioned": unread.get(r.conv, (0, False))[1],
             "last_message": last.get(r.conv), "pinned": bool(r.pinned_at), "muted": bool(r.muted),
             "updated_at": int(r.activity),
             "cursor": ListPosition(int(r.pinned_at), int(r.activity), r.conv).cursor()}
            for r in rows]


# Issue 18: what the list counts and shows leaves out events (a group change, a change to a message),
# recalled messages and what the reader deleted for themselves. A recalled message's meta is the
# shard's compact JSON (orjson), so `"recalled":true` appears in it only as that key: inside a JSON
# string every `"` is escaped. A LIKE on the row already read costs no join and no column of its own.
_NOT_RECALLED = or_(messages.c.meta.is_(None), messages.c.meta.not_like('%"recalled":true%'))


def _not_deleted_by(user_id: int):  # type: ignore[no-untyped-def]  # a join condition
    return and_(hidden_messages.c.user_id == user_id, hidden_messages.c.conv == messages.c.conv,
                hidden_messages.c.seq == messages.c.seq)


def _unread(conn: Connection, user_id: int, convs: list[str]) -> dict[str, tuple[int, bool]]:
    """Per conversation: messages from others after the read cursor that count (above), and whether
    one of them mentions the user. One statement; both outer joins are primary-key lookups."""
    read = and_(read_cursors.c.conv == messages.c.conv, read_cursors.c.user_id == user_id)
    mentioned = and_(mentions.c.user_id == user_id, mentions.c.conv == messages.c.conv,
                     mentions.c.seq == messages.c.seq)
    rows = conn.execute(
        select(messages.c.conv, func.count(), func.max(mentions.c.seq))
        .select_from(messages.join(read_cursors, read).outerjoin(hidden_messages, _not_deleted_by(user_id))
                     .outerjoin(mentions, mentioned))
        .where(messages.c.conv.in_(convs), messages.c.seq > read_cursors.c.read_seq, messages.c.sender_id != user_id,
               messages.c.kind != "event", _NOT_RECALLED, hidden_messages.c.seq.is_(None))
        .group_by(messages.c.conv)).tuples().all()
    return {conv: (int(count), top is not None) for conv, count, top in rows}


def _last_messages(conn: Connection, user_id: int, heads: list[tuple[str, int]]) -> dict[str, MsgFrame]:
    """Each conversation's newest message that is not an event and that the user did not delete for
    themselves. Usually its head (one read of the unique key for the page); only conversations whose
    head is not shown take a second statement, a backward walk of (conv, seq) to the first shown."""
    if not heads:
        return {}
    found: dict[str, MsgFrame] = {}
    behind: list[str] = []
    for row in conn.execute(select(messages, hidden_messages.c.seq.label("deleted_seq"))
                            .select_from(messages.outerjoin(hidden_messages, _not_deleted_by(user_id)))
                            .where(tuple_(messages.c.conv, messages.c.seq).in_(heads))):
        if row.kind == "event" or row.deleted_seq is not None:
            behind.append(row.conv)
        else:
            found[row.conv] = frame_of(row)
    if not behind:
        return found
    older = messages.alias("older")
    newest = (select(older.c.seq).where(
        older.c.conv == conversations.c.conv, older.c.kind != "event",
        ~exists().where(hidden_messages.c.user_id == user_id, hidden_messages.c.conv == older.c.conv,
                        hidden_messages.c.seq == older.c.seq))
        .order_by(older.c.seq.desc()).limit(1).correlate(conversations).scalar_subquery())
    shown = [(conv, int(seq)) for conv, seq in conn.execute(
        select(conversations.c.conv, newest).where(conversations.c.conv.in_(behind))).tuples() if seq]
    if shown:
        found.update({r.conv: frame_of(r) for r in conn.execute(
            select(messages).where(tuple_(messages.c.conv, messages.c.seq).in_(shown)))})
    return found


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
