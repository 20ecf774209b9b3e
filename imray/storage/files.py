"""Uploaded files and who may read them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from imray.domain.conversations import parse_conv
from imray.domain.files import Upload
from imray.storage.accounts import now_ms
from imray.storage.schema import files, group_members, messages, users


def add_file(conn: Connection, row: Mapping[str, Any]) -> None:
    """Record an upload: `row` has every column of `Upload` but `created_at`, which is now."""
    conn.execute(insert(files).values(**row, created_at=now_ms()))


def stored_bytes(conn: Connection, owner_id: int) -> int:
    """The bytes of every upload `owner_id` has made (chat files and avatars)."""
    total = conn.execute(select(func.coalesce(func.sum(files.c.size), 0)).where(files.c.owner_id == owner_id))
    return int(total.scalar_one())


def stored_bytes_locked_txn(conn: Connection, owner_id: int) -> int:
    """`stored_bytes`, with the owner's other uploads held until this transaction ends: a no-op write
    on the user's row locks it on a database server, and on SQLite it starts the write transaction
    (which the driver otherwise begins only at the insert, after the sum was read)."""
    conn.execute(update(users).where(users.c.id == owner_id).values(id=users.c.id))
    return stored_bytes(conn, owner_id)


def _upload(row: Any) -> Upload:
    return cast(Upload, dict(row._mapping))  # the files table's columns are Upload's keys


def file(conn: Connection, file_id: str) -> Upload | None:
    row = conn.execute(select(files).where(files.c.file_id == file_id)).first()
    return _upload(row) if row else None


def files_by_ids(conn: Connection, file_ids: list[str]) -> dict[str, Upload]:
    rows = conn.execute(select(files).where(files.c.file_id.in_(file_ids)))
    return {r.file_id: _upload(r) for r in rows}


def remove_file(conn: Connection, file_id: str) -> None:
    conn.execute(delete(files).where(files.c.file_id == file_id))


def may_read(conn: Connection, user_id: int, found: Upload) -> bool:
    """The owner, and the members of any conversation where the file was sent."""
    if found["owner_id"] == user_id or found["purpose"] == "avatar":
        return True
    convs = conn.execute(select(messages.c.conv).where(messages.c.file_id == found["file_id"]).distinct())
    for (text,) in convs:
        conv = parse_conv(text)
        if not conv.is_group and user_id in (conv.a, conv.b):
            return True
        if conv.is_group and conn.execute(select(group_members.c.user_id).where(
                group_members.c.group_id == conv.group_id, group_members.c.user_id == user_id)).first():
            return True
    return False
