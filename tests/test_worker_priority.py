"""The service's workers run at the priority of Ray's own agents (issue 21): at Ray's default nice
15 the agents' periodic bursts preempted socket nodes and shards, and set the ack tail."""

from __future__ import annotations

import psutil


def _nice_by_title() -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for proc in psutil.process_iter(["cmdline", "nice"]):
        title = (proc.info["cmdline"] or [""])[0]
        for prefix in ("ray::SocketNode", "ray::ConversationShard", "ray::ServeReplica", "ray::DashboardAgent"):
            if title.startswith(prefix):
                found.setdefault(prefix, set()).add(proc.info["nice"])
    return found


def test_socket_nodes_shards_and_replicas_are_not_below_rays_agents(stack) -> None:
    found = _nice_by_title()
    assert set(found) >= {"ray::SocketNode", "ray::ConversationShard", "ray::ServeReplica"}, found
    agents = found.get("ray::DashboardAgent", {0})
    for role in ("ray::SocketNode", "ray::ConversationShard", "ray::ServeReplica"):
        assert max(found[role]) <= min(agents), (role, found)
        assert found[role] == {0}, (role, found)
