"""Benchmark results: JSON (everything), a Markdown table, a PNG chart of latency against load."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def percentiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "mean": round(statistics.fmean(ordered), 2)}


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def _top_roles(cpu: dict, count: int = 4) -> str:
    """The roles that spent the most CPU per item, with the total of every role."""
    roles = sorted(cpu["roles"].items(), key=lambda kv: -kv[1]["us_per_msg"])
    total = sum(r["us_per_msg"] for _, r in roles)
    return ", ".join(f"{role} {r['us_per_msg']:,.0f}" for role, r in roles[:count]) + f" (all: {total:,.0f})"


def _cpu_lines(one: dict) -> list[str]:
    """CPU µs per message of each part in the closed loops (read per process; bench.profile)."""
    runs = {name: one[name].get("cpu") for name in ("imray", "relay", "centrifugo") if name in one}
    runs = {name: cpu for name, cpu in runs.items() if cpu}
    if not runs:
        return []
    roles = list(dict.fromkeys(role for cpu in runs.values() for role in cpu["roles"]))
    lines = ["CPU per message in the closed loops (µs, and cores kept busy):", "",
             "| part | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for role in roles:
        cells = [f"{cpu['roles'][role]['us_per_msg']} ({cpu['roles'][role]['cores']})" if role in cpu["roles"]
                 else "" for cpu in runs.values()]
        lines.append(f"| {role} | " + " | ".join(cells) + " |")
    lines.append("| **server side** | " + " | ".join(str(cpu["server_us_per_msg"]) for cpu in runs.values()) + " |")
    lines.append("")
    sampled = one["imray"].get("profile") or {}
    for role, got in sampled.items():
        if role == "folded_stacks":
            lines += [f"py-spy's folded stacks: {got}", ""]
        elif isinstance(got, dict) and got.get("samples"):
            top = ", ".join(f"{k} {v}%" for k, v in list(got["self_by_library_pct"].items())[:8])
            mine = ", ".join(f"{k} {v}%" for k, v in list(got["imray_inclusive_pct"].items())[:8])
            lines += [f"py-spy, {role} ({got['samples']} samples): by library {top}; imray functions "
                      f"(inclusive) {mine}.", ""]
    return lines


def markdown(results: dict) -> str:
    lines = [f"# imray bench — {results['started']}", "",
             f"Machine: {results['machine']}. Stack: {results['stack']}. "
             f"{results['pairs']} sender/receiver pairs across socket nodes, {results['processes']} load-generator "
             f"processes, {results['duration_s']} s per step.", ""]
    audit = results["audit"]
    lines += [f"**Audit: {'PASS' if audit['ok'] else 'FAIL'}** — acked {audit['acked']}, lost {audit['lost']}, "
              f"duplicates {audit['duplicates']}, order violations {audit['order_violations']}, "
              f"history gaps {audit['history_gaps']}.", ""]
    judged = results.get("targets")
    if judged:
        met = {True: "yes", False: "**no**", None: "not judged"}
        lines += ["## Issue 21's targets, in this run", "", "| target | goal | measured | met |", "|---|---|---|---|",
                  *(f"| {t['target']} | {t['goal']} | {t['measured']} | {met[t['met']]} |" for t in judged), ""]
    one = results.get("one2one")
    if one:
        imray_max, relay_max = one["imray"]["max_rate"], one["relay"]["max_rate"]
        lines += ["## 1:1 across socket nodes", "",
                  "| | imray | bare relay | imray / relay |", "|---|---|---|---|",
                  f"| max sustained msgs/s (persisted for imray) | {imray_max:,.0f} | {relay_max:,.0f} | "
                  f"{_ratio(imray_max, relay_max)} |",
                  f"| loader CPU µs per message | {one['imray']['max_run'].get('loader_cpu_us_per_msg')} | "
                  f"{one['relay']['max_run'].get('loader_cpu_us_per_msg')} | |", ""]
        peer = one.get("centrifugo")
        if peer:
            lines += ["| | Centrifugo (memory engine, history on) | imray / Centrifugo |", "|---|---|---|",
                      f"| max sustained msgs/s | {peer['max_rate']:,.0f} | {_ratio(imray_max, peer['max_rate'])} |",
                      f"| ack p50/p99 ms at the maximum | {peer['max_run']['ack_ms']['p50']}/"
                      f"{peer['max_run']['ack_ms']['p99']} | |",
                      f"| loader CPU µs per message | {peer['max_run']['loader_cpu_us_per_msg']} | |", ""]
        lines += _cpu_lines(one)
        lines += ["| offered load | msgs/s | imray ack p50/p95/p99 ms | imray delivery p50/p95/p99 ms "
                  "| relay ack p99 ms | relay delivery p99 ms |", "|---|---|---|---|---|---|"]
        for step, relay_step in zip(one["imray"]["steps"], one["relay"]["steps"], strict=True):
            a, d = step["ack_ms"], step["delivery_ms"]
            lines.append(f"| {step['fraction']:.0%} | {step['achieved_rate']:,.0f} | {a['p50']}/{a['p95']}/{a['p99']} "
                         f"| {d['p50']}/{d['p95']}/{d['p99']} | {relay_step['ack_ms']['p99']} "
                         f"| {relay_step['delivery_ms']['p99']} |")
        lines.append("")
    fan = results.get("fanout")
    if fan:
        d, relay = fan["delivery_ms"], fan.get("relay") or {}
        rd = relay.get("delivery_ms") or {}
        lines += ["## Group fan-out", "", "| | members online | msgs acked | deliveries/s | delivery p50/p95/p99 ms "
                  "| members with every message |", "|---|---|---|---|---|---|",
                  f"| imray | {fan['members']} | {fan['acked']:,} | {fan['deliveries_per_s']:,.0f} | "
                  f"{d['p50']}/{d['p95']}/{d['p99']} | {fan['members_with_all']} |"]
        if relay:
            lines.append(f"| bare relay | {relay['members']} | {relay['acked']:,} | {relay['deliveries_per_s']:,.0f} "
                         f"| {rd['p50']}/{rd['p95']}/{rd['p99']} | {relay['members_with_all']} |")
            lines.append(f"| imray / relay | | | {_ratio(fan['deliveries_per_s'], relay['deliveries_per_s'])} | | |")
        peer = fan.get("centrifugo")
        if peer:
            pd = peer["delivery_ms"]
            lines.append(f"| Centrifugo | {peer['members']} | {peer['acked']:,} | {peer['deliveries_per_s']:,.0f} "
                         f"| {pd['p50']}/{pd['p95']}/{pd['p99']} | {peer['members_with_all']} |")
            lines.append(f"| imray / Centrifugo | | | {_ratio(fan['deliveries_per_s'], peer['deliveries_per_s'])} "
                         "| | |")
        lines.append("")
    shards = results.get("shards")
    if shards:
        lines += ["## 1:1 throughput by shard count", ""]
        if "skipped" in shards:
            lines += [f"Skipped: {shards['skipped']}.", ""]
        else:
            lines += ["| shards | on Ray nodes | msgs/s | scaling | ack p50/p99 ms | shards' CPU µs/msg "
                      "| server µs/msg |", "|---|---|---|---|---|---|---|"]
            for step in shards["steps"]:
                roles, ack = step["cpu"].get("roles", {}), step["ack_ms"]
                lines.append(f"| {step['shards']} | {step['shard_hosts']} | {step['max_rate']:,.0f} "
                             f"| {step['scaling']}x | {ack['p50']}/{ack['p99']} "
                             f"| {roles.get('shards', {}).get('us_per_msg')} "
                             f"| {step['cpu'].get('server_us_per_msg')} |")
            lines.append("")
    conns = results.get("connections")
    if conns:
        lines += ["## Connections and the reconnect storm", "",
                  f"{conns['sessions']:,} sessions of {conns['users']:,} users, from {conns['sources']} source "
                  "addresses.", "", "| figure | value |", "|---|---|",
                  f"| sessions connected and authenticated | {conns['connected']:,} "
                  f"(errors {conns['connect_errors']}, failed {conns['connect_failed']}) |",
                  f"| time to connect them all | {conns['connect_all_s']} s |",
                  *([f"| first connect error | `{conns['first_error']}` |"] if conns["first_error"] else []),
                  f"| socket-node RSS in all / per session | {conns['server_rss_mb']} MB / "
                  f"{conns['rss_per_session_kb']} KB |",
                  *([f"| Centrifugo RSS per idle subscribed connection | "
                     f"{conns['centrifugo_rss_per_connection_kb']} KB |"]
                    if conns.get("centrifugo_rss_per_connection_kb") is not None else [])]
        storm = conns.get("storm")
        if storm:
            lines += [f"| storm: all back within {storm['window_s']} s, every one current after "
                      f"(catch-up {'over the socket' if storm.get('catch_up') == 'socket' else 'through HTTP'}) | "
                      f"{storm['all_current_s']} s |",
                      f"| storm: sessions current / failed / errors (retried) | {storm['current']:,} / "
                      f"{storm['failed']} / {storm['errors']} |",
                      f"| storm: gaps / duplicates in what they fetched | {storm['gaps']} / {storm['duplicates']} |"]
            if storm["first_error"]:
                lines.append(f"| storm: first error | `{storm['first_error']}` |")
        for what, cpu in (("a connect", conns.get("connect_cpu")), ("a storm's resume", (storm or {}).get("cpu"))):
            if cpu:
                lines.append(f"| CPU µs per session, {what}: the most costly roles | {_top_roles(cpu)} |")
        lines.append("")
    http = results.get("http")
    if http:
        lines += ["## HTTP through the gateway", "", "| figure | per second | errors |", "|---|---|---|",
                  f"| password-grant logins | {http['logins_per_s']:,.0f} | {http['login_errors']} |",
                  f"| history reads (50 messages) | {http['history_per_s']:,.0f} | {http['history_errors']} |"]
        ceiling, bare = http.get("hash_ceiling") or {}, http.get("history_baseline") or {}
        if ceiling.get("verifications_per_s"):
            lines.append(f"| baseline: argon2 verifications on {ceiling['cores']} cores, nothing else asked | "
                         f"{ceiling['verifications_per_s']:,.0f} | |")
        if bare.get("history_per_s"):
            lines.append(f"| baseline: the same reads from bare FastAPI + PyMySQL ({bare['workers']} workers) | "
                         f"{bare['history_per_s']:,.0f} | {bare['errors']} |")
        same = http.get("history_baseline_same_driver") or {}
        if same.get("history_per_s"):
            lines.append(f"| the same reads from bare FastAPI + mysqlclient, imray's driver ({same['workers']} "
                         f"workers; imray / it: {http['history_per_s'] / same['history_per_s']:.3f}x) | "
                         f"{same['history_per_s']:,.0f} | {same['errors']} |")
        lines.append("")
    rolling = results.get("rolling")
    if rolling and "skipped" not in rolling:
        lines += ["## Rolling restart under 1:1 traffic", "", "| figure | value |", "|---|---|",
                  f"| socket nodes drained and replaced, one by one | {rolling['nodes']} in {rolling['took_s']} s |",
                  f"| messages acked meanwhile / clients moved | {rolling['acked']:,} / {rolling['moves']} |",
                  f"| missed by receivers (live or caught up) | {rolling['missed_by_receivers']} |", ""]
    return "\n".join(lines)


def chart(results: dict, path: Path) -> bool:
    one = results.get("one2one")
    if not one:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, style in (("imray", "-o"), ("relay", "--s")):
        steps = one[name]["steps"]
        x = [s["achieved_rate"] for s in steps]
        for kind in ("ack_ms", "delivery_ms"):
            y = [s[kind]["p99"] for s in steps]
            ax.plot(x, y, style, label=f"{name} {kind.split('_')[0]} p99")
    ax.set_xlabel("offered load (messages/s)")
    ax.set_ylabel("latency p99 (ms)")
    ax.set_title("imray 1:1 across socket nodes vs. a bare relay")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(results: dict, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "results.json", folder / "results.md"]
    written[0].write_text(json.dumps(results, indent=2, sort_keys=True))
    written[1].write_text(markdown(results))
    if chart(results, folder / "latency.png"):
        written.append(folder / "latency.png")
    return written
