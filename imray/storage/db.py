"""Engine creation and the one rule of database work here: it never runs on an event loop."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from pymysql.constants import CLIENT
from pymysql.cursors import RE_INSERT_VALUES
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, PoolResetState

from imray.storage.private import private_parent, private_sqlite_file
from imray.storage.schema import metadata

T = TypeVar("T")


# A database server that stops answering fails the statement after this long instead of holding a
# thread (and the shard's commit, or a request) for good: the driver's read and write timeouts.
TIMEOUT_S = 30.0
# The MySQL/MariaDB drivers imray runs on: mysqlclient (`mysql+mysqldb://`, C, the faster; needs
# libmariadb to build) and PyMySQL (`mysql+pymysql://`, pure Python, installed everywhere). Measured
# on MariaDB: a 50-message history page cost 330 µs of client CPU through PyMySQL, 73 through mysqlclient.
SERVER_DRIVERS = ("mysqldb", "pymysql")


def make_engine(url: str, timeout_s: float = TIMEOUT_S) -> Engine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            private_parent(Path(path))  # a directory made for it is 0700, whatever the umask
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        if path and path != ":memory:":
            # Before SQLite opens (and perhaps creates) the file: 0600, whatever the umask.
            event.listen(engine, "do_connect", lambda *_: private_sqlite_file(Path(path)))

        # Several processes share the file: WAL, and waits instead of errors while another writes.
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return _server_engine(url, timeout_s)


# A database server's connection pool, without the round trips SQLAlchemy's safe defaults add to
# every transaction: a ping at each checkout (pool_pre_ping) and a ROLLBACK at each return
# (reset_on_return); reads run in autocommit, so they need no ROLLBACK either. Measured on MariaDB
# through pymysql: a one-row read 3 round trips -> 1, 0.63 -> 0.26 ms (client CPU 0.36 -> 0.14 ms);
# a one-row write 4 -> 2, 1.10 -> 0.65 ms. In a loaded ConversationShard, where every round trip
# also waits for its thread's turn, a commit of ~10 messages went from 5.0-5.6 to 2.1-2.2 ms (p50).
IDLE_PING_S = 10.0  # only a connection idle this long is pinged before use
_USED_AT = "imray_used_at"  # keys in the pool's per-connection `info`
_CLEAN = "imray_clean"


def _server_engine(url: str, timeout_s: float, multi_statements: bool = False, **options: object) -> Engine:
    whole_s = max(1, math.ceil(timeout_s))  # mysqlclient takes whole seconds
    bounded: dict[str, object] = {"read_timeout": whole_s, "write_timeout": whole_s,
                                  "connect_timeout": min(whole_s, 10)} if url.startswith("mysql") else {}
    if multi_statements:  # replaces SQLAlchemy's own flags: FOUND_ROWS is the one it sets
        # The protocol's capability bits: the same numbers for either driver.
        bounded["client_flag"] = CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS
    engine = create_engine(url, pool_recycle=3600, pool_reset_on_return=None, connect_args=bounded, **options)

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info[_USED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        # A connection that dies while in use (the server restarted under load) fails one request,
        # and SQLAlchemy then renews every connection of the pool; one idle for long is checked here
        # (the dialect's ping: the driver's own, never reconnecting behind the pool's back).
        now = time.monotonic()
        idle = now - record.info.get(_USED_AT, 0.0)
        record.info[_USED_AT] = now
        if idle > IDLE_PING_S:
            try:
                engine.dialect.do_ping(dbapi_conn)
            except Exception as exc:
                raise DisconnectionError("the database connection was lost while idle") from exc  # take another

    @event.listens_for(engine, "reset")
    def _reset(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry, reset_state: PoolResetState) -> None:
        # Skipped only after Database.transaction committed: the connection holds no transaction then.
        if record.info.pop(_CLEAN, False) and not reset_state.terminate_only:
            return
        if options.get("isolation_level") != "AUTOCOMMIT":
            dbapi_conn.rollback()

    return engine


def _disconnected(engine: Engine, exc: Exception) -> bool:
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated
    driver_error = getattr(engine.dialect.loaded_dbapi, "Error", ())
    return isinstance(exc, driver_error) and engine.dialect.is_disconnect(exc, None, None)


class Database:
    """A SQLAlchemy engine plus a small thread pool; `await db.run(fn)` calls fn(conn) in a transaction."""

    def __init__(self, url: str, threads: int = 4, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url
        self.embedded = url.startswith("sqlite")
        self.engine = make_engine(url, timeout_s)
        self._read_engine = (self.engine if self.embedded
                             else _server_engine(url, timeout_s, isolation_level="AUTOCOMMIT"))
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="imray-db")
        self._timeout_s = timeout_s
        self._script_engine: Engine | None = None  # made on first use (`run_script`)

    @property
    def takes_scripts(self) -> bool:
        """Whether `run_script` is available: on a MySQL/MariaDB server, through either driver."""
        return not self.embedded and self.engine.dialect.driver in SERVER_DRIVERS

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def transaction(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            with conn.begin():
                result = fn(conn)
            conn.connection.info[_CLEAN] = True  # committed: no ROLLBACK needed when it goes back
            return result

    async def run(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.transaction, fn)

    def _read_only(self, fn: Callable[[Connection], T]) -> T:
        # On a database server, autocommit: each statement reads the latest committed data, with no
        # transaction to end after it (one round trip per statement). On SQLite the pool's rollback
        # on return ends the read transaction.
        for attempt in (1, 2):
            try:
                with self._read_engine.connect() as conn:
                    return fn(conn)
            except Exception as exc:
                # Connections that died in the pool (the server restarted): a read may try again, on
                # a fresh pool (the hot reads use the driver's cursor, which SQLAlchemy does not watch).
                if attempt == 2 or not _disconnected(self._read_engine, exc):
                    raise
                self._read_engine.dispose()
        raise AssertionError("unreachable")

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Like run(), for work that only reads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._read_only, fn)

    async def run_write(self, fn: Callable[[Connection], T]) -> T:
        """Like run(), except that an embedded (SQLite) database does the work on the calling thread.

        For a ConversationShard's group commit, whose loop has nothing else to do meanwhile. A SQLite
        commit is CPU on a local file (about 1-3 ms a batch); handing it to a pool thread cost two
        thread wake-ups that, on a busy box, took longer than the commit itself (measured: 4.9-5.0k
        against 6.2k msgs/s). A database server waits on the network, so it keeps the pool.
        """
        if self.embedded:
            return self.transaction(fn)
        return await self.run(fn)

    async def run_script(self, fn: Callable[[Script], None]) -> None:
        """The statements `fn` adds to a `Script`, then COMMIT, sent as one round trip (see `Script`).

        Errors are SQLAlchemy's, as from `run` (a refused row is an IntegrityError or DataError), and
        nothing of a failed script stays: the statements after the failing one do not run, and the
        connection is rolled back when it goes back to the pool. As with any commit, a connection lost
        after the script was sent leaves its outcome unknown.
        """
        await asyncio.get_running_loop().run_in_executor(self._pool, self._script, fn)

    def _script(self, fn: Callable[[Script], None]) -> None:
        if self._script_engine is None:
            # A pool of its own: only these connections take several statements in one query.
            self._script_engine = _server_engine(self.url, self._timeout_s, multi_statements=True)
        engine = self._script_engine
        dbapi = engine.dialect.loaded_dbapi
        with engine.connect() as conn:
            driver = conn.connection.dbapi_connection
            assert driver is not None  # a connection checked out of the pool has its driver's
            cursor = driver.cursor()
            try:
                script = Script(cursor, engine.dialect)
                fn(script)
                cursor.execute(script.text(), None)  # no parameters: the values are rendered already
                while cursor.nextset():  # each statement's result, in order; a refusal raises here
                    pass
            except dbapi.Error as exc:
                invalid = engine.dialect.is_disconnect(cast(Any, exc), driver, cursor)
                if invalid:
                    conn.invalidate()
                # Not the script: it holds the messages. The class follows the driver's (IntegrityError...).
                raise DBAPIError.instance("<commit script>", None, exc, dbapi.Error, hide_parameters=True,
                                          connection_invalidated=invalid, dialect=engine.dialect) from exc
            finally:
                with contextlib.suppress(dbapi.Error):  # mysqlclient reads what is left: fails on a lost connection
                    cursor.close()
            conn.connection.info[_CLEAN] = True  # committed: no ROLLBACK needed when it goes back

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.engine.dispose()
        self._read_engine.dispose()
        if self._script_engine is not None:
            self._script_engine.dispose()


class Script:
    """Statements for `Database.run_script`, rendered by the driver (its escaping, as for any query of
    its) and sent with a COMMIT in one query: one round trip for a whole group commit.

    Measured on MariaDB (a commit of 10 messages and their conversations' heads, a loop of 1,500):
    through `run` (INSERT, upsert, COMMIT: 3 round trips, SQLAlchemy's transaction) 0.93 ms and 350 µs
    of client CPU a commit; as one script 0.67 ms and 205 µs. In the one2one bench on MariaDB, where
    the shard spends most of its time waiting on commits, in two pairs of runs: commit p50 at a
    quarter load 2.1-2.3 -> 2.0 ms, ack p50 8.5-8.7 -> 7.8-7.9 ms, at half load 11.8-12.2 -> 10.4 ms.
    """

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self.dialect = dialect  # what the statements are compiled for
        self._parts: list[str] = []

    def insert_many(self, sql: str, rows: Sequence[Mapping[str, object] | Sequence[object]]) -> None:
        """`sql` (an INSERT of one row of the driver's marks, `%s` or `%(name)s`, an ON DUPLICATE KEY
        UPDATE clause allowed) for every row, as one statement: as both drivers' executemany make it,
        by PyMySQL's pattern (mysqlclient's is the same)."""
        if not rows:
            return
        found = RE_INSERT_VALUES.match(sql)
        if found is None:
            raise ValueError(f"not a one-row INSERT: {sql[:80]}")
        prefix, values, suffix = found.group(1) % (), found.group(2).rstrip(), (found.group(3) or "") % ()
        self._parts.append(prefix + ",".join(self._cursor.mogrify(values, row) for row in rows) + suffix)

    def text(self) -> str:
        return ";\n".join([*self._parts, "COMMIT"])
