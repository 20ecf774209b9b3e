"""The benchmark run: bring up (or target) imray, drive it, drive the bare relay, audit, report."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from imray.bench import baselines, profile, report, targets
from imray.bench.loadgen import Endpoint, Pair, fanout_worker, http_worker, one2one_worker, send_all
from imray.bench.sessions import SessionSpec, session_worker
from imray.bench.shards import LocalImray
from imray.bench.shards import scaling as shard_scaling
from imray.client import HttpApi
from imray.domain.nodes import NodeStats

PASSWORD = "bench-password-1"
RELAY_PORT = 9300
CENTRIFUGO_PORT = 9310


@dataclass
class BenchOptions:
    scenarios: tuple[str, ...] = ("one2one", "fanout", "connections", "storm", "http", "rolling")
    duration: float = 10.0
    pairs: int = 16
    window: int = 32
    processes: int = 2
    http_concurrency: int = 32
    fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    group_size: int = 500  # members of the fan-out group, spread over the socket nodes
    sessions: int = 20000  # concurrent authenticated sessions (connections and storm)
    session_users: int = 1000  # the sessions are spread over this many users (several devices each)
    storm_window: float = 10.0  # every session comes back within this many seconds
    storm_messages: int = 5  # sent to each group while its sessions are away
    storm_group: int = 50  # users per group in the storm
    storm_over_socket: bool = True  # catch up with a resume frame (issue 21); False: HTTP history per session
    sources: int = 8  # 127.0.0.2... source addresses for the sessions
    target: str | None = None  # an imray gateway URL; None: start a local cluster and deploy
    results: Path | None = Path("benchmarks/results")
    progress: bool = True
    centrifugo: bool = True  # Centrifugo as a second baseline (issue 21), when it is built
    profile: bool = False  # py-spy the socket nodes and shards in an extra 1:1 closed loop (bench.profile)
    shard_counts: tuple[int, ...] = (1, 2, 4)  # the "shards" scenario: imray redeployed with each (bench.shards)
    extra: dict = field(default_factory=dict)


def _say(options: BenchOptions, text: str) -> None:
    if options.progress:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def _provision(base_url: str, count: int) -> list[dict]:
    """Register and log in `count` users through the SDK's HTTP side, as real clients do."""
    async with HttpApi(base_url, timeout=60) as api:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> dict:
            async with sem:
                name = f"b{uuid.uuid4().hex[:12]}"
                await api.register(name, PASSWORD)
                tokens = await api.login(name, PASSWORD)
                return {**tokens.raw, "username": name}

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def _pairs_across_nodes(logins: list[dict], wanted: int) -> list[Pair]:
    by_node: dict[str, list[dict]] = {}
    for login in logins:
        by_node.setdefault(login["socket_node"], []).append(login)
    nodes = sorted(by_node)
    if len(nodes) < 2:
        raise RuntimeError("the benchmark needs at least two socket nodes")
    pairs = []
    a, b = by_node[nodes[0]], by_node[nodes[1]]
    for i in range(min(wanted, len(a), len(b))):
        s, r = (a[i], b[i]) if i % 2 == 0 else (b[i], a[i])  # both directions
        lo, hi = sorted((s["user_id"], r["user_id"]))
        pairs.append(Pair(Endpoint(s["user_id"], s["socket_url"], s["access_token"]),
                          Endpoint(r["user_id"], r["socket_url"], r["access_token"]), f"d:{lo}:{hi}"))
    return pairs


def _relay_pairs(count: int, url: str) -> list[Pair]:
    pairs = []
    for i in range(count):
        s, r = 2 * i + 1, 2 * i + 2
        pairs.append(Pair(Endpoint(s, url, str(s)), Endpoint(r, url, str(r)), f"d:{s}:{r}"))
    return pairs


def _drive(pool, pairs: list[Pair], rate: float | None, options: BenchOptions, tag: str) -> dict:
    chunks = [pairs[i::options.processes] for i in range(options.processes) if pairs[i::options.processes]]
    jobs = [(chunk, (rate * len(chunk) / len(pairs)) if rate else None, options.duration, options.window,
             f"{tag}{k}.") for k, chunk in enumerate(chunks)]
    parts = pool.map(one2one_worker, jobs)
    merged = {key: sum(p[key] for p in parts) for key in
              ("sent", "acked", "errors", "received", "duplicates", "order_violations", "not_delivered")}
    merged["elapsed_s"] = max(p["elapsed_s"] for p in parts)
    merged["loader_cpu_s"] = sum(p["loader_cpu_s"] for p in parts)
    merged["ack_ms"] = [x for p in parts for x in p["ack_ms"]]
    merged["delivery_ms"] = [x for p in parts for x in p["delivery_ms"]]
    merged["acked_ids"] = {conv: ids for p in parts for conv, ids in p["acked_ids"].items()}
    return merged


