"""What every Serve deployment shares: options and how domain errors cross a DeploymentHandle."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from ray.exceptions import RayTaskError

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


async def membership_changed(settings: Settings, conv: str) -> None:
    """The owning ConversationShard caches who may read and write `conv`: tell it before answering."""
    import ray

    from imray.actors import names

    shard = ray.get_actor(names.owner_of(conv, settings.shard_count), namespace=settings.namespace)
    await shard.forget.remote([conv])
