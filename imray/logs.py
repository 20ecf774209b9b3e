"""How imray's processes log (issue 20): Ray's structured logging, JSON by default, for actors and Serve.

Ray applies a job's `LoggingConfig` to the root logger of the driver and of every task and actor of
the job (the supervisor, socket nodes, shards, presence); Serve replicas take a deployment's
`logging_config`, and imray's records logged there carry Serve's request id and route
(`ServeRequestFields`, checked by `tests/test_logs.py`). imray's loggers add their own
fields through `extra` (`node`, `shard`, `user_id`, `conv`); nothing logs tokens, passwords or
message bodies (`tests/test_logs.py` searches every log file for them).
"""

from __future__ import annotations

import logging
from typing import Any

from imray.settings import Settings


def ray_logging(settings: Settings) -> Any:
    """The `logging_config` of `ray.init` for the job that deploys imray."""
    import ray

    return ray.LoggingConfig(encoding=settings.log_format.upper(), log_level="INFO",
                             additional_log_standard_attrs=["name"])


def serve_logging(settings: Settings, level: str = "WARNING") -> dict[str, Any]:
    """A Serve deployment's (and the proxies') `logging_config`."""
    return {"enable_access_log": False, "log_level": level, "encoding": settings.log_format.upper()}


class ServeRequestFields(logging.Filter):
    """Gives a record logged while a Serve replica handles a request that request's id and route:
    Serve puts them on its own loggers' records only, and imray logs under `imray.*`."""

    def filter(self, record: logging.LogRecord) -> bool:
        from ray.serve.context import _get_serve_request_context

        context = _get_serve_request_context()
        if context.request_id and not hasattr(record, "request_id"):
            record.request_id, record.route = context.request_id, context.route
        return True


def tag_serve_records() -> None:
    """In a Serve replica: request fields on every record its root handlers write (a handler's filter
    sees the records of every logger under it, a logger's only its own). Safe to call again."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ServeRequestFields) for f in handler.filters):
            handler.addFilter(ServeRequestFields())


class _PeerNotConnection(logging.Filter):
    """websockets puts its connection object on every record it logs (`extra={"websocket": ...}`),
    which Ray's JSON formatter cannot encode: logging then printed a traceback to the log instead of
    the record, ~25 % of a socket node's CPU while 10,000 sessions connected. The record keeps the
    peer's address instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        connection = record.__dict__.pop("websocket", None)
        if connection is not None:
            record.peer = str(getattr(connection, "remote_address", None))
        return True


def quiet_websockets() -> None:
    """In a socket node: websockets' records encodable, and only its warnings and errors (it logs
    every connection's open and close at INFO: 40,000 lines for 20,000 sessions). Safe to call again."""
    logging.getLogger("websockets").setLevel(logging.WARNING)
    for name in ("websockets.server", "websockets.client"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _PeerNotConnection) for f in logger.filters):
            logger.addFilter(_PeerNotConnection())