def _summary(run: dict, fraction: float | None) -> dict:
    return {"fraction": fraction, "achieved_rate": round(run["acked"] / run["elapsed_s"], 1),
            "sent": run["sent"], "acked": run["acked"], "errors": run["errors"],
            "duplicates": run["duplicates"], "order_violations": run["order_violations"],
            "not_delivered": run["not_delivered"], "ack_ms": report.percentiles(run["ack_ms"]),
            "loader_cpu_us_per_msg": round(run["loader_cpu_s"] * 1e6 / run["acked"], 1) if run["acked"] else None,
            "delivery_ms": report.percentiles(run["delivery_ms"])}


def _one2one(pool, pairs: list[Pair], options: BenchOptions, name: str, rates: list[float] | None,
             acked: dict[str, list]) -> dict:
    """Closed loop for the highest sustained rate, then open loop at fractions of it (or given rates).
    The closed loop's CPU is read per process (the cluster's when this bench started it)."""
    _say(options, f"{name}: closed loop, {options.window} in flight per sender, {options.duration} s")
    before = profile.CpuSnapshot.take()
    top = _drive(pool, pairs, None, options, f"{name}-max-")
    cpu = profile.cpu_per_message(before, profile.CpuSnapshot.take(), top["acked"])
    _merge(acked, top["acked_ids"])
    result = {"max_rate": round(top["acked"] / top["elapsed_s"], 1), "max_run": _summary(top, None), "steps": [],
              "cpu": cpu}
    if options.profile and name == "imray":
        result["profile"] = _profiled(pool, pairs, options, acked)
    offered = rates or [f * result["max_rate"] for f in options.fractions]
    for fraction, rate in zip(options.fractions, offered, strict=True):
        _say(options, f"{name}: open loop at {rate:,.0f} msgs/s ({fraction:.0%})")
        run = _drive(pool, pairs, max(rate, 1.0), options, f"{name}-{int(fraction * 100)}-")
        _merge(acked, run["acked_ids"])
        step = _summary(run, fraction)
        step["offered_rate"] = round(rate, 1)
        result["steps"].append(step)
    return result


def _profiled(pool, pairs: list[Pair], options: BenchOptions, acked: dict[str, list]) -> dict:
    """The closed loop once more with py-spy sampling the socket nodes and shards (it costs them a
    little: the measured run above is the one without it)."""
    pids = profile.pids_of(profile.PROFILED)
    if not pids:
        return {"skipped": "no socket node or shard of this bench's own cluster (--target?)"}
    _say(options, f"imray: closed loop again, py-spy sampling {len(pids)} processes ({', '.join(profile.PROFILED)})")
    with profile.sampled(pids, options.duration) as samples:
        run = _drive(pool, pairs, None, options, "imray-profiled-")
    _merge(acked, run["acked_ids"])
    return {"max_rate_while_sampled": round(run["acked"] / run["elapsed_s"], 1), **samples}


def _merge(into: dict[str, list], acked: dict[str, list]) -> None:
    for conv, ids in acked.items():
        into.setdefault(conv, []).extend(ids)


async def _audit(base_url: str, pairs: list[Pair], acked: dict[str, list], live: list[dict]) -> dict:
    """From history: every acked message is there once, seq 1..N without gaps; plus what clients saw."""
    lost = duplicates = gaps = total = 0
    async with HttpApi(base_url, timeout=60) as api:
        for pair in pairs:
            history = await api.all_history(pair.receiver.token, pair.conv)
            ids = [m["msg_id"] for m in history]
            duplicates += len(ids) - len(set(ids))
            gaps += sum(1 for i, m in enumerate(history) if m["seq"] != i + 1)
            stored = set(ids)
            mine = acked.get(pair.conv, [])
            total += len(mine)
            lost += sum(1 for _, msg_id in mine if msg_id not in stored)
    live_dups = sum(r["duplicates"] for r in live)
    order = sum(r["order_violations"] for r in live)
    return {"acked": total, "lost": lost, "duplicates": duplicates + live_dups, "order_violations": order,
            "history_gaps": gaps, "ok": lost == 0 and duplicates + live_dups == 0 and order == 0 and gaps == 0}


