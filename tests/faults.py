"""Faults the client tests inject: a socket node's process killed as a crash would, and its return."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from support import process_alive

from imray import runtime
from imray.adapters.named_actors import RayNamedActors


async def kill_socket_node(stack, node_id: str, wait_replaced_s: float = 30.0) -> float:
    """SIGKILL socket node `node_id`'s process (its sessions drop with it), then wait until the
    supervisor has a live replacement under the same id. Returns the seconds the node was away."""
    actors = RayNamedActors(stack.settings.namespace, stack.settings.shard_count)
    before = {n.node_id: n.endpoint.actor_id for n in await asyncio.to_thread(runtime.status, stack.settings)}
    pid = await actors.socket_node(node_id).__ray_call__.remote(lambda _self: os.getpid())
    os.kill(pid, signal.SIGKILL)
    died = time.monotonic()
    while process_alive(pid):
        assert time.monotonic() - died < 10, f"socket node {node_id} (pid {pid}) alive 10 s after SIGKILL"
        await asyncio.sleep(0.05)
    while True:
        nodes = {n.node_id: n for n in await asyncio.to_thread(runtime.status, stack.settings)}
        node = nodes.get(node_id)
        if node is not None and node.alive and node.endpoint.actor_id != before.get(node_id):
            return time.monotonic() - died
        assert time.monotonic() - died < wait_replaced_s, f"{node_id} not replaced within {wait_replaced_s} s"
        await asyncio.sleep(0.25)
