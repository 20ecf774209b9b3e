"""Application metrics (issue 20) through `ray.util.metrics`: Ray's metrics agent on each node exports
them beside Ray's own (Prometheus text on the node's metrics export port, names prefixed `ray_`).

Recorded per batch, never per message: a commit, a delivery blob, an outcome blob each record once
(one call costs a few µs; a batch holds tens to hundreds of messages). Outside a Ray worker (unit
tests, the CLI) every call does nothing. `deploy/grafana/imray.json` charts these names, and
`tests/test_metrics.py` checks that each one it queries is in a real scrape.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

BACKENDS = ("database", "redis", "s3", "nacos")
# Milliseconds: a commit is ~1-5 ms, an ack tens of ms under load, seconds only when something is wrong.
LATENCY_MS = [0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0]
BATCH_SIZES = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0]

# name -> (kind, description, tag keys); the dashboard's queries name these with Ray's `ray_` prefix.
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "imray_messages_acked": ("counter", "messages and events committed and acknowledged", ("shard",)),
    "imray_commit_ms": ("histogram", "time to commit one batch (plan + transaction)", ("shard",)),
    "imray_commit_batch_size": ("histogram", "items in one committed batch", ("shard",)),
    "imray_ack_ms": ("histogram", "a socket node's batch: sent to its shard until its outcomes came back",
                     ("node",)),
    "imray_messages_delivered": ("counter", "message frames written to sessions", ("node",)),
    "imray_delivery_ms": ("histogram", "commit to delivery at the socket node (newest message of a batch)",
                          ("node",)),
    "imray_sessions": ("gauge", "open sessions on a socket node", ("node",)),
    "imray_logins": ("counter", "password and refresh grants, by outcome", ("outcome",)),
    "imray_rate_limited": ("counter", "requests (http) and frames (socket) refused for their rate", ("where",)),
    "imray_fanout_queue": ("gauge", "deliveries waiting for a shard's fan-out", ("shard",)),
    "imray_backend_errors": ("counter", "failed calls to a backend", ("backend",)),
}


@cache
def _metric(name: str) -> Any:
    """The Ray metric object of `name`, made once per process (None outside a Ray worker)."""
    import ray

    if not ray.is_initialized():
        return None
    from ray.util import metrics

    kind, description, tags = DEFINITIONS[name]
    if kind == "counter":
        return metrics.Counter(name, description=description, tag_keys=tags)
    if kind == "gauge":
        return metrics.Gauge(name, description=description, tag_keys=tags)
    boundaries = BATCH_SIZES if name.endswith("batch_size") else LATENCY_MS
    return metrics.Histogram(name, description=description, boundaries=boundaries, tag_keys=tags)


_lock = threading.Lock()  # database threads record errors too


def count(name: str, value: float, **tags: str) -> None:
    if value > 0 and (metric := _metric(name)) is not None:
        metric.inc(value, tags=tags)


def observe(name: str, value: float, **tags: str) -> None:
    if (metric := _metric(name)) is not None:
        metric.observe(value, tags=tags)


def gauge(name: str, value: float, **tags: str) -> None:
    if (metric := _metric(name)) is not None:
        metric.set(value, tags=tags)


def backend_error(backend: str) -> None:
    with _lock:
        count("imray_backend_errors", 1, backend=backend)


def declare_backend_errors() -> None:
    """Export the error counters at 0 from the start, as Prometheus clients do for labels known up
    front: a panel of errors then shows "none" rather than "no data". Ray's Counter refuses inc(0);
    its `_record` is what inc calls after that check."""
    metric = _metric("imray_backend_errors")
    if metric is not None:
        for backend in BACKENDS:
            metric._record(0, tags={"backend": backend})
