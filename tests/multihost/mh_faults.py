"""Faults of the control plane and the middleware, under steady 1:1 and group traffic from the client host.

Run only by scripts/multihost, after mh_hosts.py's first tests and before its lost-host ones (which
leave no spare worker). Each test starts its own traffic (4 pairs across the two socket nodes and a
group with two members on each), lets it run, applies one fault bounded in time, waits until every
client is current again, lets the healed cluster carry traffic, stops, and audits every acked message.
Each prints recovery (p50 and max over the clients the fault disturbed), the messages acked during
the fault, the error frames meanwhile, and the audit line; the module prints the table at the end.

The faults are applied as an operator would: the supervisor's and a shard's process found through
Ray by a driver on the head host and SIGKILLed in their host; MariaDB, Redis and Nacos stopped and
started with the middleware scripts on the middleware host.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace

import httpx
import pytest
from mhosts import (
    NACOS_LIMIT_S,
    MultiHost,
    from_environment,
    nacos_instances,
    on_middleware_host,
    ray_actors,
    sigkill,
    url_host,
    url_port,
)
from support import PASSWORD, PUBLIC_CLIENT, Api, eventually
from traffic import (
    SLOW_ACK_S,
    Traffic,
    acked_between,
    audit,
    errors_between,
    recovery_times,
    settled,
    start_traffic,
    unacked_at_first,
)

from imray.domain.conversations import shard_of

PAUSE_S = 0.1  # per sender: 12 senders, about 80-100 messages/s in all
WARMUP_S = 3.0
HEALED_S = 3.0  # traffic on the healed cluster before the audit
SETTLE_LIMIT_S = 120.0  # every client current again after the fault ended, or the test fails
LOGIN_LIMIT_S = 10.0  # a new login after the supervisor's death (issue 15)
MW_HOST_PORTS = {"mariadb": 3306, "redis": 6379, "nacos": 8848}


@dataclass(frozen=True)
class Row:
    fault: str
    affected: int
    clients: int
    p50: float | None
    worst: float | None
    acked_during: int
    window_s: float
    errors: dict[str, int]
    audit_ok: bool
    audit: str
    took_s: float
    note: str = ""  # the fault's own figure (a login after the supervisor's death, Nacos's view)

    def line(self) -> str:
        recovery = "-" if self.p50 is None else f"{self.p50:.1f} / {self.worst:.1f} s"
        fault = f"{self.fault} ({self.note})" if self.note else self.fault
        return (f"| {fault} | {self.affected}/{self.clients} | {recovery} | {self.acked_during} in "
                f"{self.window_s:.1f} s | {self.errors or 0} | {'PASS' if self.audit_ok else 'FAIL'}: {self.audit} "
                f"| {self.took_s:.0f} s |")


ROWS: list[Row] = []


@pytest.fixture(scope="module")
def mh() -> Iterator[MultiHost]:
    yield from_environment()
    if ROWS:
        print("\n  fault table (recovery p50 / max over the clients the fault disturbed; acked during the fault: "
              "from the fault until the last of them was current again):")
        print("  | fault | disturbed | recovery p50 / max | acked during the fault | error frames / lost replies "
              "| audit | test took |")
        for row in ROWS:
            print(f"  {row.line()}")


Fault = Callable[[Traffic], Awaitable[str]]


async def under_traffic(mh: MultiHost, name: str, fault: Fault, prepare: Callable[[Traffic], Awaitable[None]]
                        | None = None) -> Traffic:
    """Steady traffic, `fault` (which returns once the fault is over: the process killed, the server
    back), then every client current again, healed traffic, the audit; prints the figures."""
    began = time.monotonic()
    api = Api(mh.gateway)
    traffic = await start_traffic(api)
    try:
        if prepare is not None:
            await prepare(traffic)
        members = traffic.members
        traffic.start(PAUSE_S)
        await asyncio.sleep(WARMUP_S)
        before = sum(len(m.acks) for m in members)
        fault_at = time.monotonic()
        what = await fault(traffic)
        fault_end = time.monotonic()
        print(f"\n  {name}: {what} (after {before} acked messages; the fault took {fault_end - fault_at:.1f} s)")

        async def current() -> bool:
            traffic.check()
            return time.monotonic() >= fault_end + 2 and settled(members, fault_end)
        await eventually(current, SETTLE_LIMIT_S, "every client sending normally again after the fault")
        recovery = recovery_times(members, fault_at)
        worst = max(recovery.values(), default=0.0)
        window_end = max(fault_end, fault_at + worst)
        during = acked_between(members, fault_at, window_end)
        errors = errors_between(members, fault_at, window_end)
        resent_ok, refused = unacked_at_first(members, fault_at, window_end)
        closed = sorted(f"{m.name} ({o.close_code})" for m in members for o in m.outages
                        if o.lost_at >= fault_at and o.close_code is not None)
        reopened = sorted(m.name for m in members for o in m.outages if o.lost_at >= fault_at and o.close_code is None)
        if recovery:
            p50: float | None = statistics.median(recovery.values())
            print(f"  {len(recovery)} of {len(members)} clients disturbed (a send not acked at once within "
                  f"{SLOW_ACK_S} s), current again: p50 {p50:.1f} s, max {worst:.1f} s "
                  f"({', '.join(f'{k} {v:.1f}' for k, v in sorted(recovery.items()))})")
        else:
            p50 = None
            print(f"  no client disturbed: every send acked on its first attempt within {SLOW_ACK_S} s")
        print(f"  {during} messages acked during the fault ({window_end - fault_at:.1f} s); error frames and lost "
              f"replies meanwhile: {dict(errors) or 0}; sends not acked at first: {resent_ok} acked on a resend with "
              f"the same id, {refused} refused with a clear error; sessions closed: {closed or 'none'}; "
              f"reopened by the client after a lost reply: {reopened or 'none'}")
        healed = sum(len(m.acks) for m in members)
        await asyncio.sleep(HEALED_S)
        after_heal = sum(len(m.acks) for m in members)
        await traffic.halt()
        result = await audit(traffic.conversations)
        print(f"  audit ({len(traffic.pairs)} pairs and a group of {len(traffic.group)}): {result.line()}")
        ROWS.append(Row(name, len(recovery), len(members), p50, worst if recovery else None, during,
                        window_end - fault_at, dict(errors), result.ok, result.short(), time.monotonic() - began))
        assert result.ok, result.line()
        assert after_heal > healed, ("no traffic after the fault", healed, after_heal)
        return traffic
    finally:
        await traffic.close()
        await api.close()


async def port_closed(host: str, port: int, limit_s: float = 30) -> None:
    """Wait until nothing accepts connections on host:port any more (a stopped server is gone)."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
        except (OSError, TimeoutError):
            return
        writer.close()
        assert time.monotonic() < deadline, f"{host}:{port} still accepts connections {limit_s} s after the stop"
        await asyncio.sleep(0.2)


