"""What the Serve deployments share: options, domain errors across a DeploymentHandle, membership news."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypedDict, TypeVar

import orjson
from ray.exceptions import RayError, RayTaskError

from imray.adapters.named_actors import ActorMissing, NamedActors
from imray.backends import Backends
from imray.domain.errors import BadRequest, Conflict, DomainError, Forbidden, NotFound, TooLarge, Unavailable
from imray.domain.messaging import ChangeItem
from imray.logs import serve_logging, tag_serve_records
from imray.settings import Settings

T = TypeVar("T")
log = logging.getLogger("imray.web")


def deployment_options(settings: Settings, name: str) -> dict[str, Any]:
    return {
        "name": name,
        # Serve's default of 5 collapses under load, and an open Serve WebSocket would hold a slot.
        "max_ongoing_requests": settings.serve_max_ongoing_requests,
        "ray_actor_options": {"num_cpus": 0},
        "logging_config": serve_logging(settings),
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


class ChangeResult(TypedDict):
    """What a change to a message came to (issue 18): the seq'd event that records it, or, for a
    change that changed nothing (a reaction already there), `changed` false with seq 0."""

    id: str  # the caller's key
    conv: str
    target: int
    seq: int
    msg_id: str
    ts: int
    changed: bool


_ERRORS: dict[str, type[DomainError]] = {"forbidden": Forbidden, "not_found": NotFound, "bad_request": BadRequest,
                                         "too_large": TooLarge, "conflict": Conflict}


async def publish_events(actors: NamedActors, conv: str) -> None:
    """Have the owning shard commit `conv`'s group events waiting in the outbox (`storage.outbox`),
    membership read again, before the caller answers. A shard that does not answer in 10 s leaves
    them to its sweep (the change is stored; its event follows within seconds)."""
    try:
        await asyncio.wait_for(actors.owner_of(conv).publish.remote([conv]), 10)
    except (TimeoutError, RayError) as exc:
        log.warning("the events of %s wait for the shard's sweep: %s", conv, type(exc).__name__)


async def submit_change(actors: NamedActors, item: ChangeItem) -> ChangeResult:
    """A change to a stored message, through the shard that owns its conversation (which decides
    who may make it); its refusals come back as DomainErrors, an unreachable shard as Unavailable."""
    try:
        [outcome] = await asyncio.wait_for(actors.owner_of(item.conv).send.remote([item]), 15)
    except (TimeoutError, RayError, ActorMissing) as exc:
        raise Unavailable("the conversation's shard did not answer; send the change again") from exc
    if outcome.error is not None:
        code, message = outcome.error
        raise _ERRORS.get(code, Unavailable)(message)
    assert outcome.ack is not None
    ack = orjson.loads(outcome.ack)
    return {"id": item.key, "conv": item.conv, "target": item.target, "seq": ack["seq"], "msg_id": ack["msg_id"],
            "ts": ack["ts"], "changed": ack["seq"] > 0}


class BackendsService:
    """The lifecycle of a Serve deployment whose only setup is its `Backends`: `__init__` builds it
    and awaits `start()`; Serve awaits `__del__` when the replica shuts down."""

    _backends: Backends

    async def start(self) -> None:
        tag_serve_records()
        await self._backends.start()

    async def stop(self) -> None:
        await self._backends.stop()

    async def __del__(self) -> None:
        await self.stop()
