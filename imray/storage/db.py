"""Engine creation and the one rule of database work here: it never runs on an event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection

from imray.storage.schema import metadata

T = TypeVar("T")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # several processes share the file: WAL + waits
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_recycle=3600)


class Database:
    """A SQLAlchemy engine plus a small thread pool; `await db.run(fn)` calls fn(conn) in a transaction."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.embedded = url.startswith("sqlite")
        self.engine = make_engine(url)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="imray-db")

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def transaction(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            return fn(conn)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.transaction, fn)

    def _read_only(self, fn: Callable[[Connection], T]) -> T:
        # No COMMIT: the pool's rollback on return ends the transaction, one round trip fewer on a
        # database server (a history page on MariaDB: 0.93 -> 0.83 ms).
        with self.engine.connect() as conn:
            return fn(conn)

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
