"""Engine creation and the one rule of database work here: it never runs on an event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, PoolResetState

from imray.storage.private import private_parent, private_sqlite_file
from imray.storage.schema import metadata

T = TypeVar("T")


# A database server that stops answering fails the statement after this long instead of holding a
# thread (and the shard's commit, or a request) for good: pymysql's read and write timeouts.
TIMEOUT_S = 30.0


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


def _server_engine(url: str, timeout_s: float, **options: object) -> Engine:
    bounded = {"read_timeout": timeout_s, "write_timeout": timeout_s,
               "connect_timeout": max(1, min(int(timeout_s), 10))} if url.startswith("mysql") else {}
    engine = create_engine(url, pool_recycle=3600, pool_reset_on_return=None, connect_args=bounded, **options)

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info[_USED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        # `dbapi_conn` is the driver's own connection: `ping` is pymysql's, not part of the DB-API.
        # A connection that dies while in use (the server restarted under load) fails one request,
        # and SQLAlchemy then renews every connection of the pool; one idle for long is checked here.
        now = time.monotonic()
        idle = now - record.info.get(_USED_AT, 0.0)
        record.info[_USED_AT] = now
        if idle > IDLE_PING_S:
            try:
                dbapi_conn.ping(False)
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

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.engine.dispose()
        self._read_engine.dispose()
