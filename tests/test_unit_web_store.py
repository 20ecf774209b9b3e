"""The web app's model (clients/web/src/store.ts) under Node's test runner, on the built app: messages
kept by seq, live changes applied once, unread counts, "seen" marks and the list's order."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "clients" / "web"
BUILT = ROOT / "imray" / "webapp" / "store.js"
TESTS = 10  # clients/web/test/*.test.mjs (store, mentions): a skip or a missing file can never pass


def test_the_web_apps_model_passes_its_node_tests():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (Node.js 20+) is needed to test the web app")
    if not BUILT.exists() or BUILT.stat().st_mtime < (WEB / "src" / "store.ts").stat().st_mtime:
        pytest.fail("the web app is not built or is stale: run clients/build.sh (make install does)")
    run = subprocess.run([node, "--test", "--test-reporter=tap", "test/"], cwd=WEB, capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    passed = re.search(r"^# pass (\d+)$", run.stdout, re.MULTILINE)
    assert passed is not None and int(passed.group(1)) == TESTS, run.stdout
