"""The HTTP baselines of issue 21, measured in the same run as imray's figures: the box's ceiling
for password-hash verifications, and a bare FastAPI + PyMySQL service running imray's history query."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from imray.bench.processes import stop, until_serving
from imray.domain.passwords import Passwords

HISTORY_PORT = 9320


def _verifications(job: tuple[int, int, int, float, float]) -> tuple[int, float]:
    """One process verifying a stored hash in a loop from `start_at` for `duration` s: (count, seconds)."""
    time_cost, memory_kib, parallelism, start_at, duration = job
    passwords = Passwords(time_cost, memory_kib, parallelism)
    stored = passwords.hash("bench-password-1")
    time.sleep(max(0.0, start_at - time.time()))  # every process starts together
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < duration:
        passwords.verify(stored, "bench-password-1")
        done += 1
    return done, time.perf_counter() - start


def hash_ceiling(time_cost: int, memory_kib: int, parallelism: int, cores: int, duration: float) -> dict:
    """Verifications per second with one process per core doing nothing else: the most logins the
    box could complete with these argon2 parameters (what else runs meanwhile costs both alike)."""
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0  # spawned interpreters import argon2 first
    with ctx.Pool(cores) as pool:
        parts = pool.map(_verifications, [(time_cost, memory_kib, parallelism, start_at, duration)] * cores)
    return {"cores": cores, "verifications_per_s": round(sum(n / s for n, s in parts), 1),
            "argon2": {"time_cost": time_cost, "memory_kib": memory_kib, "parallelism": parallelism}}


@contextmanager
def history_service(database_url: str, workers: int, port: int = HISTORY_PORT,
                    driver: str = "pymysql") -> Iterator[str]:
    """`imray.bench.history_service` under uvicorn with `workers` processes on 127.0.0.1, reading
    through `driver` (pymysql or mysqldb); its base URL."""
    env = {**os.environ, "IMRAY_BENCH_HISTORY_DATABASE_URL": database_url, "IMRAY_BENCH_HISTORY_DRIVER": driver}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "imray.bench.history_service:app", "--host",
                             "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-access-log",
                             "--log-level", "warning"], env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        try:
            until_serving(f"{base_url}/api/conversations/d:0:0/messages", proc)
        except RuntimeError as exc:
            raise RuntimeError(f"the bare history service did not start: {exc}") from exc
        yield base_url
    finally:
        stop(proc)
