"""Logs (issue 20): imray's actors and Serve replicas log JSON records carrying imray's own fields,
and no log file of the cluster holds a password, a token or a message body a user sent."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import ray
from support import Api, Socket, direct


def _logs_dir() -> Path:
    return Path(ray._private.worker._global_node.get_logs_dir_path())  # the session's, every node's


def _files() -> list[Path]:
    return [p for p in _logs_dir().rglob("*") if p.is_file() and p.stat().st_size < 200 * 2**20]


def _imray_records() -> list[dict]:
    """Every JSON record an imray logger wrote, in any log file of the session."""
    found = []
    for path in _files():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"imray' in line:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if str(record.get("name", "")).startswith("imray"):
                    found.append(record)
    return found


async def test_actors_log_json_with_imray_fields_and_never_secrets_or_bodies(stack) -> None:
    api = Api(stack.base_url)
    password = f"pw-{uuid.uuid4().hex}"
    body = f"secret body {uuid.uuid4().hex}"
    await api.register(username := f"logs{uuid.uuid4().hex[:10]}", password)
    alice = await api.login(username, password)
    bob = await api.user()
    a = await Socket.open(alice.socket_url, alice.access_token)
    try:
        assert (await a.send_text(direct(alice.user_id, bob.user_id), body))["type"] == "ack"
        r = await api.http.post("/oauth2/token", data={"grant_type": "password", "username": username,
                                                       "password": password + "x", "client_id": "imray-app"})
        assert r.status_code == 400
        request_id = r.headers.get("x-request-id")
        assert request_id, dict(r.headers)
    finally:
        await a.close()
        await api.close()

    # The supervisor's records of the socket nodes it started, as JSON with the node's id in a field.
    deadline = time.monotonic() + 30
    while True:
        records = _imray_records()
        started = [r for r in records if r.get("name") == "imray.supervisor" and r.get("node")]
        if started:
            break
        assert time.monotonic() < deadline, f"no JSON record of imray.supervisor with a node: {records[:3]}"
        await asyncio.sleep(1)
    assert {"message", "levelname", "asctime", "job_id", "worker_id"} <= set(started[0]), started[0]
    assert started[0]["node"] in {n.node_id for n in stack.nodes} | {f"sn-{i}" for i in range(1, 10)}

    # The refused grant's audit line, from the Serve replica that refused it, under the request id
    # Serve answered with, so an operator goes from a client's report to the record.
    deadline = time.monotonic() + 30
    while True:
        refused = [r for r in _imray_records() if r.get("message") == "grant refused"
                   and r.get("request_id") == request_id]
        if refused:
            break
        assert time.monotonic() < deadline, f"no 'grant refused' record with request id {request_id}"
        await asyncio.sleep(1)
    assert refused[0]["grant"] == "password" and refused[0]["error"] == "invalid_grant", refused[0]
    assert refused[0]["levelname"] == "WARNING" and refused[0]["route"] == "/oauth2/token", refused[0]

    # Nothing anywhere in the session's logs holds what users sent or proved themselves with.
    leaks = {what: [str(p) for p in _files() if needle in p.read_text(errors="replace")]
             for what, needle in (("password", password), ("access token", alice.access_token),
                                  ("refresh token", alice.refresh_token), ("message body", body))}
    assert not any(leaks.values()), leaks
    # And no record failed to be written (websockets' records once did, with a traceback per connection).
    failed = [str(p) for p in _files() if "--- Logging error ---" in p.read_text(errors="replace")]
    assert not failed, failed
