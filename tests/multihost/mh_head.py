"""The head host lost and started again, under traffic (issue 15, point 7): Ray's GCS fault tolerance.

Run only by scripts/multihost, last (it takes the head down). The harness starts the head with
RAY_REDIS_ADDRESS naming a Redis of its own on the middleware host, where the GCS keeps the
cluster's tables; the workers wait up to 5 minutes for a lost GCS (deploy/ray-node.sh). The test
SIGKILLs every process of the head host (its init, standing for the machine, stays), waits, starts
Ray there again with the harness's own command, and checks what a user sees: the sessions on the
worker hosts stay open, messages whose conversation's shard lives on a worker are acked while the
head is down, logins work again once it is back, and the audit of every acked message is clean.

What is lost with the head, by design: HTTP (Serve's only proxy runs there: logins, history, uploads)
until the head is back, and the conversations whose shard ran there until Ray restarts that shard.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from dataclasses import replace

import httpx
import pytest
from mh_faults import ROWS, under_traffic
from mhosts import MultiHost, from_environment, kill_host, ray_actors
from support import PASSWORD, PUBLIC_CLIENT, Api
from traffic import Traffic, acked_between

from imray.domain.conversations import shard_of

HEAD_DOWN_S = 10.0  # how long the head machine stays lost before the operator starts it again
BACK_LIMIT_S = 240.0  # a login works again within this of the restart, or the test fails


@pytest.fixture(scope="module")
def mh() -> MultiHost:
    found = from_environment()
    assert found.head_start and found.head_init, "scripts/multihost passes IMRAY_MH_HEAD_START and _INIT"
    return found


async def login_works(gateway: str, username: str, since: float, limit_s: float) -> tuple[float | None, Counter[str]]:
    """Seconds from `since` until a password login answers 200 (None: not within limit_s), and what it
    answered meanwhile."""
    answers: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as http:
        while time.monotonic() - since < limit_s:
            try:
                r = await http.post("/oauth2/token", data={"grant_type": "password", "username": username,
                                                           "password": PASSWORD, "client_id": PUBLIC_CLIENT})
                answers[str(r.status_code)] += 1
                if r.status_code == 200:
                    return time.monotonic() - since, answers
            except httpx.HTTPError as exc:
                answers[type(exc).__name__] += 1
            await asyncio.sleep(0.5)
    return None, answers


@pytest.mark.runs_last
async def test_a_head_started_again_keeps_worker_sessions_open_and_messages_flowing(mh: MultiHost) -> None:
    actors = await ray_actors(mh, "ConversationShard", "SocketSupervisor", "Presence")
    on_head = sorted(a.name for a in actors if a.ip == mh.head)
    shards = sorted(a.name for a in actors if a.cls == "ConversationShard")
    api = Api(mh.gateway)
    username = (await api.register())["username"]
    await api.close()
    figures: dict[str, float] = {}
    head_convs: list[str] = []

    async def lose_and_restart(traffic: Traffic) -> str:
        head_convs.extend(sorted({m.conv for m in traffic.members
                                  if f"imray-shard-{shard_of(m.conv, len(shards))}" in on_head}))
        killed_at = time.monotonic()
        killed = kill_host(mh.netns_of(mh.head), spare=mh.head_init)
        await asyncio.sleep(HEAD_DOWN_S)
        figures["acked_while_down"] = acked_between(traffic.members, killed_at, time.monotonic())
        started_at = time.monotonic()
        proc = await asyncio.create_subprocess_exec(*mh.head_start, stdin=subprocess.DEVNULL,
                                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 180)
        assert proc.returncode == 0, f"ray start on the head failed ({proc.returncode}): {out.decode()[-3000:]}"
        figures["ray_start_s"] = time.monotonic() - started_at
        took, answers = await login_works(mh.gateway, username, started_at, BACK_LIMIT_S)
        if took is not None:
            figures["login_s"] = took
        return (f"SIGKILL of the head's {killed} processes, down {HEAD_DOWN_S:.0f} s "
                f"({figures['acked_while_down']:.0f} messages acked meanwhile), `ray start --head` again took "
                f"{figures['ray_start_s']:.1f} s, a login answered 200 "
                f"{f'{took:.1f} s' if took is not None else f'not within {BACK_LIMIT_S:.0f} s'} after the restart "
                f"(answers: {dict(answers)}); on the head before: {on_head or 'none of the shards'}, so "
                f"{head_convs or 'no conversation'} waited for the head")

    traffic = await under_traffic(mh, "head lost and started again", lose_and_restart)
    ROWS[-1] = replace(ROWS[-1], note=f"login again {figures['login_s']:.1f} s after the restart"
                       if "login_s" in figures else "no login")
    print(f"  {ROWS[-1].line()}")
    closed = sorted(f"{m.name} ({o.close_code})" for m in traffic.members for o in m.outages
                    if o.close_code is not None)
    assert not closed, f"sessions on the worker hosts closed when the head was lost: {closed}"
    assert "login_s" in figures, f"no login within {BACK_LIMIT_S:.0f} s of the head's restart"
    if len(head_convs) < len({m.conv for m in traffic.members}):
        assert figures["acked_while_down"] > 0, "conversations whose shard runs on a worker stalled with the head"
