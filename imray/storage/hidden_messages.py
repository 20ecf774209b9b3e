"""Messages a user deleted for themselves (issue 18): one row each; history reads join them in."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection

from imray.storage.schema import hidden_messages, messages
from imray.storage.sql_compat import insert_ignore


def kind_of(conn: Connection, conv: str, seq: int) -> str | None:
    """The kind of message `seq` of `conv`, None when there is none (a read of the unique key)."""
    value = conn.execute(select(messages.c.kind).where(messages.c.conv == conv, messages.c.seq == seq)).scalar()
    return None if value is None else str(value)


def hide(conn: Connection, user_id: int, conv: str, seq: int) -> bool:
    """Delete message `seq` of `conv` for `user_id`; False when it was already (a repeat)."""
    there = conn.execute(select(hidden_messages.c.seq).where(
        hidden_messages.c.user_id == user_id, hidden_messages.c.conv == conv, hidden_messages.c.seq == seq)).first()
    if there is not None:
        return False
    insert_ignore(conn, hidden_messages, [{"user_id": user_id, "conv": conv, "seq": seq}])  # a racing twin: one row
    return True
