"""What the Serve deployments share: options, domain errors across a DeploymentHandle, membership news."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from ray.exceptions import RayTaskError

from imray.adapters.named_actors import NamedActors
from imray.backends import Backends
from imray.domain.errors import DomainError
from imray.settings import Settings

T = TypeVar("T")


def deployment_options(settings: Settings, name: str) -> dict[str, Any]:
    return {
        "name": name,
        # Serve's default of 5 collapses under load, and an open Serve WebSocket would hold a slot.
        "max_ongoing_requests": settings.serve_max_ongoing_requests,
        "ray_actor_options": {"num_cpus": 0},
        "logging_config": {"enable_access_log": False, "log_level": "WARNING"},
        "health_check_period_s": 2,
    }


async def call(response: Awaitable[T]) -> T:
    """Await a handle call; a DomainError raised by the service comes out as itself."""
    try:
        return await response
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, DomainError):
            raise cause from None
        raise


async def membership_changed(actors: NamedActors, conv: str) -> None:
    """The owning ConversationShard caches who may read and write `conv`: tell it before answering."""
    await actors.owner_of(conv).forget.remote([conv])


class BackendsService:
    """The lifecycle of a Serve deployment whose only setup is its `Backends`: `__init__` builds it
    and awaits `start()`; Serve awaits `__del__` when the replica shuts down."""

    _backends: Backends

    async def start(self) -> None:
        await self._backends.start()

    async def stop(self) -> None:
        await self._backends.stop()

    async def __del__(self) -> None:
        await self.stop()
