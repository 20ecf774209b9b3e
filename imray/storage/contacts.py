"""Contacts, pending contact requests, presence privacy and last-seen times (migration 0006)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.engine import Connection

from imray.domain.contacts import PairState
from imray.storage.schema import blocks, contact_requests, contacts, user_presence, users
from imray.storage.sql_compat import DriverSql, insert_ignore, upsert_statement


class ContactRow(TypedDict):
    user_id: int
    username: str
    nickname: str
    avatar_url: str | None
    since: int  # ms: when the two became contacts


class RequestRow(TypedDict):
    from_id: int
    to_id: int
    message: str
    created_at: int
    username: str  # the other side's
    nickname: str
    avatar_url: str | None


def pair_state(conn: Connection, me: int, other: int) -> PairState:
    is_contact = conn.execute(select(contacts.c.user_id).where(
        contacts.c.user_id == me, contacts.c.contact_id == other)).first() is not None
    pending = {(r.from_id, r.to_id) for r in conn.execute(select(contact_requests.c.from_id, contact_requests.c.to_id)
                                                          .where(or_(and_(contact_requests.c.from_id == me,
                                                                          contact_requests.c.to_id == other),
                                                                     and_(contact_requests.c.from_id == other,
                                                                          contact_requests.c.to_id == me))))}
    blocked = {(r.user_id, r.blocked_id) for r in conn.execute(select(blocks.c.user_id, blocks.c.blocked_id).where(
        or_(and_(blocks.c.user_id == me, blocks.c.blocked_id == other),
            and_(blocks.c.user_id == other, blocks.c.blocked_id == me))))}
    return PairState(contacts=is_contact, sent=(me, other) in pending, received=(other, me) in pending,
                     i_block=(me, other) in blocked, they_block=(other, me) in blocked)


def user_exists(conn: Connection, user_id: int) -> bool:
    """An account that may be asked: not disabled (an operator's, or a deleted account's placeholder)."""
    return conn.execute(select(users.c.id).where(users.c.id == user_id, users.c.disabled_at.is_(None))).first() \
        is not None


def pending_sent(conn: Connection, user_id: int) -> int:
    return int(conn.execute(select(func.count()).select_from(contact_requests)
                            .where(contact_requests.c.from_id == user_id)).scalar_one())


def pending_received(conn: Connection, user_id: int) -> int:
    return int(conn.execute(select(func.count()).select_from(contact_requests)
                            .where(contact_requests.c.to_id == user_id)).scalar_one())


def contact_count(conn: Connection, user_id: int) -> int:
    return int(conn.execute(select(func.count()).select_from(contacts)
                            .where(contacts.c.user_id == user_id)).scalar_one())


def add_request(conn: Connection, from_id: int, to_id: int, message: str, now: int) -> None:
    insert_ignore(conn, contact_requests, [{"from_id": from_id, "to_id": to_id, "message": message,
                                            "created_at": now}])


def delete_request(conn: Connection, from_id: int, to_id: int) -> bool:
    return bool(conn.execute(delete(contact_requests).where(contact_requests.c.from_id == from_id,
                                                            contact_requests.c.to_id == to_id)).rowcount)


def add_contact(conn: Connection, a: int, b: int, now: int) -> None:
    """Both directions, and no request left between them."""
    delete_request(conn, a, b)
    delete_request(conn, b, a)
    insert_ignore(conn, contacts, [{"user_id": a, "contact_id": b, "created_at": now},
                                   {"user_id": b, "contact_id": a, "created_at": now}])


def remove_contact(conn: Connection, a: int, b: int) -> bool:
    return bool(conn.execute(delete(contacts).where(or_(and_(contacts.c.user_id == a, contacts.c.contact_id == b),
                                                        and_(contacts.c.user_id == b, contacts.c.contact_id == a))))
                .rowcount)


def contact_list(conn: Connection, user_id: int) -> list[ContactRow]:
    rows = conn.execute(select(users.c.id, users.c.username, users.c.nickname, users.c.avatar_url,
                               contacts.c.created_at)
                        .join(users, users.c.id == contacts.c.contact_id)
                        .where(contacts.c.user_id == user_id).order_by(contacts.c.created_at, users.c.id))
    return [{"user_id": r.id, "username": r.username, "nickname": r.nickname, "avatar_url": r.avatar_url,
             "since": r.created_at} for r in rows]


def requests_of(conn: Connection, user_id: int) -> tuple[list[RequestRow], list[RequestRow]]:
    """(received, sent) pending requests, oldest first, each with the other side's profile."""
    def load(mine: bool) -> list[RequestRow]:
        other = contact_requests.c.to_id if mine else contact_requests.c.from_id
        own = contact_requests.c.from_id if mine else contact_requests.c.to_id
        rows = conn.execute(select(contact_requests, users.c.username, users.c.nickname, users.c.avatar_url)
                            .join(users, users.c.id == other).where(own == user_id)
                            .order_by(contact_requests.c.created_at, other))
        return [{"from_id": r.from_id, "to_id": r.to_id, "message": r.message, "created_at": r.created_at,
                 "username": r.username, "nickname": r.nickname, "avatar_url": r.avatar_url} for r in rows]

    return load(False), load(True)


def contacts_of(conn: Connection, user_ids: Sequence[int]) -> dict[int, list[int]]:
    """Each user's contacts (users without any are left out)."""
    out: dict[int, list[int]] = {}
    if not user_ids:
        return out
    for row in conn.execute(select(contacts.c.user_id, contacts.c.contact_id)
                            .where(contacts.c.user_id.in_(list(user_ids)))):
        out.setdefault(row.user_id, []).append(row.contact_id)
    return out


def contact_pairs(conn: Connection, pairs: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
    """The pairs among `pairs` who are contacts, as given."""
    if not pairs:
        return set()
    cond = or_(*[and_(contacts.c.user_id == a, contacts.c.contact_id == b) for a, b in pairs])
    found = {(r.user_id, r.contact_id) for r in conn.execute(select(contacts.c.user_id, contacts.c.contact_id)
                                                             .where(cond))}
    return {p for p in pairs if p in found}


# -- presence privacy and last seen ------------------------------------------------------------------

def presence_rows(conn: Connection, user_ids: Sequence[int]) -> dict[int, tuple[bool, int | None]]:
    """user -> (shows presence, last seen ms); users without a row show it and were never seen."""
    if not user_ids:
        return {}
    rows = conn.execute(select(user_presence).where(user_presence.c.user_id.in_(list(user_ids))))
    return {r.user_id: (bool(r.show_presence), r.last_seen_at) for r in rows}


def set_show_presence(conn: Connection, user_id: int, show: bool) -> None:
    insert_ignore(conn, user_presence, [{"user_id": user_id, "show_presence": True, "last_seen_at": None}])
    conn.execute(update(user_presence).where(user_presence.c.user_id == user_id).values(show_presence=show))


_SET_LAST_SEEN = DriverSql(lambda dialect: upsert_statement(dialect, user_presence, ["user_id"], ["last_seen_at"]),
                           columns=["user_id", "show_presence", "last_seen_at"])


def set_last_seen(conn: Connection, seen: dict[int, int]) -> None:
    """user -> ms: when their last live session closed (one statement for a batch)."""
    if not seen:
        return
    _SET_LAST_SEEN.execute_many(conn, [{"user_id": u, "show_presence": True, "last_seen_at": t}
                                       for u, t in sorted(seen.items())])


