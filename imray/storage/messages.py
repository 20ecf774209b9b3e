"""Messages, conversation heads and read cursors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, exists, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import Select

from imray.domain.message_lifecycle import deleted
from imray.domain.messaging import MSG_FIELDS, MessageRow, MsgFrame, msg_frame
from imray.storage.schema import conversations, group_members, hidden_messages, messages, read_cursors
from imray.storage.sql_compat import DriverSql, insert_ignore, upsert_statement

if TYPE_CHECKING:
    from imray.storage.db import Script


def frame_of(row: Any) -> MsgFrame:
    """A row of the messages table (any query selecting its columns) as its `msg` frame."""
    return msg_frame(row.conv, row.seq, row.msg_id, row.sender_id, row.kind, row.body, row.ts, row.file_id,
                     row.meta)


def last_seq(conn: Connection, conv: str) -> int:
    value = conn.execute(select(conversations.c.last_seq).where(conversations.c.conv == conv)).scalar()
    return int(value or 0)


def last_seqs(conn: Connection, convs: Sequence[str]) -> dict[str, int]:
    """The truth a shard (re)starts from: each conversation's head, or its highest stored seq when a
    row got there without the head (a second writer): the seq after it is the next free one. Both
    are reads of a primary or unique key, and a shard asks only when it loads a conversation."""
    wanted = list(convs)
    heads = conn.execute(select(conversations.c.conv, conversations.c.last_seq)
                         .where(conversations.c.conv.in_(wanted)))
    found = {r.conv: int(r.last_seq) for r in heads}
    stored = conn.execute(select(messages.c.conv, func.max(messages.c.seq))
                          .where(messages.c.conv.in_(wanted)).group_by(messages.c.conv)).tuples()
    for conv, top in stored:
        found[conv] = max(found.get(conv, 0), int(top or 0))
    return {c: found.get(c, 0) for c in convs}


def find_by_client_ids(conn: Connection, keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], MsgFrame]:
    """Messages already stored for (sender, client id) pairs: the idempotency check, one query per batch."""
    wanted = list(keys)
    found: dict[tuple[int, str], MsgFrame] = {}
    for i in range(0, len(wanted), 400):
        rows = conn.execute(select(messages).where(
            tuple_(messages.c.sender_id, messages.c.client_id).in_(wanted[i:i + 400])))
        found.update({(r.sender_id, r.client_id): frame_of(r) for r in rows})
    return found


_insert_messages = DriverSql(lambda _dialect: insert(messages),
                             ["msg_id", "conv", "seq", "sender_id", "client_id", "kind", "body", "file_id", "ts",
                              "meta"])
_upsert_heads = DriverSql(
    lambda dialect: upsert_statement(dialect, conversations, keys=["conv"], update=["last_seq", "updated_at"]),
    ["conv", "last_seq", "updated_at"])
# A conversation whose batch held only events (issue 18: a reaction, an edit, a group change) gets its
# new head, not a new time of activity: a reaction does not lift a conversation to the top of the list.
_upsert_quiet_heads = DriverSql(
    lambda dialect: upsert_statement(dialect, conversations, keys=["conv"], update=["last_seq"]),
    ["conv", "last_seq", "updated_at"])


def commit_batch(conn: Connection, rows: Sequence[MessageRow], heads: dict[str, int], now: int) -> None:
    """Messages and the conversations' new last seq, in the caller's one transaction."""
    _insert_messages.execute_many(conn, rows)
    moved, quiet = _heads(rows, heads, now)
    _upsert_heads.execute_many(conn, moved)
    _upsert_quiet_heads.execute_many(conn, quiet)


def commit_batch_script(script: Script, rows: Sequence[MessageRow], heads: dict[str, int], now: int) -> None:
    """`commit_batch`'s statements as a `Script` (a database server's one-round-trip commit)."""
    _insert_messages.add_many(script, rows)
    moved, quiet = _heads(rows, heads, now)
    _upsert_heads.add_many(script, moved)
    _upsert_quiet_heads.add_many(script, quiet)


def _heads(rows: Sequence[MessageRow], heads: dict[str, int], now: int) -> tuple[list[dict[str, Any]], ...]:
    """The new heads of conversations with a message (their time of activity moves too), and of those
    with only events."""
    active = {r["conv"] for r in rows if r["kind"] != "event"}
    moved = [{"conv": c, "last_seq": s, "updated_at": now} for c, s in heads.items() if c in active]
    quiet = [{"conv": c, "last_seq": s, "updated_at": now} for c, s in heads.items() if c not in active]
    return moved, quiet


def add_cursors(conn: Connection, conv: str, user_ids: Iterable[int], seq: int = 0) -> None:
    insert_ignore(conn, read_cursors, [{"user_id": u, "conv": conv, "read_seq": seq} for u in user_ids])


def advance_cursors(conn: Connection, moves: Sequence[tuple[int, str, int]]) -> None:
    """Read cursors only move forward."""
    insert_ignore(conn, read_cursors, [{"user_id": u, "conv": c, "read_seq": 0} for u, c, _ in moves])
    for user_id, conv, seq in moves:
        conn.execute(update(read_cursors).where(
            read_cursors.c.user_id == user_id, read_cursors.c.conv == conv, read_cursors.c.read_seq < seq
        ).values(read_seq=seq))


# Catching up (`after_seq`) is the read every reconnect makes: it goes through the driver, and its
# rows stay plain tuples, in the order `msg_frame` takes them. Each page also carries, by an outer
# join on hidden_messages' primary key (issue 18), whether its reader deleted the message for
# themselves: still one statement, one round trip.
_HIDDEN_FOR_READER = messages.outerjoin(hidden_messages, and_(
    hidden_messages.c.user_id == bindparam("reader"), hidden_messages.c.conv == messages.c.conv,
    hidden_messages.c.seq == messages.c.seq))


def _page_query() -> Select[Any]:
    return (select(*(messages.c[name] for name in MSG_FIELDS), hidden_messages.c.seq.label("deleted_seq"))
            .select_from(_HIDDEN_FOR_READER))


def _page_after_query(*also: Any) -> Select[Any]:
    return (_page_query().where(messages.c.conv == bindparam("conv"), messages.c.seq > bindparam("after"), *also)
            .order_by(messages.c.seq).limit(bindparam("limit")))


def page_after_sql(dialect: Dialect) -> str:
    """The SQL of the `after_seq` page read, for `dialect`: the bench's bare baseline runs the same."""
    return str(_page_after_query().compile(dialect=dialect))


