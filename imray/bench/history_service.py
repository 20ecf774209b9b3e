"""A bare FastAPI + PyMySQL service running imray's history query (the page after a seq), the baseline
of the bench's history reads: no token check, no gateway, no Serve, one connection per thread.

Run by `bench.baselines.history_service` under uvicorn; the database comes from
IMRAY_BENCH_HISTORY_DATABASE_URL (a SQLAlchemy URL: its host, user and database), the driver from
IMRAY_BENCH_HISTORY_DRIVER: `pymysql` (the issue's baseline) or `mysqldb` (mysqlclient, the C driver
imray runs on when its URL says so: the same reads with imray's driver, reported beside it)."""

from __future__ import annotations

import os
import threading
from typing import Any

import orjson
import pymysql
from fastapi import FastAPI, Query, Response
from sqlalchemy.dialects.mysql import pymysql as mysql_pymysql
from sqlalchemy.engine import make_url

from imray.domain.messaging import MSG_FIELDS
from imray.storage.messages import page_after_sql

app = FastAPI()
# The statement imray's history route runs for `after_seq` pages, compiled for MySQL (pyformat).
_SQL = page_after_sql(mysql_pymysql.dialect(paramstyle="pyformat"))
_local = threading.local()


def _connection() -> Any:
    conn = getattr(_local, "conn", None)
    if conn is None:
        url = make_url(os.environ["IMRAY_BENCH_HISTORY_DATABASE_URL"])
        options: dict[str, Any] = {"host": url.host or "127.0.0.1", "port": url.port or 3306,
                                   "user": url.username, "password": url.password or "",
                                   "database": url.database, "charset": "utf8mb4", "autocommit": True}
        if os.environ.get("IMRAY_BENCH_HISTORY_DRIVER", "pymysql") == "mysqldb":
            import MySQLdb

            conn = _local.conn = MySQLdb.connect(**options)
        else:
            conn = _local.conn = pymysql.connect(**options)
    return conn


@app.get("/api/conversations/{conv}/messages")
def page(conv: str, after_seq: int = 0, limit: int = Query(50, ge=1, le=200)) -> Response:
    with _connection().cursor() as cursor:
        cursor.execute(_SQL, {"conv": conv, "after": after_seq, "reader": 0, "limit": limit})  # both take pyformat
        rows = cursor.fetchall()
    # The frame's fields, as imray's page has them (the reader's deleted flag is the last column).
    messages = [dict(zip(MSG_FIELDS, row[:-1], strict=True)) for row in rows]
    return Response(orjson.dumps({"messages": messages}), media_type="application/json")