async def restart(mh: MultiHost, server: str, stop: list[str], start: list[str]) -> str:
    """Stop a middleware server on its host, check it is gone, start it again; says how long it took."""
    began = time.monotonic()
    await on_middleware_host(mh, *stop)
    await port_closed(url_host(mh.nacos), MW_HOST_PORTS[server])
    stopped = time.monotonic()
    printed = await on_middleware_host(mh, *start)
    last = printed.splitlines()[-1] if printed else ""
    return (f"{server} stopped in {stopped - began:.1f} s, started again in {time.monotonic() - stopped:.1f} s "
            f"({last})")


async def test_a_killed_supervisor_keeps_sessions_open_and_logins_work_again_within_10_s(mh: MultiHost) -> None:
    [supervisor] = await ray_actors(mh, "SocketSupervisor")
    host = mh.netns_of(supervisor.ip)
    api = Api(mh.gateway)
    username = (await api.register())["username"]
    await api.close()
    login: dict[str, float] = {}

    async def kill(traffic: Traffic) -> str:
        killed_at = time.monotonic()
        sigkill(host, supervisor.pid)
        answers: Counter[str] = Counter()
        async with httpx.AsyncClient(base_url=mh.gateway, timeout=15) as http:
            while time.monotonic() - killed_at < 60:
                try:
                    r = await http.post("/oauth2/token", data={"grant_type": "password", "username": username,
                                                               "password": PASSWORD, "client_id": PUBLIC_CLIENT})
                    answers[str(r.status_code)] += 1
                    if r.status_code == 200:
                        login["s"] = time.monotonic() - killed_at
                        break
                except httpx.HTTPError as exc:
                    answers[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
        took = f"{login['s']:.1f} s" if "s" in login else "not within 60 s"
        return (f"SIGKILL of the supervisor (pid {supervisor.pid} on {host}); a new login answered 200 after "
                f"{took} (answers: {dict(answers)})")

    traffic = await under_traffic(mh, "supervisor killed", kill)
    ROWS[-1] = replace(ROWS[-1], note=f"new login after {login['s']:.1f} s" if "s" in login else "no login")
    assert "s" in login and login["s"] <= LOGIN_LIMIT_S, f"a new login took {login.get('s')} s (limit {LOGIN_LIMIT_S})"
    closed = sorted(f"{m.name} ({o.close_code})" for m in traffic.members for o in m.outages
                    if o.close_code is not None)
    assert not closed, f"established sessions closed when the supervisor died: {closed}"


async def test_a_shard_killed_mid_batch_loses_no_acked_message(mh: MultiHost) -> None:
    shards = {a.name: a for a in await ray_actors(mh, "ConversationShard")}
    count = len(shards)
    assert count and set(shards) == {f"imray-shard-{i}" for i in range(count)}, sorted(shards)

    async def kill(traffic: Traffic) -> str:
        # The group's shard: its fan-out reaches both socket nodes (and it may own some pairs too).
        index = shard_of(traffic.group[0].conv, count)
        victim = shards[f"imray-shard-{index}"]
        convs = sorted({m.conv for m in traffic.members if shard_of(m.conv, count) == index})
        mine = [m for m in traffic.members if m.conv in convs]

        def in_flight() -> int:  # sends of its conversations that were sent and not yet answered
            return sum(1 for m in mine if len(m.sent) > len(m.acks) + len(m.given_up))
        flying = 0
        for _ in range(2500):  # up to about 5 s: a send of one of them is in flight most of the time
            flying = in_flight()
            if flying:
                break
            await asyncio.sleep(0.002)
        host = mh.netns_of(victim.ip)
        sigkill(host, victim.pid)
        assert flying, "no send of the shard's conversations was in flight within 5 s"
        return (f"SIGKILL of {victim.name} (pid {victim.pid} on {host}, owner of {convs}, {count} shards) "
                f"with {flying} of its sends in flight")

    await under_traffic(mh, "shard killed mid-batch", kill)


async def test_mariadb_restarted_under_traffic_loses_no_acked_message(mh: MultiHost) -> None:
    async def bounce(traffic: Traffic) -> str:
        return await restart(mh, "mariadb", ["middleware/mariadb.sh", "stop", "{state}/mariadb"],
                             ["middleware/mariadb.sh", "start", "{state}/mariadb"])

    await under_traffic(mh, "MariaDB restarted", bounce)


async def redis_answer(mh: MultiHost) -> str:
    """What Redis on the middleware host answers a PING from another host (as imray's processes ask)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(url_host(mh.nacos), MW_HOST_PORTS["redis"]), 5)
    try:
        writer.write(b"PING\r\n")
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()[:60]
    finally:
        writer.close()


async def test_redis_restarted_under_traffic_loses_no_acked_message(mh: MultiHost) -> None:
    async def bounce(traffic: Traffic) -> str:
        before = await redis_answer(mh)
        # redis.sh stop asks Redis to SHUTDOWN over TCP; a Redis that refuses other hosts (protected
        # mode: "-DENIED") ignores it, so the server is then stopped as an operator would, by its pid.
        began = time.monotonic()
        await on_middleware_host(mh, "middleware/redis.sh", "stop", "{state}/redis")
        how = "redis.sh stop"
        try:
            await port_closed(url_host(mh.nacos), MW_HOST_PORTS["redis"], limit_s=3)
        except AssertionError:
            await on_middleware_host(mh, "sh", "-c", "kill -TERM $(cat {state}/redis/redis.pid)")
            await port_closed(url_host(mh.nacos), MW_HOST_PORTS["redis"])
            how = "redis.sh stop (ignored), then SIGTERM to its pid"
        stopped = time.monotonic()
        printed = (await on_middleware_host(mh, "middleware/redis.sh", "start", "{state}/redis")).splitlines()
        return (f"redis stopped by {how} in {stopped - began:.1f} s, started again in "
                f"{time.monotonic() - stopped:.1f} s ({printed[-1] if printed else ''}); a PING from another "
                f"host answered {before!r} before and {await redis_answer(mh)!r} after")

    await under_traffic(mh, "Redis restarted", bounce)


async def test_nacos_restarted_shows_exactly_the_live_socket_nodes_within_15_s(mh: MultiHost) -> None:
    live: set[tuple[str, str, int]] = set()
    shown: dict[str, float] = {}  # "s": seconds from Nacos back to it showing exactly the live nodes
    last_view: list[tuple[str, str, int]] = []

    async def expected(traffic: Traffic) -> None:
        # The two socket nodes the clients are pinned to (IMRAY_SOCKET_NODES=2): the live ones.
        live.update((m.login.socket_node, url_host(m.login.socket_url), url_port(m.login.socket_url))
                    for m in traffic.members)
        assert len(live) == 2, live
        assert await nacos_view(mh) == live, "Nacos before the restart"

    async def bounce(traffic: Traffic) -> str:
        what = await restart(mh, "nacos", ["middleware/nacos/stop.sh", "{state}/nacos"],
                             ["middleware/nacos/start.sh", "{state}/nacos"])
        back = time.monotonic()
        deadline = back + 60
        view: set[tuple[str, str, int]] = set()
        while time.monotonic() < deadline:
            try:
                view = await nacos_view(mh)
            except httpx.HTTPError:
                view = set()
            if view == live:
                shown["s"] = time.monotonic() - back
                break
            await asyncio.sleep(0.3)
        last_view[:] = sorted(view)
        took = f"{shown['s']:.1f} s" if "s" in shown else f"not within 60 s (last seen {sorted(view)})"
        return f"{what}; Nacos showed exactly the live socket nodes {sorted(live)} {took} after it was back"

    await under_traffic(mh, "Nacos restarted", bounce, prepare=expected)
    verdict = "within" if shown.get("s", 99) <= NACOS_LIMIT_S else "OVER"
    ROWS[-1] = replace(ROWS[-1], note=f"live nodes listed {shown['s']:.1f} s after Nacos was back: {verdict} "
                       f"{NACOS_LIMIT_S:.0f} s" if "s" in shown else "live nodes never listed")
    print(f"  Nacos showed exactly the live socket nodes {shown['s']:.1f} s after it was back: {verdict} the "
          f"{NACOS_LIMIT_S:.0f} s of issue 15")
    assert "s" in shown, f"Nacos never showed exactly {sorted(live)} within 60 s: {last_view}"
    assert shown["s"] <= NACOS_LIMIT_S, f"Nacos showed the live socket nodes only {shown['s']:.1f} s after it was back"


async def nacos_view(mh: MultiHost) -> set[tuple[str, str, int]]:
    return {(h["metadata"]["node_id"], h["ip"], h["port"]) for h in await nacos_instances(mh, "imray-socket")}
