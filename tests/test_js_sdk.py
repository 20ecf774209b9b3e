"""The TypeScript SDK (clients/js) against the live stack: runs its Node tests (`node --test`, unit and
integration) with IMRAY_BASE_URL set, and answers the node-fault tests' requests over a line protocol:
`IMRAY-KILL <node id>` (SIGKILLed and replaced; answered `IMRAY-KILLED`) and `IMRAY-RESTART <node id>`
(drained, its sessions told to move, then replaced; answered `IMRAY-RESTARTED`)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from faults import kill_socket_node

from imray.adapters.named_actors import RayNamedActors

JS = Path(__file__).resolve().parent.parent / "clients" / "js"
FAULTS_FILE = "test/node-faults.test.mjs"
# What Node must report, so that "no test ran" (a skip, a file not found) can never pass. Update
# these with the test files: streams.test.mjs 10 + client.test.mjs 32 + live.test.mjs 12; node-faults.test.mjs 2.
ORDINARY_TESTS = 54
FAULT_TESTS = 2


def node_command(*args: str) -> list[str]:
    """`node --experimental-websocket ARGS` (Node 20 has no global WebSocket without the flag)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (Node.js 20+) is needed to test the TypeScript SDK")
    dist = JS / "dist" / "index.js"
    if not dist.exists():
        pytest.fail("clients/js/dist is not built: run clients/js/build.sh (make install does)")
    stale = [p for p in (JS / "src").glob("*.ts") if p.stat().st_mtime > dist.stat().st_mtime]
    if stale:
        pytest.fail(f"clients/js/dist is older than {stale[0].name}: run clients/js/build.sh")
    return [node, "--experimental-websocket", "--test-reporter=tap", *args]


async def restart_socket_node(stack, node_id: str) -> float:
    """Drain `node_id` (its sessions get `move` frames), stop it and wait for its replacement, as one
    step of `imray restart --rolling`. Returns the seconds it took."""
    started = time.monotonic()
    supervisor = RayNamedActors(stack.settings.namespace, stack.settings.shard_count).supervisor()
    report = await supervisor.restart_node.remote(node_id, 30.0)
    assert report.restarted and report.closed == 0, report
    return time.monotonic() - started


async def run_node(stack, command: list[str], expected_tests: int, kill_protocol: bool = False,
                   timeout_s: float = 120) -> str:
    """Runs Node's tests against the stack, answering fault requests; fails unless exactly
    `expected_tests` ran and passed. Returns Node's output."""
    env = {**os.environ, "IMRAY_BASE_URL": stack.base_url, "IMRAY_KILL_PROTOCOL": "1" if kill_protocol else "0"}
    faults = {"IMRAY-KILL": kill_socket_node, "IMRAY-RESTART": restart_socket_node}
    proc = await asyncio.create_subprocess_exec(*command, cwd=JS, env=env, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdin is not None and proc.stdout is not None
    output: list[str] = []

    async def converse() -> int:
        assert proc.stdin is not None and proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode(errors="replace")
            output.append(text)
            request = text.split()
            if kill_protocol and len(request) == 2 and request[0] in faults:
                took = await faults[request[0]](stack, request[1])
                output.append(f"(runner: {request[0]} {request[1]} done in {took:.1f} s)\n")
                proc.stdin.write(f"{request[0]}ED\n".encode())
                await proc.stdin.drain()
        return await proc.wait()

    try:
        code = await asyncio.wait_for(converse(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"Node's tests were still running after {timeout_s} s:\n{''.join(output)}")
    text = "".join(output)
    assert code == 0, f"Node's tests failed (exit {code}):\n{text}"
    counts = {name: int(n) for name, n in re.findall(r"^# (tests|pass|fail|skipped|cancelled|todo) (\d+)$", text, re.M)}
    want = {"tests": expected_tests, "pass": expected_tests, "fail": 0, "skipped": 0, "cancelled": 0, "todo": 0}
    assert counts == want, f"Node reported {counts}, expected {want}:\n{text}"
    return text


async def test_the_typescript_sdk_passes_its_unit_and_live_tests(stack) -> None:
    files = sorted(str(p.relative_to(JS)) for p in (JS / "test").glob("*.test.mjs") if p.name != Path(FAULTS_FILE).name)
    await run_node(stack, node_command("--test", *files), ORDINARY_TESTS)


@pytest.mark.runs_last  # it kills, then drains and replaces, socket nodes of the shared stack
async def test_the_typescript_sdk_loses_and_repeats_nothing_when_a_socket_node_is_killed_or_drained(stack) -> None:
    # Run as a plain script (not `node --test`, whose child processes have no stdin) to talk to it.
    output = await run_node(stack, node_command(FAULTS_FILE), FAULT_TESTS, kill_protocol=True)
    assert "IMRAY-KILL " in output and "IMRAY-RESTART " in output, "a fault was never asked for"
