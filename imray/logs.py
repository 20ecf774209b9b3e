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
