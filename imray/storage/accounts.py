"""Users, OAuth clients and refresh tokens."""

from __future__ import annotations

import time
from typing import Any, Literal, TypedDict, cast, final

from sqlalchemy import bindparam, delete, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from imray.domain.accounts import User
from imray.domain.errors import Conflict
from imray.storage.schema import blocks, clients, refresh_tokens, revoked_logins, users
from imray.storage.sql_compat import DriverSql, insert_ignore

USER_COLUMNS = (users.c.id, users.c.username, users.c.nickname, users.c.avatar_url)


class ClientRow(TypedDict):
    """A registered OAuth client: `secret_hash` is None for a public one."""

    client_id: str
    name: str
    secret_hash: str | None
    scope: str
    created_at: int


@final  # final, so that `"reused" in row` tells the two apart
class RefreshRow(TypedDict):
    """A refresh token as stored: only its hash, never the token."""

    token_hash: str
    family: str
    user_id: int
    client_id: str
    scope: str
    expires_at: int
    used: bool


@final
class RefreshReused(TypedDict):
    """A refresh token presented after it was spent: its login (`family`) is now revoked."""

    reused: Literal[True]
    family: str


def now_ms() -> int:
    return int(time.time() * 1000)


def user_view(row: Any) -> User:
    return {"id": row.id, "username": row.username, "nickname": row.nickname, "avatar_url": row.avatar_url}


def create_user(conn: Connection, username: str, password_hash: str, nickname: str) -> User:
    try:
        result = conn.execute(insert(users).values(
            username=username, password_hash=password_hash, nickname=nickname, created_at=now_ms()))
    except IntegrityError:
        raise Conflict("username is taken") from None
    key = result.inserted_primary_key
    assert key is not None  # an insert of one row has its primary key
    return {"id": key[0], "username": username, "nickname": nickname, "avatar_url": None}


def user_by_id(conn: Connection, user_id: int) -> User | None:
    row = conn.execute(select(*USER_COLUMNS).where(users.c.id == user_id)).first()
    return user_view(row) if row else None


def users_by_ids(conn: Connection, user_ids: list[int]) -> dict[int, User]:
    rows = conn.execute(select(*USER_COLUMNS).where(users.c.id.in_(user_ids))).all()
    return {row.id: user_view(row) for row in rows}


def credentials(conn: Connection, username: str) -> tuple[int, str] | None:
    row = conn.execute(select(users.c.id, users.c.password_hash).where(users.c.username == username)).first()
    return (row.id, row.password_hash) if row else None


def create_client(conn: Connection, client_id: str, name: str, secret_hash: str | None, scope: str) -> None:
    try:
        conn.execute(insert(clients).values(client_id=client_id, name=name, secret_hash=secret_hash,
                                            scope=scope, created_at=now_ms()))
    except IntegrityError:
        raise Conflict(f"client {client_id} exists") from None


def client(conn: Connection, client_id: str) -> ClientRow | None:
    # A revoked client (`imray clients revoke`) is unknown to every grant from then on.
    row = conn.execute(select(clients).where(clients.c.client_id == client_id,
                                             clients.c.revoked_at.is_(None))).first()
    return cast(ClientRow, dict(row._mapping)) if row else None


def store_refresh(conn: Connection, token_hash: str, family: str, user_id: int, client_id: str,
                  scope: str, ttl_s: int) -> None:
    conn.execute(insert(refresh_tokens).values(
        token_hash=token_hash, family=family, user_id=user_id, client_id=client_id, scope=scope,
        expires_at=now_ms() + ttl_s * 1000, used=False))


def revoke_family(conn: Connection, token_hash: str, *, client_id: str, keep_s: int) -> str | None:
    """Revoke the login a refresh token of `client_id` belongs to (RFC 7009); returns its family, or
    None for a token unknown or issued to another client (RFC 7009 §2.1: not theirs to revoke).
    `keep_s`: how long a revocation matters (the access tokens' lifetime); older ones are deleted."""
    row = conn.execute(select(refresh_tokens.c.family, refresh_tokens.c.client_id)
                       .where(refresh_tokens.c.token_hash == token_hash)).first()
    if row is None or row.client_id != client_id:
        return None
    _revoke(conn, row.family, keep_s)
    return str(row.family)


