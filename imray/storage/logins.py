"""A user's logins (refresh-token families): recorded when made, stamped when used, listed, ended."""

from __future__ import annotations

from typing import TypedDict

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import Exists

from imray.storage.accounts import _revoke, now_ms
from imray.storage.schema import logins, refresh_tokens, revoked_logins
from imray.storage.sql_compat import insert_ignore


class LoginRow(TypedDict):
    id: int
    family: str
    client_id: str
    device_name: str
    created_at: int
    last_seen_at: int


def record(conn: Connection, family: str, user_id: int, client_id: str, device_name: str) -> None:
    now = now_ms()
    insert_ignore(conn, logins, [{"family": family, "user_id": user_id, "client_id": client_id,
                                  "device_name": device_name, "created_at": now, "last_seen_at": now}])


def seen(conn: Connection, family: str) -> None:
    """The login was just used (a refresh: once per access token's lifetime, so one write is cheap)."""
    conn.execute(update(logins).where(logins.c.family == family).values(last_seen_at=now_ms()))


def seen_many(conn: Connection, families: list[str]) -> None:
    """These logins have sessions open right now (a socket node's round, `actors.login_stamps`)."""
    if families:
        conn.execute(update(logins).where(logins.c.family.in_(families)).values(last_seen_at=now_ms()))


def _live(now: int) -> Exists:
    """The login still has a refresh token to use: not logged out, revoked or expired."""
    return exists().where(refresh_tokens.c.family == logins.c.family, refresh_tokens.c.used.is_(False),
                          refresh_tokens.c.expires_at > now)


def active(conn: Connection, user_id: int) -> list[LoginRow]:
    """The user's logins that may still be used, newest first."""
    rows = conn.execute(select(logins.c.id, logins.c.family, logins.c.client_id, logins.c.device_name,
                               logins.c.created_at, logins.c.last_seen_at)
                        .where(logins.c.user_id == user_id, _live(now_ms()))
                        .order_by(logins.c.created_at.desc(), logins.c.id.desc()))
    return [{"id": r.id, "family": r.family, "client_id": r.client_id, "device_name": r.device_name,
             "created_at": r.created_at, "last_seen_at": r.last_seen_at} for r in rows]


def end_one(conn: Connection, user_id: int, login_id: int, keep_s: int) -> str | None:
    """Revoke one of the user's live logins; its family, or None when it is not theirs or already over."""
    row = conn.execute(select(logins.c.family).where(logins.c.id == login_id, logins.c.user_id == user_id,
                                                     _live(now_ms()))).first()
    if row is None:
        return None
    _revoke(conn, row.family, keep_s)
    conn.execute(delete(logins).where(logins.c.id == login_id))
    return str(row.family)


def end_all(conn: Connection, user_id: int, keep_s: int, keep: str | None = None) -> list[str]:
    """Revoke every login of the user that may still have a live token (a refresh token that has not
    expired longer ago than an access token lives), and is not revoked yet, except `keep`; the families."""
    query = (select(refresh_tokens.c.family).where(refresh_tokens.c.user_id == user_id,
                                                   refresh_tokens.c.family.not_in(select(revoked_logins.c.family)))
             .group_by(refresh_tokens.c.family)
             .having(func.max(refresh_tokens.c.expires_at) > now_ms() - keep_s * 1000))
    if keep is not None:
        query = query.where(refresh_tokens.c.family != keep)
    ended = [str(f) for f in conn.execute(query).scalars()]
    for family in ended:
        _revoke(conn, family, keep_s)
    if ended:
        conn.execute(delete(logins).where(logins.c.user_id == user_id, logins.c.family.in_(ended)))
    return ended
