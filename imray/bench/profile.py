"""Where the CPU per message goes: each process of the bench's own cluster by role, and py-spy samples
of the socket nodes and shards grouped by library (issue 21: aim the work with measurements)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# Ray titles each worker `ray::<actor class>[.<method>()]`; Serve replicas `ray::ServeReplica:<app>:<deployment>`.
_ROLES: tuple[tuple[str, str], ...] = (
    ("ray::SocketNode", "socket nodes"),
    ("ray::ConversationShard", "shards"),
    ("ray::ServeReplica", "Serve replicas"),
    ("ray::ProxyActor", "Serve proxy"),
    ("ray::ServeController", "Serve controller"),
    ("ray::Presence", "presence"),
    ("ray::SocketSupervisor", "supervisor"),
)
# Middleware servers are not the bench's children: found by name (alone on the machine while measuring).
_SERVERS = {"mariadbd": "database server", "mysqld": "database server", "redis-server": "Redis"}
PROFILED = ("socket nodes", "shards")  # the hot path of a message: sampled by py-spy with --profile


def role_of(proc: psutil.Process) -> str:
    """The part of the system a process plays in the bench, from its title and command line."""
    cmdline = proc.cmdline()
    title = cmdline[0] if cmdline else proc.name()
    whole = " ".join(cmdline)
    if "multiprocessing" in whole:
        parent = proc.parent()
        if parent is not None and "imray.bench.history_service" in " ".join(parent.cmdline()):
            return "baselines"  # the bare history service's uvicorn workers
        return "loaders"  # the bench's spawned load generators
    for prefix, role in _ROLES:
        if title.startswith(prefix):
            return role
    if any(name in whole for name in ("imray.bench.relay", "imray.bench.history_service", "centrifugo")):
        return "baselines"  # idle while imray is measured, and the other way round
    if title.startswith("ray::") and not title.startswith("ray::IDLE"):
        return title.removeprefix("ray::").split(".")[0].split(" ")[0]  # another actor, by its class
    return "Ray system"  # gcs_server, raylets, agents, log monitors, idle workers


def _processes() -> Iterator[tuple[psutil.Process, str]]:
    for proc in psutil.Process().children(recursive=True):
        try:
            yield proc, role_of(proc)
        except psutil.Error:
            continue
    for proc in psutil.process_iter(["name"]):
        role = _SERVERS.get(proc.info["name"] or "")
        if role:
            yield proc, role


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


@dataclass
class CpuSnapshot:
    """CPU seconds per process (pid, start time) and its role, at one moment."""
    seconds: dict[tuple[int, float], tuple[str, float]] = field(default_factory=dict)
    driver: float = 0.0
    at: float = 0.0

    @classmethod
    def take(cls) -> CpuSnapshot:
        snap = cls(driver=_cpu(psutil.Process()), at=time.monotonic())
        for proc, role in _processes():
            try:
                snap.seconds[(proc.pid, proc.create_time())] = (role, _cpu(proc))
            except psutil.Error:
                continue  # ended between the listing and the reading
        return snap


def cpu_per_message(before: CpuSnapshot, after: CpuSnapshot, messages: int) -> dict:
    """µs of CPU per acked message by role, and the cores each role kept busy meanwhile."""
    spent: dict[str, float] = {}
    for key, (role, seconds) in after.seconds.items():
        spent[role] = spent.get(role, 0.0) + seconds - before.seconds.get(key, (role, 0.0))[1]
    spent["bench driver"] = after.driver - before.driver
    elapsed_s = after.at - before.at
    if not messages or elapsed_s <= 0:
        return {}
    server = sum(s for role, s in spent.items() if role not in ("loaders", "bench driver"))
    return {"messages": messages, "elapsed_s": round(elapsed_s, 2),
            "server_us_per_msg": round(server * 1e6 / messages, 1),
            "roles": {role: {"us_per_msg": round(s * 1e6 / messages, 1), "cores": round(s / elapsed_s, 2)}
                      for role, s in sorted(spent.items(), key=lambda kv: -kv[1]) if s > 0.005}}


def pids_of(roles: tuple[str, ...]) -> dict[int, str]:
    return {proc.pid: role for proc, role in _processes() if role in roles}


def _pyspy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"  # the venv's, when PATH does not have it
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


@contextmanager
def sampled(pids: dict[int, str], duration_s: float, rate: int = 97) -> Iterator[dict]:
    """py-spy on each pid for `duration_s` (not pausing the process; only samples holding the GIL, i.e.
    Python's own work, not waits nor C code that released it such as SQLite's); yields a dict filled on
    exit with each role's samples grouped by the library of the innermost frame, and the busiest functions."""
    binary = _pyspy()
    summary: dict = {}
    if binary is None:
        summary["skipped"] = "py-spy is not installed (requirements-dev.txt)"
        yield summary
        return
    workdir = Path(tempfile.mkdtemp(prefix="imray-profile-"))
    procs = []
    for pid, role in pids.items():
        out = workdir / f"{role.replace(' ', '-')}-{pid}.txt"
        with out.with_suffix(".err").open("w") as err:  # the child keeps its own copy of the descriptor
            procs.append((role, out, subprocess.Popen(
                [binary, "record", "--pid", str(pid), "--duration", str(max(1, round(duration_s))),
                 "--rate", str(rate), "--nonblocking", "--gil", "--full-filenames", "--nolineno",
                 "--format", "raw", "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=err)))
    try:
        yield summary
    finally:
        stacks: dict[str, Counter[str]] = {}
        for role, out, proc in procs:
            try:
                proc.wait(timeout=duration_s + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
            if out.exists():
                stacks.setdefault(role, Counter()).update(_read_raw(out.read_text()))
            else:  # py-spy could not attach or read it: say why instead of a silent gap
                failed = out.with_suffix(".err").read_text().strip().splitlines()
                summary.setdefault("errors", []).append(f"{role}: {failed[-1] if failed else 'no output'}")
        for log in workdir.glob("*.err"):
            log.unlink()
        summary["folded_stacks"] = str(workdir)  # py-spy's raw (folded) stacks: flamegraph.pl or speedscope read them
        summary.update({role: breakdown(counts) for role, counts in stacks.items()})


def _read_raw(text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[stack] += int(n)
    return counts


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")


def library(path: str) -> str:
    """A frame's file as the library it belongs to: `websockets`, `ray`, `sqlalchemy`, `imray.actors`..."""
    parts = Path(path).parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1:]
    elif "imray" in parts:  # a checkout (an editable install): from the last `imray` folder on
        rest = parts[len(parts) - 1 - parts[::-1].index("imray"):]
    else:
        rest = ()
    if rest:
        return ".".join(rest[:2] if rest[0] == "imray" else rest[:1]).removesuffix(".py")
    if re.search(r"python3\.\d+", path):
        sub = parts[-2] if parts[-2] != "lib" and not parts[-2].startswith("python3") else ""
        return f"stdlib {sub or Path(path).stem}"
    return path or "?"


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for frame in stack.split(";"):
        m = _FRAME.match(frame.strip())
        if m:
            out.append((m["func"], m["file"]))
    return out


def breakdown(counts: Counter[str], top: int = 12) -> dict:
    """Samples by the library of the innermost frame (where CPU is spent) and, for imray's own
    functions, inclusive shares (what the spending is for)."""
    total = sum(counts.values())
    if not total:
        return {"samples": 0}
    own: Counter[str] = Counter()
    own_functions: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, n in counts.items():
        frames = _frames(stack)
        if not frames:
            continue
        own[library(frames[-1][1])] += n
        own_functions[f"{library(frames[-1][1])}:{frames[-1][0]}"] += n
        seen = set()
        for func, path in frames:
            if "/imray/" in path and "/bench/" not in path:
                name = f"{library(path).removeprefix('imray.')}.{func}"
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += n
    return {"samples": total,
            "self_by_library_pct": {k: round(100 * v / total, 1) for k, v in own.most_common(top)},
            "self_by_function_pct": {k: round(100 * v / total, 1) for k, v in own_functions.most_common(top)},
            "imray_inclusive_pct": {k: round(100 * v / total, 1) for k, v in inclusive.most_common(top)}}
