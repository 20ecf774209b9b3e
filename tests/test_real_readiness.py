"""On the real stack: `/readyz` is 503 while MariaDB does not answer (its server stopped with SIGSTOP),
and 200 again once it does; acked messages meanwhile are none lost."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from support import Api, Socket, direct, eventually


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
