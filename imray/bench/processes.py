"""The bench's baseline servers as child processes: wait until one answers, stop it."""

from __future__ import annotations

import subprocess
import time
import urllib.request


def until_serving(url: str, proc: subprocess.Popen, within_s: float = 30.0) -> None:
    """Until `url` answers 200; RuntimeError if `proc` exits first or `within_s` passes."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"it exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {within_s} s")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
