"""Service discovery as imray's processes see it: registering themselves, listing socket nodes.

With Nacos, socket nodes and gateway replicas are Nacos instances (`adapters.nacos`). Without it the
supervisor's own table is the only registry: registering is nothing, and the directory has no
outside view to offer.
"""

from __future__ import annotations

from typing import Protocol

from imray.domain.nodes import NodeEndpoint


class Registration(Protocol):
    """One process's entry in the outside registry, from `register` until `deregister`."""

    async def register(self, metadata: dict[str, str]) -> None: ...
    async def update(self, metadata: dict[str, str]) -> None: ...  # re-registers only on a change
    async def deregister(self) -> None: ...


class Directory(Protocol):
    """The socket nodes an outside registry shows."""

    async def node_ids(self) -> set[str] | None: ...  # None: no outside view (or it does not answer)
    # Each listed node with the connection count it last published; None as for node_ids.
    async def endpoints(self) -> list[tuple[NodeEndpoint, int]] | None: ...
    async def close(self) -> None: ...


class Unregistered:
    """The embedded stack: nobody outside the cluster to tell."""

    async def register(self, metadata: dict[str, str]) -> None:
        return None

    async def update(self, metadata: dict[str, str]) -> None:
        return None

    async def deregister(self) -> None:
        return None


class NoDirectory:
    """The embedded stack: every live node the supervisor knows is a candidate."""

    async def node_ids(self) -> set[str] | None:
        return None

    async def endpoints(self) -> list[tuple[NodeEndpoint, int]] | None:
        return None

    async def close(self) -> None:
        return None
