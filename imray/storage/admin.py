"""Operators' side of accounts: disabled users, bot accounts, clients' listing and revocation, ending logins."""

from __future__ import annotations

from typing import TypedDict

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from imray.domain.errors import Conflict
from imray.domain.scopes import ServerClient
from imray.storage.accounts import _revoke, now_ms
from imray.storage.schema import clients, refresh_tokens, users

NO_PASSWORD = "!"  # a bot's password hash: no argon2 hash, so no password ever matches it


class AdminUser(TypedDict):
    """A user as the server API shows it: the profile, and what only operators see."""

    id: int
    username: str
    nickname: str
    avatar_url: str | None
    bot: bool
    disabled: bool
    created_at: int


class ClientListing(TypedDict):
    client_id: str
    name: str
    scope: str
    bot_user_id: int | None
    confidential: bool
    created_at: int
    revoked_at: int | None


def _admin_view(row: object) -> AdminUser:
    r = row._mapping  # type: ignore[attr-defined]  # a Row
    return {"id": r["id"], "username": r["username"], "nickname": r["nickname"], "avatar_url": r["avatar_url"],
            "bot": bool(r["is_bot"]), "disabled": r["disabled_at"] is not None, "created_at": r["created_at"]}


_ADMIN_COLUMNS = (users.c.id, users.c.username, users.c.nickname, users.c.avatar_url, users.c.is_bot,
                  users.c.disabled_at, users.c.created_at)


def user(conn: Connection, user_id: int) -> AdminUser | None:
    row = conn.execute(select(*_ADMIN_COLUMNS).where(users.c.id == user_id)).first()
    return _admin_view(row) if row else None


def user_by_name(conn: Connection, username: str) -> AdminUser | None:
    row = conn.execute(select(*_ADMIN_COLUMNS).where(users.c.username == username)).first()
    return _admin_view(row) if row else None


def is_disabled(conn: Connection, user_id: int) -> bool:
    row = conn.execute(select(users.c.disabled_at).where(users.c.id == user_id)).first()
    return row is not None and row.disabled_at is not None


def set_disabled(conn: Connection, user_id: int, disabled: bool) -> None:
    conn.execute(update(users).where(users.c.id == user_id).values(disabled_at=now_ms() if disabled else None))


def set_password(conn: Connection, user_id: int, password_hash: str) -> None:
    conn.execute(update(users).where(users.c.id == user_id).values(password_hash=password_hash))


def end_logins(conn: Connection, user_id: int, keep_s: int) -> list[str]:
    """Revoke every login of the user that may still have a live token: each family with a refresh
    token not yet expired (its access tokens end before it does). Returns the families revoked."""
    return _end_live_families(conn, refresh_tokens.c.user_id == user_id, keep_s)


def end_client_logins(conn: Connection, client_id: str, keep_s: int) -> list[str]:
    """Revoke every login made through the client that may still have a live token (as `end_logins`)."""
    return _end_live_families(conn, refresh_tokens.c.client_id == client_id, keep_s)


def _end_live_families(conn: Connection, which: ColumnElement[bool], keep_s: int) -> list[str]:
    rows = conn.execute(select(refresh_tokens.c.family).where(which)
                        .group_by(refresh_tokens.c.family)
                        .having(func.max(refresh_tokens.c.expires_at) > now_ms() - keep_s * 1000))
    families = [str(r.family) for r in rows]
    for family in families:
        _revoke(conn, family, keep_s)
    return families


def create_bot_client(conn: Connection, bot_name: str, client_id: str, secret_hash: str, scope: str) -> int:
    """A bot account (no password login) and the confidential client that sends as it, together."""
    now = now_ms()
    try:
        result = conn.execute(insert(users).values(username=bot_name, password_hash=NO_PASSWORD, nickname=bot_name,
                                                   created_at=now, is_bot=True))
    except IntegrityError:
        raise Conflict(f"username {bot_name} is taken") from None
    key = result.inserted_primary_key
    assert key is not None
    bot_id = int(key[0])
    try:
        conn.execute(insert(clients).values(client_id=client_id, name=bot_name, secret_hash=secret_hash,
                                            scope=scope, created_at=now, bot_user_id=bot_id))
    except IntegrityError:
        raise Conflict(f"client {client_id} exists") from None
    return bot_id


def list_clients(conn: Connection) -> list[ClientListing]:
    rows = conn.execute(select(clients.c.client_id, clients.c.name, clients.c.scope, clients.c.bot_user_id,
                               clients.c.secret_hash, clients.c.created_at, clients.c.revoked_at)
                        .order_by(clients.c.created_at, clients.c.client_id))
    return [{"client_id": r.client_id, "name": r.name, "scope": r.scope, "bot_user_id": r.bot_user_id,
             "confidential": r.secret_hash is not None, "created_at": r.created_at, "revoked_at": r.revoked_at}
            for r in rows]


def revoke_client(conn: Connection, client_id: str) -> bool:
    """Mark a client revoked (kept, so that its id is never reused); False if none by that id."""
    done = conn.execute(update(clients).where(clients.c.client_id == client_id, clients.c.revoked_at.is_(None))
                        .values(revoked_at=now_ms()))
    if done.rowcount:
        return True
    return conn.execute(select(clients.c.client_id).where(clients.c.client_id == client_id)).first() is not None


def server_client(conn: Connection, client_id: str) -> ServerClient | None:
    """What the server API checks of a client behind a token: revoked? which bot, still enabled?"""
    row = conn.execute(select(clients.c.client_id, clients.c.bot_user_id, clients.c.revoked_at, clients.c.secret_hash,
                              users.c.disabled_at)
                       .select_from(clients.outerjoin(users, users.c.id == clients.c.bot_user_id))
                       .where(clients.c.client_id == client_id)).first()
    if row is None or row.secret_hash is None:
        return None
    return ServerClient(row.client_id, row.bot_user_id, row.revoked_at is not None, row.disabled_at is not None)
