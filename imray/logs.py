"""How imray's processes log (issue 20): Ray's structured logging, JSON by default, for actors and Serve.

Ray applies a job's `LoggingConfig` to the root logger of the driver and of every task and actor of
the job (the supervisor, socket nodes, shards, presence); Serve replicas take a deployment's
`logging_config`, whose JSON records also carry Serve's request id. imray's loggers add their own
fields through `extra` (`node`, `shard`, `user_id`, `conv`); nothing logs tokens, passwords or
message bodies (`tests/test_logs.py` searches every log file for them).
"""

from __future__ import annotations

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
