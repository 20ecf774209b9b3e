"""The group outbox: a group change and its pending event are written in one transaction (issue 18).

The owning ConversationShard turns each row into a seq'd `event` message and deletes the row in its
commit transaction, so every change gets its event exactly once, even when the caller dies between
the two (the shard's sweep finds rows left behind).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from imray.domain.messaging import PendingEvent
from imray.storage.accounts import now_ms
from imray.storage.schema import group_outbox


def record(conn: Connection, conv: str, actor: int, event: Mapping[str, Any], notify: Sequence[int] = ()) -> None:
    """Queue `event` (a JSON object with a "type") for `conv`, made by `actor`, in the caller's
    transaction; `notify`: users told besides the members as they are when the event commits (a
    removed member)."""
    conn.execute(insert(group_outbox).values(conv=conv, actor_id=actor, event_key=os.urandom(12).hex(),
                                             event=orjson.dumps(dict(event)).decode(),
                                             notify=orjson.dumps(list(notify)).decode(), created_at=now_ms()))


def _pending(row: Any) -> PendingEvent:
    return PendingEvent(int(row.id), row.conv, int(row.actor_id), row.event_key, orjson.loads(row.event),
                        tuple(orjson.loads(row.notify)))


def pending_for(conn: Connection, convs: Sequence[str]) -> list[PendingEvent]:
    """The events waiting for `convs`, oldest first."""
    if not convs:
        return []
    rows = conn.execute(select(group_outbox).where(group_outbox.c.conv.in_(list(convs))).order_by(group_outbox.c.id))
    return [_pending(r) for r in rows]


def stale_convs(conn: Connection, older_than: int, limit: int) -> list[str]:
    """Conversations with an event waiting since before `older_than` (ms): a publisher died."""
    rows = conn.execute(select(group_outbox.c.conv).where(group_outbox.c.created_at < older_than)
                        .order_by(group_outbox.c.id).limit(limit))
    return list(dict.fromkeys(r.conv for r in rows))


def done(conn: Connection, ids: Sequence[int]) -> int:
    """Delete committed events; the count tells whether another commit took them first."""
    if not ids:
        return 0
    return int(conn.execute(delete(group_outbox).where(group_outbox.c.id.in_(list(ids)))).rowcount)
