"""The two statements that differ between SQLite and MySQL: insert-or-ignore and upsert."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Table
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Connection


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict]) -> None:
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        conn.execute(sqlite.insert(table).on_conflict_do_nothing(), list(rows))
    else:
        conn.execute(mysql.insert(table).prefix_with("IGNORE"), list(rows))


def upsert(conn: Connection, table: Table, rows: Sequence[dict], keys: Sequence[str],
           update: Sequence[str]) -> None:
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        stmt = sqlite.insert(table)
        stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                          set_={c: stmt.excluded[c] for c in update})
    else:
        stmt = mysql.insert(table)
        stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update})
    conn.execute(stmt, list(rows))