def _revoke(conn: Connection, family: str, keep_s: int) -> None:
    """Every refresh token of the login spent, and the login on the denylist, in one transaction.
    Revocations older than `keep_s` go: every access token of theirs has expired, and the login's
    refresh tokens stay spent, so the table holds only the last `keep_s` of revocations."""
    conn.execute(update(refresh_tokens).where(refresh_tokens.c.family == family).values(used=True))
    now = now_ms()
    conn.execute(delete(revoked_logins).where(revoked_logins.c.revoked_at < now - keep_s * 1000))
    insert_ignore(conn, revoked_logins, [{"family": family, "revoked_at": now}])


def revoked_since(conn: Connection, since_ms: int) -> list[tuple[str, int]]:
    """(family, revoked_at) of the logins revoked at or after `since_ms`."""
    rows = conn.execute(select(revoked_logins.c.family, revoked_logins.c.revoked_at)
                        .where(revoked_logins.c.revoked_at >= since_ms))
    return [(r.family, int(r.revoked_at)) for r in rows]


def consume_refresh(conn: Connection, token_hash: str, *, client_id: str,
                    keep_s: int) -> RefreshRow | RefreshReused | None:
    """Mark a refresh token of `client_id` used and return it; `RefreshReused` if used before; None,
    and nothing spent, if unknown, issued to another client (RFC 6749 §6) or expired (so its owner's
    next try is not mistaken for a reuse).

    A second use of a used token means it leaked: the whole family (every token rotated from the
    same login) is revoked, as RFC 9700 recommends for public clients.
    """
    row = conn.execute(select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)).first()
    if row is None or row.client_id != client_id:
        return None
    if row.used:
        _revoke(conn, row.family, keep_s)
        return {"reused": True, "family": row.family}
    if row.expires_at < now_ms():
        return None
    claimed = conn.execute(update(refresh_tokens).where(
        refresh_tokens.c.token_hash == token_hash, refresh_tokens.c.used.is_(False)).values(used=True))
    if claimed.rowcount != 1:  # spent meanwhile by a concurrent request
        return None
    return cast(RefreshRow, dict(row._mapping))


def block(conn: Connection, user_id: int, blocked_id: int) -> None:
    insert_ignore(conn, blocks, [{"user_id": user_id, "blocked_id": blocked_id, "created_at": now_ms()}])


def unblock(conn: Connection, user_id: int, blocked_id: int) -> bool:
    return bool(conn.execute(delete(blocks).where(blocks.c.user_id == user_id,
                                                  blocks.c.blocked_id == blocked_id)).rowcount)


# Read with every catch-up page (a reconnect's): through the driver, compiled once (Core's per-call
# statement caching was ~10 % of a socket node's CPU in a reconnect storm).
_blocked_by = DriverSql(lambda _dialect: select(blocks.c.blocked_id).where(blocks.c.user_id == bindparam("user"))
                        .order_by(blocks.c.created_at))


def blocked_by(conn: Connection, user_id: int) -> list[int]:
    return [blocked for (blocked,) in _blocked_by.fetch_tuples(conn, user=user_id)]


def blocks_between(conn: Connection, pairs: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """(blocker, blocked) rows among the given user pairs, either direction."""
    if not pairs:
        return set()
    cond = or_(*[((blocks.c.user_id == a) & (blocks.c.blocked_id == b)) | ((blocks.c.user_id == b)
                 & (blocks.c.blocked_id == a)) for a, b in pairs])
    return {(r.user_id, r.blocked_id) for r in conn.execute(select(blocks.c.user_id, blocks.c.blocked_id)
                                                            .where(cond))}


def set_avatar(conn: Connection, user_id: int, url: str) -> None:
    conn.execute(update(users).where(users.c.id == user_id).values(avatar_url=url))
