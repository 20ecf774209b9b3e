"""The collector settings of long-lived processes (run in fresh interpreters: they are process-wide)."""

from __future__ import annotations

import subprocess
import sys

GROW = """
import gc, sys
from imray.heap import collect_fully_less_often, freeze_startup_heap
freeze_startup_heap()
if sys.argv[1] == "relaxed":
    collect_fully_less_often()
before = gc.get_stats()[2]["collections"]
kept = [[i] for i in range(700_000)]  # a heap growing with its clients, as 10,000 sessions grow a node's
print(gc.get_stats()[2]["collections"] - before)
"""


def _full_passes(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", GROW, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_a_growing_heap_is_walked_whole_far_less_often() -> None:
    default, relaxed = _full_passes("default"), _full_passes("relaxed")
    assert default >= 5  # CPython's default: a full pass every ~70,000 net allocations
    assert relaxed <= 1 and relaxed < default
