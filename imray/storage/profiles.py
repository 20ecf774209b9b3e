"""A user's own account in the database: the username search, the nickname, the password, deletion."""

from __future__ import annotations

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.engine import Connection

from imray.domain.account_changes import DELETED_NICKNAME, LIKE_ESCAPE, deleted_username
from imray.domain.account_security import DeletedAccount
from imray.domain.accounts import User
from imray.storage import groups as group_store
from imray.storage import logins as login_store
from imray.storage.accounts import USER_COLUMNS, now_ms, user_view
from imray.storage.admin import NO_PASSWORD
from imray.storage.schema import blocks, contact_requests, contacts, conversations, user_presence, users


def search(conn: Connection, pattern: str, after: int, limit: int) -> list[User]:
    """Live accounts (not disabled, not deleted) whose lower-cased username is LIKE `pattern` (ESCAPE
    '!'), by id after `after`. Lower-cased on both sides: the same answer on SQLite and on MariaDB
    whatever its collation."""
    rows = conn.execute(select(*USER_COLUMNS).where(
        func.lower(users.c.username).like(pattern, escape=LIKE_ESCAPE), users.c.id > after,
        users.c.disabled_at.is_(None), users.c.deleted_at.is_(None)).order_by(users.c.id).limit(limit))
    return [user_view(r) for r in rows]


def set_nickname(conn: Connection, user_id: int, nickname: str) -> User | None:
    conn.execute(update(users).where(users.c.id == user_id, users.c.deleted_at.is_(None)).values(nickname=nickname))
    row = conn.execute(select(*USER_COLUMNS).where(users.c.id == user_id, users.c.deleted_at.is_(None))).first()
    return user_view(row) if row else None


def password_hash(conn: Connection, user_id: int) -> str | None:
    row = conn.execute(select(users.c.password_hash).where(users.c.id == user_id,
                                                           users.c.deleted_at.is_(None))).first()
    return str(row.password_hash) if row else None


def set_password(conn: Connection, user_id: int, hashed: str, keep: str | None, keep_s: int) -> list[str]:
    """The new hash, and every login but `keep` ended, in one transaction."""
    conn.execute(update(users).where(users.c.id == user_id).values(password_hash=hashed))
    return login_store.end_all(conn, user_id, keep_s, keep)


def delete_account(conn: Connection, user_id: int, keep_s: int) -> DeletedAccount:
    """docs/protocol.md §6: the row stays (messages keep their sender) as a placeholder nobody can
    log in to: username freed, profile gone, disabled; logins ended, blocks, contacts, requests and
    group memberships removed. The avatar's file row and object go afterwards (`FileKeeper`)."""
    row = conn.execute(select(users.c.avatar_url).where(users.c.id == user_id,
                                                        users.c.deleted_at.is_(None))).first()
    if row is None:
        return DeletedAccount([])
    now = now_ms()
    conn.execute(update(users).where(users.c.id == user_id).values(
        username=deleted_username(user_id), nickname=DELETED_NICKNAME, avatar_url=None, password_hash=NO_PASSWORD,
        deleted_at=now, disabled_at=now))
    families = login_store.end_all(conn, user_id, keep_s)
    conn.execute(delete(blocks).where(or_(blocks.c.user_id == user_id, blocks.c.blocked_id == user_id)))
    conn.execute(delete(contacts).where(or_(contacts.c.user_id == user_id, contacts.c.contact_id == user_id)))
    conn.execute(delete(contact_requests).where(or_(contact_requests.c.from_id == user_id,
                                                    contact_requests.c.to_id == user_id)))
    conn.execute(delete(user_presence).where(user_presence.c.user_id == user_id))
    group_ids = group_store.group_ids_of(conn, user_id)
    for group_id in group_ids:  # an owner's group passes to its longest-standing member
        group_store.remove_member(conn, group_id, user_id)
    directs = conn.execute(select(conversations.c.conv).where(or_(
        conversations.c.conv.like(f"d:{user_id}:%"), conversations.c.conv.like(f"d:%:{user_id}")))).scalars()
    avatar = row.avatar_url.rsplit("?v=", 1)[1] if row.avatar_url and "?v=" in row.avatar_url else None
    return DeletedAccount(families, [*(f"g:{g}" for g in group_ids), *directs], avatar)
