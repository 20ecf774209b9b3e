"""websockets' records in a socket node: written as JSON with the peer's address (its connection
object on the record made the JSON formatter fail and print a traceback per connection instead)."""

from __future__ import annotations

import io
import json
import logging

import pytest
from ray._common.formatters import JSONFormatter

from imray.logs import quiet_websockets


class Connection:  # what websockets' LoggerAdapter puts on each record: not JSON
    remote_address = ("127.0.0.5", 40122)


@pytest.fixture
def json_log():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(old_level)
    for name in ("websockets", "websockets.server", "websockets.client"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.NOTSET)
        logger.filters.clear()


def test_a_websockets_record_breaks_the_json_formatter_without_the_filter(json_log, capsys):
    logging.LoggerAdapter(logging.getLogger("websockets.server"), {"websocket": Connection()}).warning("x")
    assert json_log.getvalue() == "" and "Logging error" in capsys.readouterr().err


def test_its_warnings_are_json_with_the_peer_and_its_per_connection_info_is_dropped(json_log, capsys):
    quiet_websockets()
    quiet_websockets()  # a second socket node in the same process adds nothing twice
    assert len(logging.getLogger("websockets.server").filters) == 1
    log = logging.LoggerAdapter(logging.getLogger("websockets.server"), {"websocket": Connection()})
    log.info("connection open")
    log.warning("opening handshake failed")
    [line] = json_log.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "opening handshake failed" and record["peer"] == "('127.0.0.5', 40122)"
    assert "Logging error" not in capsys.readouterr().err
