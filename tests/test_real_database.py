"""The database adapter's connection handling on a real MariaDB server, one of its own.

The pool does without SQLAlchemy's ping before every use and ROLLBACK after every return (see
`imray.storage.db`). These tests hold it to what that must not cost: reads see every commit at once,
a failed transaction leaves nothing behind, and a server restart costs at most one failed write.
The server is private (port 3307), so that restarting it does not disturb the stack under test.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import DBAPIError
from test_unit_catch_up_pages import batched_pages_match_lone_reads

from imray.storage import db as db_module
from imray.storage.db import SERVER_DRIVERS, Database
from imray.storage.schema import metadata

PORT = 3307


def _server(action: str, state: str) -> None:
    subprocess.run(["middleware/mariadb.sh", action, state], check=True, env={**os.environ, "MARIADB_PORT": str(PORT)},
                   stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = str(tmp_path_factory.mktemp("mariadb"))
    _server("start", state)
    try:
        yield state
    finally:
        _server("stop", state)


@pytest.fixture(params=SERVER_DRIVERS)  # mysqlclient (what the real stack runs) and PyMySQL
def url(request: pytest.FixtureRequest) -> str:
    return f"mysql+{request.param}://imray:imray-test@127.0.0.1:{PORT}/imray?charset=utf8mb4"


@pytest.fixture
def database(server: str, url: str) -> Iterator[Database]:
    database = Database(url)
    assert database.engine.dialect.driver == url.split("+")[1].split(":")[0]
    database.transaction(lambda c: c.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY, v INT)"))
    database.transaction(lambda c: c.exec_driver_sql("REPLACE INTO t VALUES (1, 0)"))
    try:
        yield database
    finally:
        database.close()


def _write(conn) -> None:
    conn.exec_driver_sql("UPDATE t SET v = v + 1 WHERE id = 1")


def _read(conn) -> int:
    cursor = conn.connection.cursor()  # as the history read does: the driver's own cursor
    cursor.execute("SELECT v FROM t WHERE id = 1")
    return cursor.fetchall()[0][0]


def _counters(database: Database) -> dict[str, int]:
    names = "'Questions', 'Com_commit', 'Com_rollback', 'Com_admin_commands'"
    rows = database.transaction(lambda c: c.exec_driver_sql(
        f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})").all())
    return {name: int(value) for name, value in rows}


def test_a_read_is_one_statement_and_a_write_no_more_than_its_commit(database: Database, url: str) -> None:
    counters = Database(url)
    try:
        database._read_only(_read), database.transaction(_write)  # connections made and warm
        before = _counters(counters)
        for _ in range(10):
            database._read_only(_read)
            database.transaction(_write)
        spent = {k: v - before[k] for k, v in _counters(counters).items()}
    finally:
        counters.close()
    # 10 x (SELECT) + 10 x (UPDATE, COMMIT) + the counters' own SHOW and COMMIT: no ping, no ROLLBACK.
    assert spent == {"Questions": 32, "Com_commit": 11, "Com_rollback": 0, "Com_admin_commands": 0}


def test_reads_see_each_commit_at_once_and_a_failed_transaction_leaves_nothing(database: Database, url: str) -> None:
    writer = Database(url)  # another process's pool
    try:
        for expected in range(1, 11):
            writer.transaction(_write)
            assert database._read_only(_read) == expected  # no snapshot kept from an earlier read

        def half_done(conn) -> None:
            _write(conn)
            raise RuntimeError("the request failed halfway")
        with pytest.raises(RuntimeError):
            database.transaction(half_done)
        assert writer._read_only(_read) == 10
        database.transaction(_write)  # the same pooled connection carries on, in a clean transaction
        assert writer._read_only(_read) == 11

        # Work on the driver's cursor that SQLAlchemy never saw is rolled back when the connection
        # goes back to the pool, not committed by the next transaction on it.
        with database.engine.connect() as conn:
            conn.connection.cursor().execute("UPDATE t SET v = v + 100 WHERE id = 1")
        database.transaction(_write)
        assert writer._read_only(_read) == 12
    finally:
        writer.close()


def test_after_a_server_restart_reads_go_on_and_a_write_fails_at_most_once(database: Database, server: str) -> None:
    database.transaction(_write)
    assert database._read_only(_read) == 1  # both pools now hold a connection to this server
    _server("stop", server)
    _server("start", server)
    assert database._read_only(_read) == 1  # the read tried again on fresh connections
    failures = 0
    for _ in range(2):
        try:
            database.transaction(_write)
        except DBAPIError as exc:
            assert exc.connection_invalidated
            failures += 1
    assert failures <= 1
    assert database._read_only(_read) == 3 - failures


def test_a_connection_idle_for_long_is_checked_before_use(database: Database, server: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    database.transaction(_write)
    monkeypatch.setattr(db_module, "IDLE_PING_S", -1.0)  # every connection counts as idle
    _server("stop", server)
    _server("start", server)
    database.transaction(_write)  # the dead connection was found at checkout and replaced: no failure
    assert database._read_only(_read) == 2


async def test_the_batched_catch_up_pages_are_what_each_reader_gets_alone_on_mariadb(database: Database) -> None:
    # The batch's statements are plain SQL (one UNION ALL of numbered pages, IN lists): MariaDB reads them too.
    metadata.drop_all(database.engine)  # the other driver's run left its users in this server's database
    database.create_schema()
    await batched_pages_match_lone_reads(database)
