"""On MariaDB: client ids compared exactly whatever the database's collation (migration 0003), and
a server that stops answering costs a statement its read timeout, not a thread for good."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy
from sqlalchemy.exc import OperationalError

from imray.actors.shard_commit import ShardCommitter
from imray.domain.messaging import ConversationLog, SendItem
from imray.storage import accounts, migrate
from imray.storage.db import Database
from imray.storage.message_store import SqlMessageStore


@pytest.fixture
def case_insensitive_url(stack) -> Iterator[str]:
    """A database of its own whose collation is MariaDB's default, case-insensitive and PAD SPACE,
    as an operator's `CREATE DATABASE imray` gives, migrated as `imray up` does."""
    url = sqlalchemy.engine.make_url(stack.settings.db_url)
    name = f"imray_ci_{uuid.uuid4().hex[:8]}"
    server = sqlalchemy.create_engine(url.set(database=""))
    with server.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
    try:
        target = url.set(database=name).render_as_string(hide_password=False)
        migrate.upgrade(target)
        yield target
    finally:
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE `{name}`")
        server.dispose()


async def test_client_ids_a_case_insensitive_collation_calls_equal_are_different_messages(case_insensitive_url):
    db = Database(case_insensitive_url)
    try:
        a, b = db.transaction(lambda c: [accounts.create_user(c, n, "x", n)["id"] for n in ("alice", "bob")])
        conv = f"d:{a}:{b}"
        ids = ["A", "a", "p", "p ", "\u00e9", "e"]

        async def send_all(order: list[str]) -> list[int]:
            log = ConversationLog(SqlMessageStore(db))  # a fresh shard: only the database knows the ids
            committer = ShardCommitter(0, log, SqlMessageStore(db), lambda _d: None)
            committer.start()
            try:
                outcomes = await committer.submit([SendItem(a, "s", i, conv, "text", f"body {i!r}") for i in order])
            finally:
                await committer.stop()
            assert all(o.ack for o in outcomes), outcomes
            return [json.loads(o.ack)["seq"] for o in outcomes if o.ack]

        assert await send_all(ids) == [1, 2, 3, 4, 5, 6]
        assert await send_all(list(reversed(ids))) == [6, 5, 4, 3, 2, 1]  # each resend finds its own ack
    finally:
        db.close()


def test_a_statement_the_server_does_not_answer_fails_after_the_read_timeout(stack):
    db = Database(stack.settings.db_url, timeout_s=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError):
            db.transaction(lambda c: c.exec_driver_sql("SELECT SLEEP(20)").all())
        assert time.monotonic() - started < 5
        assert db.transaction(lambda c: c.exec_driver_sql("SELECT 1").scalar()) == 1  # and the pool goes on
    finally:
        db.close()
