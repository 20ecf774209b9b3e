"""On MariaDB a group commit of messages is one script (the statements and COMMIT in one round
trip): hostile text lands verbatim, a refused row leaves nothing of its batch, and a connection lost
under it fails that commit only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy
from sqlalchemy.exc import IntegrityError, OperationalError

from imray.actors.shard_commit import ShardCommitter
from imray.domain.messaging import Batch, ConversationLog, SendItem
from imray.storage import accounts, migrate
from imray.storage.db import SERVER_DRIVERS, Database
from imray.storage.message_store import SqlMessageStore

HOSTILE = ["'; DROP TABLE messages; --", "%s %% %(x)s \\ \\\\ \x00 end", "\U0001f600 e\u0301 \u202e", "x" * 4000,
           "\\'); COMMIT; DELETE FROM conversations; --"]


@pytest.fixture(params=SERVER_DRIVERS)  # mysqlclient (the stack's) and PyMySQL render the script
def db(stack, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A migrated database of its own on the stack's server, so its connections are all this test's."""
    url = sqlalchemy.engine.make_url(stack.settings.db_url).set(drivername=f"mysql+{request.param}")
    name = f"imray_script_{uuid.uuid4().hex[:8]}"
    server = sqlalchemy.create_engine(url.set(database=""))
    with server.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    database = None
    try:
        target = url.set(database=name).render_as_string(hide_password=False)
        migrate.upgrade(target)
        database = Database(target)
        assert database.takes_scripts and database.engine.dialect.driver == request.param
        yield database
    finally:
        if database is not None:
            database.close()
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE `{name}`")
        server.dispose()


def _pair(db: Database) -> str:
    a, b = db.transaction(lambda c: [accounts.create_user(c, n, "x", n)["id"] for n in ("alice", "bob")])
    return f"d:{a}:{b}"


def _stored(db: Database, conv: str) -> tuple[list[tuple[int, str]], int | None]:
    def read(c: sqlalchemy.Connection) -> tuple[list[tuple[int, str]], int | None]:
        rows = c.exec_driver_sql("SELECT seq, body FROM messages WHERE conv = %s ORDER BY seq", (conv,)).fetchall()
        head = c.exec_driver_sql("SELECT last_seq FROM conversations WHERE conv = %s", (conv,)).scalar()
        return [(r[0], r[1]) for r in rows], head
    return db.transaction(read)


def _row(conv: str, seq: int, body: str, client_id: str) -> dict:
    return {"msg_id": uuid.uuid4().hex, "conv": conv, "seq": seq, "sender_id": int(conv.split(":")[1]),
            "client_id": client_id, "kind": "text", "body": body, "file_id": None, "ts": 1, "meta": None}


async def _send(db: Database, conv: str, items: list[tuple[str, str]]) -> list[int | None]:
    """Through a fresh shard's committer (it knows only what the database holds); the seqs acked."""
    sender = int(conv.split(":")[1])
    log, store = ConversationLog(SqlMessageStore(db)), SqlMessageStore(db)
    committer = ShardCommitter(0, log, store, lambda _deliveries: None)
    committer.start()
    try:
        outcomes = await committer.submit([SendItem(sender, "s", cid, conv, "text", body) for cid, body in items])
    finally:
        await committer.stop()
    return [json.loads(o.ack)["seq"] if o.ack else None for o in outcomes]


async def test_hostile_text_is_stored_verbatim_and_a_resend_finds_its_first_ack(db: Database) -> None:
    conv = _pair(db)
    assert await _send(db, conv, [("first", "hi")]) == [1]  # a new conversation: the general path
    sent = [(f"c{i}", body) for i, body in enumerate(HOSTILE)]
    assert await _send(db, conv, sent) == [2, 3, 4, 5, 6]  # messages only: one script
    # A fresh shard resends two of them: the unique key refuses the script, and the resends get their acks.
    assert await _send(db, conv, [("c1", "again"), ("new", "after"), ("c3", "again")]) == [3, 7, 5]
    rows, head = _stored(db, conv)
    assert rows == [(1, "hi"), *[(i + 2, body) for i, body in enumerate(HOSTILE)], (7, "after")]
    assert head == 7


async def test_a_refused_row_leaves_nothing_of_its_script_and_the_next_commit_goes_through(db: Database) -> None:
    conv = _pair(db)
    assert await _send(db, conv, [("a", "one"), ("b", "two")]) == [1, 2]
    store = SqlMessageStore(db)
    # Seq 3 is new, seq 2 is taken: the database refuses the second row, after the first was inserted.
    refused = Batch(outcomes=[], rows=[_row(conv, 3, "three", "c"), _row(conv, 2, "taken", "d")], heads={conv: 3})
    with pytest.raises(IntegrityError):
        await store.commit(refused)
    assert _stored(db, conv) == ([(1, "one"), (2, "two")], 2)  # neither row, nor the head
    await store.commit(Batch(outcomes=[], rows=[_row(conv, 3, "three", "c")], heads={conv: 3}))
    assert _stored(db, conv) == ([(1, "one"), (2, "two"), (3, "three")], 3)


async def test_a_connection_lost_under_the_script_fails_that_commit_and_the_next_one_reconnects(db: Database) -> None:
    conv = _pair(db)
    assert await _send(db, conv, [("a", "one")]) == [1]
    assert await _send(db, conv, [("b", "two")]) == [2]  # the script's connection is in its pool now
    name = sqlalchemy.engine.make_url(db.url).database
    with db.engine.connect() as conn:  # the server ends every connection to this database but this one
        ids = conn.exec_driver_sql("SELECT id FROM information_schema.processlist WHERE db = %s AND id <> "
                                   "CONNECTION_ID()", (name,)).scalars().all()
        for found in ids:
            conn.exec_driver_sql(f"KILL CONNECTION {int(found)}")
    assert ids
    store = SqlMessageStore(db)
    with pytest.raises(OperationalError) as lost:
        await store.commit(Batch(outcomes=[], rows=[_row(conv, 3, "three", "c")], heads={conv: 3}))
    assert lost.value.connection_invalidated
    assert _stored(db, conv) == ([(1, "one"), (2, "two")], 2)
    await store.commit(Batch(outcomes=[], rows=[_row(conv, 3, "three", "c")], heads={conv: 3}))
    assert _stored(db, conv) == ([(1, "one"), (2, "two"), (3, "three")], 3)
