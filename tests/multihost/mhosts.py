"""The harness's hosts as the multi-host tests see them: addresses, listeners, processes, faults."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class MultiHost:
    gateway: str  # http://<head>:8000
    nacos: str  # http://<middleware host>:8848/nacos
    hosts: dict[str, str]  # "head" / "h2"... -> address

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


def kill_host(netns: str) -> int:
    """A lost machine: SIGKILL every process in the host's namespace; returns how many there were."""
    pids = host_pids(netns)
    assert pids, f"nothing runs on {netns}"
    # Some may end on their own meanwhile ("No such process"): what counts is that none is left.
    subprocess.run(["kill", "-9", *map(str, pids)], check=False, capture_output=True, timeout=20)
    deadline = time.monotonic() + 15
    while host_pids(netns):
        assert time.monotonic() < deadline, f"processes left on {netns}: {host_pids(netns)}"
        time.sleep(0.2)
    return len(pids)


def from_environment() -> MultiHost:
    """What scripts/multihost passes: the gateway URL, the Ray hosts' addresses, the Nacos URL."""
    hosts = dict(pair.split("=", 1) for pair in os.environ["IMRAY_MH_HOSTS"].split())
    return MultiHost(os.environ["IMRAY_MH_GATEWAY"], os.environ["IMRAY_MH_NACOS"], hosts)


def set_link(netns: str, up: bool) -> None:
    """Cut a host off the bridge (or join it again): its veth end in the harness's own namespace, the
    namespace of the harness (PID 1 here: scripts/multihost runs in a PID namespace of its own)."""
    veth = "v" + netns.removeprefix("h")
    subprocess.run(["nsenter", "-t", "1", "-n", "ip", "link", "set", veth, "up" if up else "down"], check=True,
                   timeout=20)
