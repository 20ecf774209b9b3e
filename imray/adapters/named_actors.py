"""Finding imray's named actors on the Ray cluster: the one place that knows their names.

Deployments and actors ask this port for the supervisor, a conversation's shard, a socket node or
the embedded presence actor, instead of calling `ray.get_actor` with a name of their own making.
"""

from __future__ import annotations

from typing import Any, Protocol

from imray.domain.conversations import shard_of

SUPERVISOR = "imray-supervisor"
PRESENCE = "imray-presence"
LOGIN_FAILURES = "imray-login-failures"  # the embedded stack's failed-login counts

ActorHandle = Any  # ray.actor.ActorHandle: untyped, and this module must import without Ray


class ActorMissing(LookupError):
    """No live actor by that name (not started yet, or gone for good)."""


def shard_name(index: int) -> str:
    return f"imray-shard-{index}"


def socket_node_name(node_id: str) -> str:
    return f"imray-socket-{node_id}"


class NamedActors(Protocol):
    """Handles to imray's named actors; each method raises ActorMissing when there is none."""

    namespace: str

    def supervisor(self) -> ActorHandle: ...
    def shard(self, index: int) -> ActorHandle: ...
    def owner_of(self, conv: str) -> ActorHandle: ...
    def socket_node(self, node_id: str) -> ActorHandle: ...
    def presence(self) -> ActorHandle: ...


class RayNamedActors:
    """`ray.get_actor` in imray's namespace. Lookups are not cached: a restarted actor keeps its
    name, and a handle looked up before its restart still reaches it (Ray follows the restart)."""

    def __init__(self, namespace: str, shard_count: int) -> None:
        self.namespace = namespace
        self._shard_count = shard_count

    def _get(self, name: str) -> ActorHandle:
        import ray

        try:
            return ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            raise ActorMissing(name) from None

    def supervisor(self) -> ActorHandle:
        return self._get(SUPERVISOR)

    def shard(self, index: int) -> ActorHandle:
        return self._get(shard_name(index))

    def owner_of(self, conv: str) -> ActorHandle:
        return self._get(shard_name(shard_of(conv, self._shard_count)))

    def socket_node(self, node_id: str) -> ActorHandle:
        return self._get(socket_node_name(node_id))

    def presence(self) -> ActorHandle:
        return self._get(PRESENCE)
