"""On the real stack, while MariaDB does not answer (its server stopped with SIGSTOP): `/readyz` is 503,
and 200 again once it does, acked messages meanwhile none lost; a reconnecting session's catch-up
gives up in bounded time and the session lives on."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from support import Api, Socket, direct, eventually, one_per_node


async def test_readyz_is_503_while_the_database_does_not_answer_and_ready_again_after(stack):
    pid = int((Path(os.environ["IMRAY_TEST_MARIADB_STATE"]) / "mysqld.pid").read_text())
    api = Api(stack.base_url)
    a, b = await api.user(), await api.user()
    sa = await Socket.open(a.socket_url, a.access_token)
    conv = direct(a.user_id, b.user_id)
    before = await sa.send_text(conv, "before")
    os.kill(pid, signal.SIGSTOP)
    try:
        seen: list[dict] = []

        async def unready() -> dict | None:
            r = await api.http.get("/readyz")
            seen.append(r.json())
            return r.json() if r.status_code == 503 and r.json()["database"] == "unavailable" else None

        try:
            body = await eventually(unready, 15, "/readyz 503 saying the database is unavailable")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; answers: {seen[-3:]}") from None
        assert body["status"] == "unavailable", body
    finally:
        os.kill(pid, signal.SIGCONT)

    async def ready_again() -> bool:
        r = await api.http.get("/readyz")
        return r.status_code == 200 and r.json()["database"] == "ok"
    await eventually(ready_again, 30, "/readyz 200 once the database answers again")
    after = await sa.send_text(conv, "after")
    assert after["type"] == "ack" and after["seq"] == before["seq"] + 1, after
    assert [m["body"] for m in await api.history(a.access_token, conv, after_seq=0)] == ["before", "after"]
    await sa.close()
    await api.close()


async def test_a_catch_up_the_stalled_database_cannot_serve_gives_auth_ok_then_history_is_the_way(stack):
    """`seen` in the auth frame while MariaDB does not answer: auth_ok does not wait past the node's
    bound on a catch-up (`socket_catch_up_timeout_s`, 10 s: the SDKs give up on an auth_ok after
    15-20 s); it comes with the `internal` error frame that sends the client to history, and the
    session then lives: what is sent once the database is back arrives live, and history has it all."""
    pid = int((Path(os.environ["IMRAY_TEST_MARIADB_STATE"]) / "mysqld.pid").read_text())
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    sa = await Socket.open(a.socket_url, a.access_token)
    conv = direct(a.user_id, b.user_id)
    for i in range(3):
        assert (await sa.send_text(conv, f"missed {i}"))["type"] == "ack"
    sb = await Socket.open(b.socket_url, b.access_token, authenticate=False)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        await sb.send_json({"type": "auth", "token": b.access_token, "seen": {conv: 0}})
        frames = await sb.wait(lambda fs: len(fs) >= 2, timeout=14)
        waited = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert frames[0]["type"] == "auth_ok" and frames[0]["resume"] is True, frames[:2]
    assert frames[1]["type"] == "error" and frames[1]["code"] == "internal" and "id" not in frames[1], frames[1]
    assert "history" in frames[1]["message"] and 9 <= waited < 14, (frames[1], waited)
    live = await sa.send_text(conv, "live")  # the shard commits again once the database answers
    assert live["type"] == "ack" and live["seq"] == 4, live
    got = await sb.wait(lambda fs: any(f.get("type") == "msg" for f in fs))
    assert [f["seq"] for f in got if f.get("type") == "msg"] == [4]  # live, after the failed catch-up
    assert [m["seq"] for m in await api.history(b.access_token, conv, after_seq=0)] == [1, 2, 3, 4]
    await sa.close()
    await sb.close()
    await api.close()
