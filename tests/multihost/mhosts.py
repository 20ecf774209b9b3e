"""The harness's hosts as the multi-host tests see them: addresses, listeners, processes, faults."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

NACOS_LIMIT_S = 15.0  # Nacos shows exactly the live socket nodes within this of a change (issue 15)


@dataclass(frozen=True)
class MultiHost:
    gateway: str  # http://<head>:8000
    nacos: str  # http://<middleware host>:8848/nacos
    hosts: dict[str, str]  # "head" / "h2"... -> address
    head_run: list[str] = field(default_factory=list)  # a command prefix that runs on the head host
    middleware_run: list[str] = field(default_factory=list)  # ... on the middleware host, with its settings
    middleware_state: str = ""  # the middleware's state folder (scripts/middleware.sh)
    head_start: list[str] = field(default_factory=list)  # starts Ray on the head again, as the harness did
    head_init: int = 0  # the head host's init (its PID namespace's first process): the machine itself

    @property
    def head(self) -> str:
        return self.hosts["head"]

    @property
    def workers(self) -> dict[str, str]:
        return {name: ip for name, ip in self.hosts.items() if name != "head"}

    def netns_of(self, ip: str) -> str:
        """The network namespace (host) that owns an address of 10.77.0.0/24: h<last octet>."""
        assert ip in self.hosts.values(), f"{ip} is none of the harness's Ray hosts {self.hosts}"
        return "h" + ip.rsplit(".", 1)[1]


def url_host(url: str) -> str:
    host = urlsplit(url).hostname
    assert host, url
    return host


def url_port(url: str) -> int:
    port = urlsplit(url).port
    assert port, url
    return port


def listeners(netns: str) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket listening inside a host, as `ss` there sees them."""
    out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Hltn"], capture_output=True, text=True,
                         check=True, timeout=20).stdout
    found: set[tuple[str, int]] = set()
    for line in out.splitlines():
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        found.add((host.strip("[]"), int(port)))
    return found


def host_pids(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=True,
                         timeout=20).stdout
    return [int(p) for p in out.split()]


def kill_host(netns: str, spare: int = 0) -> int:
    """A lost machine: SIGKILL every process in the host's namespace (but `spare`, its init when it is
    to be started again); returns how many there were."""
    def machine(pid: int) -> bool:  # the init or the `sleep` its loop runs
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True  # ended meanwhile
        comm, ppid = stat[stat.index("(") + 1:stat.rindex(")")], int(stat[stat.rindex(")") + 2:].split()[1])
        return pid == spare or (spare != 0 and ppid == spare and comm == "sleep")

    def left() -> list[int]:
        return [pid for pid in host_pids(netns) if not machine(pid)]
    pids = left()
    assert pids, f"nothing runs on {netns}"
    # Some may end on their own meanwhile ("No such process"): what counts is that none is left.
    subprocess.run(["kill", "-9", *map(str, pids)], check=False, capture_output=True, timeout=20)
    deadline = time.monotonic() + 15
    while left():
        assert time.monotonic() < deadline, f"processes left on {netns}: {left()}"
        time.sleep(0.2)
    return len(pids)


async def nacos_instances(mh: MultiHost, service: str) -> list[dict]:
    """The healthy instances of a service, as Nacos's HTTP API lists them."""
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(f"{mh.nacos}/v1/ns/instance/list",
                           params={"serviceName": service, "groupName": "DEFAULT_GROUP", "healthyOnly": "true"})
    r.raise_for_status()
    return r.json()["hosts"]


def from_environment() -> MultiHost:
    """What scripts/multihost passes: the gateway URL, the Ray hosts' addresses, the Nacos URL, and
    for the fault tests an operator's hands: commands on the head and the middleware host."""
    hosts = dict(pair.split("=", 1) for pair in os.environ["IMRAY_MH_HOSTS"].split())
    return MultiHost(os.environ["IMRAY_MH_GATEWAY"], os.environ["IMRAY_MH_NACOS"], hosts,
                     shlex.split(os.environ.get("IMRAY_MH_HEAD_RUN", "")),
                     shlex.split(os.environ.get("IMRAY_MH_MW_RUN", "")), os.environ.get("IMRAY_MH_MW_STATE", ""),
                     shlex.split(os.environ.get("IMRAY_MH_HEAD_START", "")),
                     int(os.environ.get("IMRAY_MH_HEAD_INIT", "0")))