def _frames(rows: Iterable[Sequence[Any]]) -> list[MsgFrame]:
    """A page's rows (MSG_FIELDS, then the reader's hidden_messages seq or None) as its frames."""
    return [msg_frame(*r[:-1]) if r[-1] is None else deleted(r[0], r[1], r[2], r[3], r[4], r[6]) for r in rows]


_page_after = DriverSql(lambda _dialect: _page_after_query())
# The same page of a group's conversation, only while `user` is a member: the access check and the
# read in one statement, one round trip (on MariaDB each costs the gateway ~0.2 ms of CPU).
_member_page_after = DriverSql(lambda _dialect: _page_after_query(
    exists().where(group_members.c.group_id == bindparam("group"), group_members.c.user_id == bindparam("user"))))


def member_page_after(conn: Connection, group_id: int, user_id: int, after_seq: int,
                      limit: int) -> list[MsgFrame]:
    """`g:<group_id>`'s messages after `after_seq`, if `user_id` is a member; else, like an empty
    page, nothing (the caller tells a stranger from a member who is up to date). Messages the
    member deleted for themselves are placeholders (`domain.message_lifecycle.deleted`)."""
    rows = _member_page_after.fetch_tuples(conn, conv=f"g:{group_id}", after=after_seq, group=group_id,
                                           user=user_id, reader=user_id, limit=limit)
    return _frames(rows)


def history(conn: Connection, conv: str, after_seq: int | None, before_seq: int | None,
            limit: int, reader: int = 0) -> list[MsgFrame]:
    """A page of `conv` in seq order: after `after_seq`, or the newest `limit` below `before_seq`;
    what `reader` deleted for themselves as placeholders (0: nobody's view, every message whole)."""
    if before_seq is None:
        return _frames(_page_after.fetch_tuples(conn, conv=conv, after=after_seq or 0, reader=reader, limit=limit))
    query = _page_query().where(messages.c.conv == conv, messages.c.seq < before_seq)
    if after_seq is not None:
        query = query.where(messages.c.seq > after_seq)
    rows = conn.execute(query.order_by(messages.c.seq.desc()).limit(limit), {"reader": reader}).tuples().all()
    return _frames(reversed(rows))


def committed_since(conn: Connection, since_msg_id: str, limit: int) -> list[MsgFrame]:
    """Messages whose msg_id sorts at or after `since_msg_id` (msg_ids begin with their commit's
    time, `MessageIds`): at most the newest `limit`, oldest first. A range of the msg_id index."""
    rows = conn.execute(select(*(messages.c[name] for name in MSG_FIELDS))
                        .where(messages.c.msg_id >= since_msg_id)
                        .order_by(messages.c.msg_id.desc()).limit(limit)).tuples().all()
    return [msg_frame(*r) for r in reversed(rows)]
