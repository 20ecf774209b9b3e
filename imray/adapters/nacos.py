"""Nacos (nacos-sdk-python 3.x, gRPC): naming for socket nodes and gateways, live config.

Socket nodes and gateway replicas register themselves as ephemeral instances: an instance lives
as long as its process's gRPC connection, so a dead actor disappears from Nacos by itself.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from imray.domain.nodes import NodeEndpoint
from imray.settings import Settings

if TYPE_CHECKING:  # the SDK is imported only where Nacos is configured (and it is untyped: Any)
    from v2.nacos import ClientConfig, NacosConfigService, NacosNamingService

log = logging.getLogger("imray.nacos")
SOCKET_SERVICE = "imray-socket"
GATEWAY_SERVICE = "imray-gateway"
CONFIG_DATA_ID = "imray.yaml"
_patched = False


def _allow_loopback_only_hosts() -> None:
    """The SDK insists on a non-loopback IPv4 interface for its client IP; fall back to 127.0.0.1."""
    global _patched
    if _patched:
        return
    from v2.nacos.common.nacos_exception import NacosException
    from v2.nacos.utils.net_util import NetUtils

    original = NetUtils.get_local_ip

    def local_ip() -> str:
        try:
            return original()
        except NacosException:
            return "127.0.0.1"

    NetUtils.get_local_ip = staticmethod(local_ip)
    _patched = True


class NacosLoginRefused(Exception):
    """Nacos has auth on and refuses IMRAY_NACOS_USERNAME / IMRAY_NACOS_PASSWORD."""


def check_login(settings: Settings, timeout_s: float = 10.0) -> None:
    """Log in as the SDK will, over HTTP; raise NacosLoginRefused, with Nacos's reason, if it refuses.

    nacos-sdk-python 3.2.0 says only "get access token failed", on the first request, plus an unretrieved
    task error. Anything but a refusal (Nacos away...) is left to the SDK, which logs in again on each request.
    """
    if not (settings.nacos_username and settings.nacos_password):
        return  # the SDK logs in only with both
    server = settings.nacos_server.split(",")[0].strip()
    form = urllib.parse.urlencode({"username": settings.nacos_username, "password": settings.nacos_password})
    try:
        with urllib.request.urlopen(f"http://{server}/nacos/v1/auth/users/login", form.encode(),
                                    timeout=timeout_s):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            reason = exc.read(200).decode(errors="replace").strip()
            raise NacosLoginRefused(
                f"Nacos at {server} refused the login of user {settings.nacos_username!r} "
                f"(HTTP {exc.code} {reason!r}): check IMRAY_NACOS_USERNAME and IMRAY_NACOS_PASSWORD") from None
    except OSError:
        pass


class NacosHost(TypedDict):
    """A healthy instance of a service, as Nacos lists it."""

    ip: str
    port: int
    metadata: dict[str, str]


def client_config(settings: Settings, name: str) -> ClientConfig:
    from v2.nacos import ClientConfigBuilder

    _allow_loopback_only_hosts()
    work = Path(settings.data_path) / "nacos" / name
    builder = (ClientConfigBuilder().server_address(settings.nacos_server)
               .namespace_id(settings.nacos_namespace).log_dir(str(work / "logs"))
               .cache_dir(str(work / "cache")).load_cache_at_start(False).log_level("WARNING"))
    if settings.nacos_username:
        builder = builder.username(settings.nacos_username).password(settings.nacos_password)
    config = builder.build()
    config.set_update_cache_when_empty(True)  # else the last instance never leaves a subscriber's view
    return config


class _RedoOnReconnect:
    """Wakes the SDK's redo task (re-register instances, re-subscribe) as soon as a connection is back.

    nacos-sdk-python 3.2.0 never calls `start_redo_task`: its redo loop runs only when a 30 s wait
    times out, so after a Nacos restart an instance came back 5-29 s after Nacos did (issue 15).
    Listeners are told in registration order, so the redo service already counts as connected.
    """

    def __init__(self, redo: Any) -> None:
        self._redo = redo

    async def on_connected(self) -> None:
        await self._redo.start_redo_task()

    async def on_disconnect(self) -> None:
        return None


async def naming_service(settings: Settings, name: str) -> NacosNamingService:
    """A started naming client that redoes its registrations and subscriptions at once on reconnect."""
    from v2.nacos import NacosNamingService

    await asyncio.to_thread(check_login, settings)
    naming = await NacosNamingService.create_naming_service(client_config(settings, name))
    proxy = naming.grpc_client_proxy
    await proxy.rpc_client.register_connection_listener(_RedoOnReconnect(proxy.redo_service))
    return naming


class NacosInstance:
    """One ephemeral instance, kept current (re-registered when its metadata changes)."""

    def __init__(self, settings: Settings, service: str, ip: str, port: int, name: str) -> None:
        self._settings, self._service, self._ip, self._port, self._name = settings, service, ip, port, name
        self._naming: NacosNamingService | None = None
        self._metadata: dict[str, str] = {}

    async def register(self, metadata: dict[str, str]) -> None:
        from v2.nacos import RegisterInstanceParam

        if self._naming is None:
            self._naming = await naming_service(self._settings, self._name)
        await self._naming.register_instance(RegisterInstanceParam(
            service_name=self._service, group_name=self._settings.nacos_group, ip=self._ip, port=self._port,
            weight=1.0, metadata=metadata, ephemeral=True))
        self._metadata = metadata

    async def update(self, metadata: dict[str, str]) -> None:
        if metadata != self._metadata:
            await self.register(metadata)

    async def deregister(self) -> None:
        from v2.nacos import DeregisterInstanceParam

        if self._naming is None:
            return
        await self._naming.deregister_instance(DeregisterInstanceParam(
            service_name=self._service, group_name=self._settings.nacos_group, ip=self._ip, port=self._port,
            ephemeral=True))
        await self._naming.shutdown()
        self._naming = None


class NacosDirectory:
    """What Nacos shows of a service: healthy instances, kept current by subscription."""

    def __init__(self, settings: Settings, service: str, name: str) -> None:
        self._settings, self._service, self._name = settings, service, name
        self._naming: NacosNamingService | None = None

    async def instances(self) -> list[NacosHost]:
        from v2.nacos import ListInstanceParam

        if self._naming is None:
            self._naming = await naming_service(self._settings, self._name)
        hosts = await self._naming.list_instances(ListInstanceParam(
            service_name=self._service, group_name=self._settings.nacos_group, subscribe=True, healthy_only=True))
        return [{"ip": h.ip, "port": h.port, "metadata": dict(h.metadata or {})} for h in hosts]

    async def node_ids(self) -> set[str] | None:
        """The `node_id`s of the healthy instances; None when Nacos does not answer."""
        try:
            instances = await self.instances()
        except Exception as exc:  # Nacos away: the caller falls back to its own view
            log.warning("nacos: listing %s failed: %r", self._service, exc)
            return None
        return {instance["metadata"].get("node_id", "") for instance in instances}

    async def endpoints(self) -> list[tuple[NodeEndpoint, int]] | None:
        """The listed socket nodes as endpoints, with the connection count each last published."""
        try:
            instances = await self.instances()
        except Exception as exc:
            log.warning("nacos: listing %s failed: %r", self._service, exc)
            return None
        return [found for found in map(endpoint_of, instances) if found is not None]

    async def close(self) -> None:
        if self._naming is not None:
            await self._naming.shutdown()
            self._naming = None


def endpoint_of(instance: NacosHost) -> tuple[NodeEndpoint, int] | None:
    """A socket node's endpoint and connection count from its instance's metadata (`SocketNode._metadata`);
    None for an instance without them (another writer, or an older imray)."""
    meta = instance["metadata"]
    if not meta.get("node_id") or not meta.get("url"):
        return None
    try:
        connections = int(meta.get("connections", "0"))
    except ValueError:
        connections = 0
    return (NodeEndpoint(meta["node_id"], meta["url"], instance["ip"], instance["port"], meta.get("ray_node_id", ""),
                         meta.get("actor_id", "")), connections)


class NacosConfig:
    """The `imray.yaml` data id: read once, then every change is handed to `on_change`."""

    def __init__(self, settings: Settings, name: str) -> None:
        self._settings, self._name = settings, name
        self._service: NacosConfigService | None = None

    async def _client(self) -> NacosConfigService:
        from v2.nacos import NacosConfigService

        if self._service is None:
            await asyncio.to_thread(check_login, self._settings)
            self._service = await NacosConfigService.create_config_service(client_config(self._settings, self._name))
        return self._service

    async def get(self) -> str:
        from v2.nacos import ConfigParam

        service = await self._client()
        return await service.get_config(ConfigParam(data_id=CONFIG_DATA_ID, group=self._settings.nacos_group)) or ""

    async def publish(self, content: str) -> bool:
        from v2.nacos import ConfigParam

        service = await self._client()
        return await service.publish_config(ConfigParam(data_id=CONFIG_DATA_ID, group=self._settings.nacos_group,
                                                        content=content))

    async def watch(self, on_change: Callable[[str], Awaitable[None] | None]) -> None:
        service = await self._client()

        async def listener(tenant: str, group: str, data_id: str, content: str) -> None:
            result = on_change(content or "")
            if asyncio.iscoroutine(result):
                await result

        await service.add_listener(CONFIG_DATA_ID, self._settings.nacos_group, listener)

    async def close(self) -> None:
        if self._service is not None:
            await self._service.shutdown()
            self._service = None