@dataclass(frozen=True)
class RayActor:
    name: str
    cls: str
    ip: str  # the address of the host it runs on
    pid: int  # as its host sees it


async def ray_actors(mh: MultiHost, *classes: str) -> list[RayActor]:
    """imray's live actors of these classes, as a Ray driver on the head host lists them."""
    assert mh.head_run, "scripts/multihost passes IMRAY_MH_HEAD_RUN"
    script = Path(__file__).with_name("ray_actors.py")
    proc = await asyncio.create_subprocess_exec(*mh.head_run, "python", str(script), *classes,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, f"ray_actors.py on the head failed ({proc.returncode}): {err.decode()[-2000:]}"
    found = []
    for line in out.decode().splitlines():
        if line.startswith("{"):
            info = json.loads(line)
            found.append(RayActor(info["name"], info["class"], info["ip"], int(info["pid"])))
    return found


async def head_command(mh: MultiHost, *command: str, limit_s: float = 90) -> str:
    """What a command run on the head host as an operator printed (stdout and stderr, whatever its status)."""
    assert mh.head_run, "scripts/multihost passes IMRAY_MH_HEAD_RUN"
    proc = await asyncio.create_subprocess_exec(*mh.head_run, *command, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), limit_s)
    return f"{out.decode()[-4000:]}(exit status {proc.returncode})"


def host_pid(netns: str, pid_in_host: int) -> int:
    """The harness's pid of the process a host knows as `pid_in_host` (NSpid's innermost entry)."""
    for pid in host_pids(netns):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue  # ended meanwhile
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if nspid and int(nspid[-1]) == pid_in_host:
            return pid
    raise AssertionError(f"no process {pid_in_host} on {netns}")


def sigkill(netns: str, pid_in_host: int) -> int:
    """SIGKILL one process of a host; returns the harness's pid of it."""
    pid = host_pid(netns, pid_in_host)
    os.kill(pid, signal.SIGKILL)
    return pid


async def on_middleware_host(mh: MultiHost, *command: str, limit_s: float = 240) -> str:
    """A command of middleware/ on the middleware host, under the settings the harness started the
    servers with (`{state}` in an argument is their state folder); returns what it printed. The
    output goes to a file, not a pipe: a server it starts keeps its output open."""
    assert mh.middleware_run and mh.middleware_state, "scripts/multihost passes IMRAY_MH_MW_RUN/_STATE"
    args = [arg.format(state=mh.middleware_state) for arg in command]
    log = Path(mh.middleware_state) / f"{Path(args[0]).stem}-{args[1].rsplit('/', 1)[-1]}.log"
    with log.open("w") as out:
        proc = await asyncio.create_subprocess_exec(*mh.middleware_run, *args, stdin=subprocess.DEVNULL, stdout=out,
                                                    stderr=subprocess.STDOUT)
        try:
            rc = await asyncio.wait_for(proc.wait(), limit_s)
        except TimeoutError:
            proc.kill()
            raise AssertionError(f"{' '.join(args)} took over {limit_s} s") from None
    text = log.read_text()
    assert rc == 0, f"{' '.join(args)} failed ({rc}): {text[-2000:]}"
    return text.strip()


def set_link(netns: str, up: bool) -> None:
    """Cut a host off the bridge (or join it again): its veth end in the harness's own namespace, the
    namespace of the harness (PID 1 here: scripts/multihost runs in a PID namespace of its own)."""
    veth = "v" + netns.removeprefix("h")
    subprocess.run(["nsenter", "-t", "1", "-n", "ip", "link", "set", veth, "up" if up else "down"], check=True,
                   timeout=20)
