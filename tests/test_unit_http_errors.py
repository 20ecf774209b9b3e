"""How the gateway answers errors raised in its own process, without Ray: a database that does not
answer is 503 (as a failed service call), a real bug 500, and neither leaks its details."""

from __future__ import annotations

import logging

import pymysql
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from imray.deployments.http import add_error_handlers

SECRET = "s3cret-parameter"


def _app(error: Exception) -> TestClient:
    app = FastAPI()
    add_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("error", [
    OperationalError("SELECT 1 WHERE x = %s", (SECRET,), pymysql.err.OperationalError(2003, "Can't connect")),
    InterfaceError("SELECT 1", (SECRET,), pymysql.err.InterfaceError(0, "")),
    redis.exceptions.ConnectionError("Connection closed by server."),
    redis.exceptions.TimeoutError("Timeout reading from socket"),
])
def test_a_database_or_redis_that_does_not_answer_is_503_and_no_statement_is_logged(
        error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="imray.gateway"):
        r = _app(error).get("/boom")
    assert r.status_code == 503 and r.json() == {"detail": "service temporarily unavailable"}
    assert caplog.records and SECRET not in caplog.text


def test_a_bug_is_500_without_its_details() -> None:
    r = _app(IntegrityError("INSERT", (SECRET,), Exception("duplicate"))).get("/boom")
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
