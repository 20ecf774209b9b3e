"""Deploy imray onto the Ray cluster this process is connected to, look at it, take it down.

Used by the CLI, the benchmark and the test suite; starting a Ray cluster on this machine is
`localcluster`'s part.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import ray
from ray import serve
from ray.serve import Application
from ray.serve import Deployment as ServeDeployment
from ray.util.placement_group import get_placement_group, remove_placement_group

from imray.actors.supervisor import PLACEMENT_GROUP, SHARD_GROUP, SocketSupervisor
from imray.adapters.named_actors import (
    LOGIN_FAILURES,
    PRESENCE,
    SUPERVISOR,
    ActorMissing,
    RayNamedActors,
    shard_name,
    socket_node_name,
)
from imray.backends import Backends, with_config_overlay
from imray.deployments.auth import AuthService
from imray.deployments.common import deployment_options
from imray.deployments.gateway import Gateway
from imray.deployments.users import UserService
from imray.deployments.web import WebService
from imray.domain.nodes import NodeStatus
from imray.logs import serve_logging
from imray.scaleout import check_scale_out
from imray.settings import Settings
from imray.storage import keyfiles, migrate
from imray.storage.private import private_dir

log = logging.getLogger("imray")
APP_NAME = "imray"
STOP_TIMEOUT_S = 60.0  # the supervisor adopts what is alive first (up to 30 s), then drains the nodes
GONE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Deployment:
    """What `deploy` brought up: where its API, docs and dashboard are, and its socket nodes."""

    api_url: str
    docs_url: str
    dashboard_url: str | None
    nodes: list[NodeStatus]


def prepare(settings: Settings) -> Path:
    """Data dir, schema and signing keyring: everything that must exist before the first request.
    Returns the keys directory (absolute), for `deploy`."""
    private_dir(settings.data_path)  # 0700: keys, the SQLite database, local files
    migrate.upgrade(settings.db_url)
    keys = settings.keys_path.absolute()
    keyfiles.ensure(keys)
    return keys


def build_app(settings: Settings) -> Application:
    """The Serve application: the gateway in front of the OAuth2 centre, the users and the web services.
    Every deployment reads the signing keys from `settings.keys_path`: no key is a Serve init argument
    (those are kept in Ray's control store)."""
    return _configured(Gateway, settings, "Gateway", num_replicas=settings.gateway_replicas).bind(
        _configured(AuthService, settings, "AuthService", num_replicas=settings.auth_replicas).bind(settings),
        _configured(UserService, settings, "UserService").bind(settings),
        _configured(WebService, settings, "WebService").bind(settings),
        settings)


def _configured(deployment: object, settings: Settings, name: str, **extra: Any) -> ServeDeployment:
    """A class under @serve.deployment (mypy does not apply class decorators) with imray's options."""
    return cast(ServeDeployment, deployment).options(**deployment_options(settings, name), **extra)


def deploy(settings: Settings, keys: Path, dashboard_url: str | None = None) -> Deployment:
    """The socket nodes (through their supervisor, which Ray restarts if it dies), then the HTTP side.
    `keys`: the keys directory `prepare` made, where every process (on every host) reads the keys."""
    settings, nodes, application = assemble(settings, keys)
    start_http(settings)
    serve.run(application, name=APP_NAME, route_prefix="/")
    return Deployment(settings.base_url, f"{settings.base_url}/docs", _dashboard_url(dashboard_url), nodes)


def start_http(settings: Settings) -> None:
    """Serve's HTTP proxy on the head, as imray wants it (`serve run` and a Serve config file say the
    same in their own terms: deploy/serve-config.yaml)."""
    serve.start(proxy_location="HeadOnly",
                # keep_alive_timeout_s: idle connections between requests, in HAProxy and the Python proxy.
                http_options={"host": settings.http_host, "port": settings.http_port,
                              "keep_alive_timeout_s": settings.http_idle_timeout_s},
                logging_config=serve_logging(settings))


def assemble(settings: Settings, keys: Path) -> tuple[Settings, list[NodeStatus], Application]:
    """imray on the cluster this process is connected to, but for serving HTTP: the settings as deployed
    (Nacos overlay, shard count, absolute keys dir), the bucket, the socket nodes, shards and presence
    through their supervisor (detached: Ray restarts it if it dies), and the Serve application to run.
    `imray up` (`deploy`) and Serve's app builder (`imray.app:build`) both come here."""
    settings = with_config_overlay(settings).with_shards_for(ray.cluster_resources().get("CPU", 1))
    settings = settings.replace(keys_dir=str(keys))  # absolute: a process elsewhere has another ~
    check_scale_out(settings, [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]])  # `imray up` did too
    Backends(settings, "imray-up").objects().ensure_bucket()  # the bucket exists before the first upload
    supervisor = SocketSupervisor.options(  # type: ignore[attr-defined]  # @ray.remote, not applied by mypy
        name=SUPERVISOR, namespace=settings.namespace, lifetime="detached").remote(settings)
    nodes: list[NodeStatus] = ray.get(supervisor.start.remote(), timeout=120)
    return settings, nodes, build_app(settings)


def _dashboard_url(found: str | None) -> str | None:
    if not found:
        return None
    return found if found.startswith("http") else f"http://{found}"


def undeploy(settings: Settings) -> None:
    """The HTTP side, then the actors: stopped through the supervisor (sessions are closed, shards
    drained), then each named actor and both placement groups removed. They are detached, so nothing
    goes by itself; the names are waited for, so a `deploy` right after finds them free."""
    try:
        serve.delete(APP_NAME)
    except Exception as exc:  # nothing deployed is fine
        log.debug("serve.delete: %r", exc)
    failed: Exception | None = None
    try:
        supervisor = RayNamedActors(settings.namespace, settings.shard_count).supervisor()
    except ActorMissing:
        supervisor = None  # its actors may still be alive: they are removed below all the same
    if supervisor is not None:
        try:
            ray.get(supervisor.stop.remote(), timeout=STOP_TIMEOUT_S)
        except Exception as exc:  # remove everything anyway, then say so
            failed = exc
        ray.kill(supervisor, no_restart=True)  # first: a live supervisor would replace what goes next
    for name in _named_actors(settings.namespace):
        try:
            ray.kill(ray.get_actor(name, namespace=settings.namespace), no_restart=True)
        except ValueError:  # gone meanwhile
            pass
    for group in (PLACEMENT_GROUP, SHARD_GROUP):
        try:
            remove_placement_group(get_placement_group(group))
        except ValueError:  # none
            pass
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while (left := _named_actors(settings.namespace)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        raise RuntimeError(f"still alive {GONE_TIMEOUT_S:g} s after being killed: {left}")
    if failed is not None:
        raise failed


def _named_actors(namespace: str) -> list[str]:
    """imray's named actors alive in `namespace`: supervisor, presence, login failures, shards, socket nodes."""
    prefixes = (SUPERVISOR, PRESENCE, LOGIN_FAILURES, shard_name(0)[:-1], socket_node_name(""))
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == namespace and a["name"].startswith(prefixes)]


def status(settings: Settings) -> list[NodeStatus]:
    """The supervisor's view of the socket nodes; ActorMissing when imray is not deployed."""
    supervisor = RayNamedActors(settings.namespace, settings.shard_count).supervisor()
    nodes: list[NodeStatus] = ray.get(supervisor.nodes.remote(), timeout=30)
    return nodes
