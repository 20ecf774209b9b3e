"""The bench's HTTP baselines: the argon2 ceiling is real verifications; the bare history service
runs imray's own page statement."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from sqlalchemy.dialects.mysql import pymysql

from imray.bench.baselines import hash_ceiling
from imray.bench.processes import stop, until_serving
from imray.storage.messages import page_after_sql


def test_the_hash_ceiling_counts_verifications_in_every_process():
    got = hash_ceiling(time_cost=1, memory_kib=1024, parallelism=1, cores=2, duration=0.3)
    assert got["cores"] == 2 and got["argon2"] == {"time_cost": 1, "memory_kib": 1024, "parallelism": 1}
    assert got["verifications_per_s"] > 10  # argon2id at 1 MiB verifies in about a millisecond


def test_the_bare_history_service_runs_the_statement_imray_pages_with():
    sql = page_after_sql(pymysql.dialect(paramstyle="pyformat"))
    assert sql.startswith("SELECT messages.conv, messages.seq, messages.msg_id")
    assert "LEFT OUTER JOIN hidden_messages" in sql and "ORDER BY messages.seq" in sql
    assert {"%(conv)s", "%(after)s", "%(reader)s", "%(limit)s"} <= {p for p in sql.split() if p.startswith("%(")}


def test_a_baseline_server_is_awaited_until_it_answers_and_one_that_dies_says_so(tmp_path):
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until_serving(f"http://127.0.0.1:{port}/", proc, within_s=20)
    finally:
        stop(proc)
    assert proc.poll() is not None
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exited with 3"):
        until_serving(f"http://127.0.0.1:{port}/", dead, within_s=20)
