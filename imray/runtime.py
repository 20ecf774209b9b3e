"""Deploy imray onto the Ray cluster this process is connected to, look at it, take it down.

Used by the CLI, the benchmark and the test suite; starting a Ray cluster on this machine is
`localcluster`'s part.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

import ray
from ray import serve
from ray.serve import Application
from ray.serve import Deployment as ServeDeployment

from imray.actors.supervisor import SocketSupervisor
from imray.adapters.named_actors import SUPERVISOR, ActorMissing, RayNamedActors
from imray.backends import Backends, with_config_overlay
from imray.deployments.auth import AuthService
from imray.deployments.common import deployment_options
from imray.deployments.gateway import Gateway
from imray.deployments.users import UserService
from imray.deployments.web import WebService
from imray.domain.nodes import NodeStatus
from imray.domain.tokens import SigningKey
from imray.settings import Settings
from imray.storage import migrate

log = logging.getLogger("imray")
APP_NAME = "imray"


@dataclass(frozen=True)
class Deployment:
    """What `deploy` brought up: where its API, docs and dashboard are, and its socket nodes."""

    api_url: str
    docs_url: str
    dashboard_url: str | None
    nodes: list[NodeStatus]


def prepare(settings: Settings) -> SigningKey:
    """Data dir, schema and signing key: everything that must exist before the first request."""
    settings.data_path.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.db_url)
    return SigningKey.load_or_create(settings.data_path / "keys")


def build_app(settings: Settings, key: SigningKey) -> Application:
    """The Serve application: the gateway in front of the OAuth2 centre, the users and the web services."""
    return _configured(Gateway, settings, "Gateway", num_replicas=settings.gateway_replicas).bind(
        _configured(AuthService, settings, "AuthService", num_replicas=settings.auth_replicas).bind(settings, key),
        _configured(UserService, settings, "UserService").bind(settings),
        _configured(WebService, settings, "WebService").bind(settings),
        settings, [key.public()])


def _configured(deployment: object, settings: Settings, name: str, **extra: Any) -> ServeDeployment:
    """A class under @serve.deployment (mypy does not apply class decorators) with imray's options."""
    return cast(ServeDeployment, deployment).options(**deployment_options(settings, name), **extra)


def deploy(settings: Settings, key: SigningKey, dashboard_url: str | None = None) -> Deployment:
    """The socket nodes (through their supervisor), then the HTTP side."""
    settings = with_config_overlay(settings).with_shards_for(ray.cluster_resources().get("CPU", 1))
    Backends(settings, "imray-up").objects().ensure_bucket()  # the bucket exists before the first upload
    supervisor = SocketSupervisor.options(  # type: ignore[attr-defined]  # @ray.remote, not applied by mypy
        name=SUPERVISOR, namespace=settings.namespace, lifetime="detached").remote(settings, [key.public()])
    nodes: list[NodeStatus] = ray.get(supervisor.start.remote(), timeout=120)
    serve.start(proxy_location="HeadOnly",
                http_options={"host": settings.http_host, "port": settings.http_port},
                logging_config={"enable_access_log": False, "log_level": "WARNING"})
    serve.run(build_app(settings, key), name=APP_NAME, route_prefix="/")
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
        supervisor = RayNamedActors(settings.namespace, settings.shard_count).supervisor()
    except ActorMissing:
        return
    try:
        ray.get(supervisor.stop.remote(), timeout=30)
    finally:
        ray.kill(supervisor)  # its presence, shards and socket nodes go with it


def status(settings: Settings) -> list[NodeStatus]:
    """The supervisor's view of the socket nodes; ActorMissing when imray is not deployed."""
    supervisor = RayNamedActors(settings.namespace, settings.shard_count).supervisor()
    nodes: list[NodeStatus] = ray.get(supervisor.nodes.remote(), timeout=30)
    return nodes