def _http(pool, base_url: str, logins: list[dict], readers: list[tuple[str, str]], options: BenchOptions) -> dict:
    """Logins and history reads through the gateway, each beside its baseline of issue 21 measured in
    the same run: this machine's argon2 ceiling, and a bare FastAPI + PyMySQL service on the same
    database. Both take the IMRAY_* settings of this process (what a local run deployed; with
    --target, what the operator set here, which is right when the target runs on this machine)."""
    from imray.settings import load_settings

    settings = load_settings()
    creds = [(x["username"], PASSWORD) for x in logins]
    per = max(1, options.http_concurrency // options.processes)
    cores = len(os.sched_getaffinity(0))
    result: dict = {}
    _say(options, f"http: argon2 verifications on {cores} cores, nothing else asked of imray")
    result["hash_ceiling"] = baselines.hash_ceiling(settings.argon2_time_cost, settings.argon2_memory_kib,
                                                    settings.argon2_parallelism, cores, options.duration)
    _say(options, f"http: password-grant logins, {options.http_concurrency} concurrent")
    before = profile.CpuSnapshot.take()
    logins_runs = pool.map(http_worker, [(base_url, creds, None, options.duration, per)] * options.processes)
    result["login_cpu"] = profile.cpu_per_message(before, profile.CpuSnapshot.take(),
                                                  sum(r["logins"] for r in logins_runs))
    _say(options, f"http: history reads, {options.http_concurrency} concurrent")

    def reads(url: str) -> list[dict]:
        return pool.map(http_worker, [(url, creds, readers[k::options.processes] or readers, options.duration, per)
                                      for k in range(options.processes)])

    def bare_summary(runs: list[dict]) -> dict:
        return {"workers": cores, "history_per_s": round(sum(r["history"] for r in runs) / options.duration, 1),
                "errors": sum(r["errors"] for r in runs)}

    before = profile.CpuSnapshot.take()
    history = reads(base_url)
    result["history_cpu"] = profile.cpu_per_message(before, profile.CpuSnapshot.take(),
                                                    sum(r["history"] for r in history))
    if not settings.database_url.startswith("mysql"):
        result["history_baseline"] = {"skipped": "on MariaDB/MySQL only (the target's stack)"}
    else:
        _say(options, f"http: the same reads from a bare FastAPI + PyMySQL service ({cores} uvicorn workers)")
        with baselines.history_service(settings.database_url, cores) as url:
            before = profile.CpuSnapshot.take()
            bare = reads(url)
            result["history_baseline_cpu"] = profile.cpu_per_message(before, profile.CpuSnapshot.take(),
                                                                     sum(r["history"] for r in bare))
        result["history_baseline"] = bare_summary(bare)
        if settings.database_url.startswith("mysql+mysqldb"):
            # The target's baseline reads through PyMySQL; imray here through mysqlclient. The same
            # service on imray's driver is reported beside it, so the driver's share is plain to see.
            _say(options, "http: the same reads from bare FastAPI + mysqlclient (imray's driver)")
            with baselines.history_service(settings.database_url, cores, driver="mysqldb") as url:
                same = reads(url)
            result["history_baseline_same_driver"] = bare_summary(same)
    return {"logins_per_s": round(sum(r["logins"] for r in logins_runs) / options.duration, 1),
            "login_errors": sum(r["errors"] for r in logins_runs),
            "history_per_s": round(sum(r["history"] for r in history) / options.duration, 1),
            "history_errors": sum(r["errors"] for r in history),
            "error_statuses": dict(sum((Counter({str(c): n for c, n in r["error_statuses"].items()})
                                        for r in [*logins_runs, *history]), Counter())),
            **result}


def _seed(pairs: list[Pair], acked: dict[str, list], count: int) -> None:
    """`count` acked messages in each pair's conversation (audited with the rest)."""
    async def send() -> list[list[tuple[int, str]]]:
        return await asyncio.gather(*(send_all(p.sender, p.conv, count, f"seed{k}.") for k, p in enumerate(pairs)))

    for pair, got in zip(pairs, asyncio.run(send()), strict=True):
        acked.setdefault(pair.conv, []).extend(got)


def _fanout_run(pool, members: list[Endpoint], sender: Endpoint, conv: str, options: BenchOptions) -> dict:
    chunks = [members[i::options.processes] for i in range(options.processes)]
    start_at = time.time() + 3 + len(members) / 100  # everyone connected first
    jobs = [(chunk, sender if k == 0 else None, conv, start_at, options.duration, options.window, "f.")
            for k, chunk in enumerate(chunks)]
    parts = pool.map(fanout_worker, jobs)
    acked = [a for p in parts for a in p["acked"]]
    received = sum(p["received"] for p in parts)
    per_member = [n for p in parts for n in p["per_member"]]
    return {"members": len(members), "conv": conv, "sent": sum(p["sent"] for p in parts), "acked": len(acked),
            "acked_ids": acked, "deliveries": received, "deliveries_per_s": round(received / options.duration, 1),
            "members_with_all": sum(1 for n in per_member if n == len(acked)),
            "duplicates": sum(p["duplicates"] for p in parts),
            "order_violations": sum(p["order_violations"] for p in parts),
            "delivery_ms": report.percentiles([x for p in parts for x in p["delivery_ms"]])}


def _fanout(pool, base_url: str, relay_url: str, options: BenchOptions) -> dict:
    """A group of `group_size` online members over the socket nodes; one sender, closed loop.
    Then the same clients against the bare relay."""
    _say(options, f"fanout: provisioning a group of {options.group_size} online members")
    logins = asyncio.run(_provision(base_url, options.group_size))
    [(owner, conv)] = _groups_for(base_url, logins, len(logins))
    members = [Endpoint(x["user_id"], x["socket_url"], x["access_token"]) for x in logins[1:]]
    sender = Endpoint(owner["user_id"], owner["socket_url"], owner["access_token"])
    _say(options, f"fanout: 1 sender, {options.window} in flight, {len(members)} receivers, {options.duration} s")
    result = _fanout_run(pool, members, sender, conv, options)
    result["owner_token"] = owner["access_token"]
    _say(options, "fanout: the same against the bare relay")
    relay = _fanout_run(pool, [Endpoint(i, relay_url, str(i)) for i in range(2, len(members) + 2)],
                        Endpoint(1, relay_url, "1"), "g:1", options)
    result["relay"] = {k: v for k, v in relay.items() if k != "acked_ids"}
    result["deliveries_ratio"] = (round(result["deliveries_per_s"] / relay["deliveries_per_s"], 3)
                                  if relay["deliveries_per_s"] else None)
    return result


def _node_stats() -> list[NodeStats] | None:
    """The socket nodes' own figures, when this process is connected to imray's Ray cluster."""
    import ray

    if not ray.is_initialized():
        return None
    from imray.adapters.named_actors import RayNamedActors
    from imray.settings import load_settings

    settings = load_settings()
    supervisor = RayNamedActors(settings.namespace, settings.shard_count).supervisor()
    stats: list[NodeStats] = ray.get(supervisor.node_stats.remote(), timeout=60)
    return stats


def _rss(stats: list[NodeStats] | None) -> int | None:
    return sum(n.rss_bytes for n in stats) if stats else None


def _groups_for(base_url: str, logins: list[dict], size: int) -> list[tuple[dict, str]]:
    """Split `logins` into groups of `size`: [(owner login, conv)] and each login's conv."""
    async def create() -> list[tuple[dict, str]]:
        groups = []
        async with HttpApi(base_url, timeout=60) as api:
            for i in range(0, len(logins), size):
                owner, rest = logins[i], logins[i + 1:i + size]
                group = await api.create_group(owner["access_token"], f"bench{i}", [x["user_id"] for x in rest])
                groups.append((owner, group["conv"]))
                for member in (owner, *rest):
                    member["conv"] = group["conv"]
        return groups

    return asyncio.run(create())


def _command(pipes: list, *command) -> list[dict]:
    for pipe in pipes:
        pipe.send(command)
    replies = [pipe.recv() for pipe in pipes]
    fatal = [r["fatal"] for r in replies if "fatal" in r]
    if fatal:
        raise RuntimeError(f"a session worker failed: {fatal[0]}")
    return replies


def _sum(replies: list[dict], key: str) -> int:
    return sum(r[key] for r in replies)


def _sessions(base_url: str, options: BenchOptions, acked: dict[str, list], audit_pairs: list[Pair],
              stack: ExitStack) -> dict:
    """K authenticated sessions: time to connect them all and server memory per session; then
    (with "storm") all drop, messages arrive meanwhile, and all come back within the window."""
    users = max(1, min(options.sessions, options.session_users))
    _say(options, f"connections: provisioning {users} users for {options.sessions:,} sessions")
    logins = asyncio.run(_provision(base_url, users))
    groups = _groups_for(base_url, logins, options.storm_group)
    specs = [SessionSpec(x["user_id"], x["socket_url"], x["access_token"], x["conv"],
                         f"127.0.0.{2 + k % options.sources}")
             for k in range(options.sessions) for x in [logins[k % users]]]
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for k in range(options.processes):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=session_worker, args=(theirs, specs[k::options.processes], base_url,
                                                        max(1, 256 // options.processes)), daemon=True)
        proc.start()
        stack.callback(proc.kill)
        pipes.append(mine)
        procs.append(proc)
    before = _node_stats()
    _say(options, f"connections: opening {options.sessions:,} sessions from {options.sources} source addresses")
    cpu_before = profile.CpuSnapshot.take()
    opened = _command(pipes, "connect")
    connect_cpu = profile.cpu_per_message(cpu_before, profile.CpuSnapshot.take(), _sum(opened, "connected"))
    time.sleep(2)  # presence and buffers settle before memory is read
    after = _node_stats()
    rss_before, rss_after = _rss(before), _rss(after)
    connected = _sum(opened, "connected")
    result: dict = {
        "sessions": options.sessions, "users": users, "sources": options.sources, "connected": connected,
        "connect_errors": _sum(opened, "errors"), "connect_failed": _sum(opened, "failed"),
        "first_error": next((r["first_error"] for r in opened if r["first_error"]), ""),
        "connect_all_s": round(max(r["end"] for r in opened) - min(r["start"] for r in opened), 2),
        "server_connections": sum(n.connections for n in after) if after else None,
        "server_rss_mb": round(rss_after / 2**20, 1) if rss_after else None,
        "rss_per_session_kb": round((rss_after - rss_before) / connected / 1024, 1)
        if rss_before is not None and rss_after is not None and connected else None,
        "connect_cpu": connect_cpu,  # µs per opened session by role: what the storm's time is made of
    }
    if "storm" in options.scenarios:
        _say(options, f"storm: all {connected:,} sessions drop; {options.storm_messages} messages to each of "
                      f"{len(groups)} groups meanwhile")
        _command(pipes, "drop")
        last_seq = {}
        for k, (owner, conv) in enumerate(groups):
            got = asyncio.run(send_all(Endpoint(owner["user_id"], owner["socket_url"], owner["access_token"]),
                                       conv, options.storm_messages, f"storm{k}."))
            acked.setdefault(conv, []).extend(got)
            last_seq[conv] = max(seq for seq, _ in got)
            me = Endpoint(owner["user_id"], "", owner["access_token"])
            audit_pairs.append(Pair(me, me, conv))
        start_at = time.time() + 0.5
        how = "over its socket (seen in auth)" if options.storm_over_socket else "through HTTP history"
        _say(options, f"storm: every session comes back within {options.storm_window} s and catches up {how}")
        cpu_before = profile.CpuSnapshot.take()
        back = _command(pipes, "storm", options.storm_window, last_seq, start_at, options.storm_over_socket)
        storm_cpu = profile.cpu_per_message(cpu_before, profile.CpuSnapshot.take(), _sum(back, "current"))
        result["storm"] = {
            "window_s": options.storm_window, "catch_up": "socket" if options.storm_over_socket else "http",
            "current": _sum(back, "current"), "errors": _sum(back, "errors"),
            "failed": _sum(back, "failed"), "gaps": _sum(back, "gaps"), "duplicates": _sum(back, "duplicates"),
            "all_current_s": round(max(r["end"] for r in back) - start_at, 2),
            "first_error": next((r["first_error"] for r in back if r["first_error"]), ""),
            "cpu": storm_cpu,  # µs per resumed session by role, over the whole storm
        }
    _command(pipes, "close")
    for proc in procs:
        proc.join(10)
    _until_sessions_gone()  # tearing 20,000 sessions down is not the next scenario's cost
    return result


def _rolling(base_url: str, pairs: list[Pair], options: BenchOptions, acked: dict[str, list]) -> dict:
    """Every socket node drained and replaced in turn under 1:1 traffic (`bench.rolling`)."""
    import ray

    if not ray.is_initialized():
        return {"skipped": "needs the cluster this bench started (not --target)"}
    from dataclasses import asdict

    from imray.adapters.named_actors import RayNamedActors
    from imray.bench.rolling import rolling_restart
    from imray.settings import load_settings

    settings = load_settings()
    supervisor = RayNamedActors(settings.namespace, settings.shard_count).supervisor()
    nodes = [n.node_id for n in ray.get(supervisor.nodes.remote(), timeout=60)]

    def restart(node_id: str) -> dict:
        return asdict(ray.get(supervisor.restart_node.remote(node_id, 60.0), timeout=300))

    _say(options, f"rolling: {len(pairs)} pairs chat while {', '.join(nodes)} are drained and replaced in turn")
    result = asyncio.run(rolling_restart(base_url, pairs, restart, nodes, acked))
    _say(options, f"rolling: {len(nodes)} nodes replaced in {result['took_s']} s; {result['acked']} acked, "
                  f"{result['moves']} moves, {result['missed_by_receivers']} missed by receivers")
    return result


def _until_sessions_gone(within_s: float = 60.0) -> None:
    """Wait until the socket nodes hold no session (bounded), then a moment for what follows a close."""
    deadline = time.monotonic() + within_s
    while (stats := _node_stats()) and sum(n.connections for n in stats) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)


def _start_centrifugo(stack: ExitStack, options: BenchOptions) -> tuple[str, int] | None:
    """Centrifugo on loopback for the 1:1, fan-out and memory comparisons; None when not wanted or
    not built (`make bench` builds it first; `python -m imray.bench.centrifugo` does by hand)."""
    from imray.bench import centrifugo

    if not options.centrifugo or not centrifugo.BINARY.exists():
        return None
    workdir = Path(tempfile.mkdtemp(prefix="imray-bench-centrifugo-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    return stack.enter_context(centrifugo.server(CENTRIFUGO_PORT, workdir))


def _centrifugo_one2one(pool, url: str, options: BenchOptions) -> dict:
    from imray.bench import centrifugo

    _say(options, f"centrifugo: closed loop, {options.window} in flight per sender, {options.duration} s")
    chunks = [len(range(k, options.pairs, options.processes)) for k in range(options.processes)]
    jobs = [(url, 1000 * k, n, options.duration, options.window) for k, n in enumerate(chunks) if n]
    before = profile.CpuSnapshot.take()
    parts = pool.map(centrifugo.one2one_worker, jobs)
    after = profile.CpuSnapshot.take()
    run = {key: sum(p[key] for p in parts) for key in
           ("sent", "acked", "errors", "received", "duplicates", "order_violations", "not_delivered", "loader_cpu_s")}
    run["elapsed_s"] = max(p["elapsed_s"] for p in parts)
    run["ack_ms"] = [x for p in parts for x in p["ack_ms"]]
    run["delivery_ms"] = [x for p in parts for x in p["delivery_ms"]]
    return {"max_rate": round(run["acked"] / run["elapsed_s"], 1), "max_run": _summary(run, None),
            "cpu": profile.cpu_per_message(before, after, run["acked"])}


def _centrifugo_fanout(pool, url: str, members: int, options: BenchOptions) -> dict:
    from imray.bench import centrifugo

    _say(options, f"fanout: the same against Centrifugo ({members} subscribers)")
    start_at = time.time() + 3 + members / 100
    counts = [len(range(k, members, options.processes)) for k in range(options.processes)]
    jobs = [(url, 1000 * k, n, k == 0, start_at, options.duration, options.window) for k, n in enumerate(counts)]
    parts = pool.map(centrifugo.fanout_worker, jobs)
    received, acked = sum(p["received"] for p in parts), sum(p["acked"] for p in parts)
    return {"members": members, "sent": sum(p["sent"] for p in parts), "acked": acked, "deliveries": received,
            "deliveries_per_s": round(received / options.duration, 1),
            "members_with_all": sum(1 for p in parts for n in p["per_member"] if n == acked),
            "duplicates": sum(p["duplicates"] for p in parts),
            "order_violations": sum(p["order_violations"] for p in parts),
            "loader_cpu_us_per_delivery": round(sum(p["loader_cpu_s"] for p in parts) * 1e6 / received, 2)
            if received else None,
            "delivery_ms": report.percentiles([x for p in parts for x in p["delivery_ms"]])}


def _start_relay(stack: ExitStack) -> str:
    proc = subprocess.Popen([sys.executable, "-m", "imray.bench.relay", "--port", str(RELAY_PORT)],
                            stdout=subprocess.PIPE, text=True)
    stack.callback(proc.kill)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "relay on ws://..."
    if "relay on" not in line:
        raise RuntimeError(f"the relay did not start: {line!r}")
    return f"ws://127.0.0.1:{RELAY_PORT}/ws"


def _local_imray(stack: ExitStack, options: BenchOptions) -> LocalImray:
    from imray import runtime
    from imray.localcluster import local_cluster, loopback_only, ray_environment
    from imray.settings import load_settings

    if not loopback_only():
        raise RuntimeError("run the benchmark inside a loopback-only namespace: scripts/netns-run imray bench")
    # As `imray up` runs it (IMRAY_* settings apply): shards by default, one for SQLite (a single writer).
    data_dir = tempfile.mkdtemp(prefix="imray-bench-")
    stack.callback(shutil.rmtree, data_dir, ignore_errors=True)  # runs last: after the cluster stopped
    settings = load_settings(data_dir=data_dir, socket_nodes=2)
    stack.enter_context(local_cluster(workers=2, env=ray_environment(settings)))
    local = LocalImray(settings, runtime.prepare(settings))
    runtime.deploy(settings, local.keys)
    stack.callback(local.stop)  # as deployed last (the shard scaling redeploys)
    return local


def _shard_steps(pool, local: LocalImray | None, options: BenchOptions, acked: dict[str, list],
                 audit_pairs: list[Pair]) -> dict:
    """The 1:1 closed loop with each of `shard_counts` shards, on fresh pairs (audited with the rest)."""
    def run_one(count: int) -> dict:
        base_url = local.settings.base_url if local else ""
        pairs = _pairs_across_nodes(asyncio.run(_provision(base_url, 2 * options.pairs)), options.pairs)
        audit_pairs.extend(pairs)
        _say(options, f"shards: {count} shard(s), closed loop, {len(pairs)} pairs, {options.duration} s")
        before = profile.CpuSnapshot.take()
        run = _drive(pool, pairs, None, options, f"shards{count}-")
        cpu = profile.cpu_per_message(before, profile.CpuSnapshot.take(), run["acked"])
        _merge(acked, run["acked_ids"])
        return {"max_rate": round(run["acked"] / run["elapsed_s"], 1), "errors": run["errors"],
                "ack_ms": report.percentiles(run["ack_ms"]), "cpu": cpu}

    _say(options, f"shards: imray redeployed with {', '.join(map(str, options.shard_counts))} shards in turn")
    return shard_scaling(local, options.shard_counts, run_one)


def bench(options: BenchOptions) -> dict:
    results: dict = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                     "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                     # --target: the stack is whatever that deployment runs, not this process's settings
                     "stack": f"as deployed at {options.target}" if options.target
                     else "real" if os.environ.get("IMRAY_DATABASE_URL") else "embedded",
                     "pairs": options.pairs, "processes": options.processes, "duration_s": options.duration,
                     "window": options.window}
    with ExitStack() as stack:
        local = None if options.target else _local_imray(stack, options)
        base_url = options.target or local.settings.base_url  # type: ignore[union-attr]
        _say(options, f"imray at {base_url}; provisioning {2 * options.pairs + 8} users")
        logins = asyncio.run(_provision(base_url, 2 * options.pairs + 8))
        pairs = _pairs_across_nodes(logins, options.pairs)
        results["pairs"] = len(pairs)
        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(options.processes))
        acked: dict[str, list] = {}
        live: list[dict] = []
        audit_pairs = list(pairs)
        relay_url = _start_relay(stack) if {"one2one", "fanout"} & set(options.scenarios) else ""
        centrifugo_server = (_start_centrifugo(stack, options)
                             if {"one2one", "fanout", "connections"} & set(options.scenarios) else None)
        if options.centrifugo and centrifugo_server is None and {"one2one", "fanout"} & set(options.scenarios):
            results["centrifugo"] = "not built: `make bench` builds it (python -m imray.bench.centrifugo)"
        if "one2one" in options.scenarios:
            imray_result = _one2one(pool, pairs, options, "imray", None, acked)
            offered = [s["offered_rate"] for s in imray_result["steps"]]
            relay_result = _one2one(pool, _relay_pairs(len(pairs), relay_url), options, "relay", offered, {})
            results["one2one"] = {"imray": imray_result, "relay": relay_result,
                                  "max_rate_ratio": round(imray_result["max_rate"] / relay_result["max_rate"], 3)
                                  if relay_result["max_rate"] else None}
            if centrifugo_server:
                peer = _centrifugo_one2one(pool, centrifugo_server[0], options)
                results["one2one"]["centrifugo"] = peer
                results["one2one"]["centrifugo_ratio"] = (round(imray_result["max_rate"] / peer["max_rate"], 3)
                                                          if peer["max_rate"] else None)
            live = [imray_result["max_run"], *imray_result["steps"]]
        fanout = None
        if "fanout" in options.scenarios:
            fanout = _fanout(pool, base_url, relay_url, options)
            results["fanout"] = {k: v for k, v in fanout.items() if k not in ("acked_ids", "owner_token")}
            if centrifugo_server:
                peer = _centrifugo_fanout(pool, centrifugo_server[0], fanout["members"], options)
                results["fanout"]["centrifugo"] = peer
                results["fanout"]["centrifugo_ratio"] = (round(fanout["deliveries_per_s"] / peer["deliveries_per_s"], 3)
                                                         if peer["deliveries_per_s"] else None)
        if "connections" in options.scenarios or "storm" in options.scenarios:
            results["connections"] = _sessions(base_url, options, acked, audit_pairs, stack)
            if centrifugo_server:
                from imray.bench import centrifugo

                idle = min(options.sessions, 5000)
                _say(options, f"connections: Centrifugo's memory for {idle:,} idle subscribed connections")
                per = centrifugo.idle_rss_per_connection(*centrifugo_server, idle)
                results["connections"]["centrifugo_rss_per_connection_kb"] = round(per / 1024, 1)
        if "http" in options.scenarios:
            if "one2one" not in options.scenarios:  # pages of 50 messages to read, as after the 1:1 scenario
                _seed(pairs, acked, 50)
            results["http"] = _http(pool, base_url, logins, [(p.receiver.token, p.conv) for p in pairs], options)
        if "rolling" in options.scenarios:  # late: it replaces the socket nodes
            results["rolling"] = _rolling(base_url, pairs, options, acked)
        if "shards" in options.scenarios:  # last: it redeploys imray
            results["shards"] = _shard_steps(pool, local, options, acked, audit_pairs)
        _say(options, "audit: history of every conversation against every ack")
        if fanout is not None:  # the group's history is audited like a conversation of its own
            acked[fanout["conv"]] = fanout["acked_ids"]
            owner = Endpoint(0, "", fanout["owner_token"])
            audit_pairs.append(Pair(owner, owner, fanout["conv"]))
            live.append(fanout)
        results["audit"] = audit = asyncio.run(_audit(base_url, audit_pairs, acked, live))
        storm = results.get("connections", {}).get("storm")
        if storm:  # what reconnecting sessions fetched must be whole too
            audit["storm_gaps"], audit["storm_duplicates"] = storm["gaps"], storm["duplicates"]
            audit["ok"] = audit["ok"] and storm["gaps"] == 0 and storm["duplicates"] == 0 and storm["failed"] == 0
        rolling = results.get("rolling")
        if rolling and "skipped" not in rolling:  # every receiver had every message of the restart, too
            audit["rolling_missed"] = rolling["missed_by_receivers"]
            audit["ok"] = audit["ok"] and rolling["missed_by_receivers"] == 0
    results["targets"] = targets.verdicts(results)
    if options.results is not None:
        folder = options.results / results["started"].replace(":", "").replace("+0000", "Z")
        results["files"] = [str(p) for p in report.write(results, folder)]
        _say(options, f"results in {folder}")
    return results
