"""How 1:1 throughput scales with the number of conversation shards (issue 21): imray redeployed with
each count on the bench's own cluster, the closed loop run on fresh pairs, CPU read per part."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imray.settings import Settings


@dataclass
class LocalImray:
    """imray as this bench deployed it: what a redeploy with another shard count needs."""

    settings: Settings
    keys: Path

    def redeploy(self, shards: int) -> None:
        from imray import runtime

        runtime.undeploy(self.settings)
        self.settings = self.settings.replace(shards=shards)
        runtime.deploy(self.settings, self.keys)

    def stop(self) -> None:
        from imray import runtime

        runtime.undeploy(self.settings)


def shard_hosts() -> int:
    """How many Ray nodes the shards' placement group put them on."""
    from ray.util.placement_group import get_placement_group, placement_group_table

    from imray.actors.supervisor import SHARD_GROUP

    table = placement_group_table(get_placement_group(SHARD_GROUP))
    return len(set(table.get("bundles_to_node_id", {}).values()))


def scaling(local: LocalImray | None, counts: tuple[int, ...], run_one: Callable[[int], dict],
            hosts: Callable[[], int] = shard_hosts) -> dict:
    """`run_one(shards)` (a closed loop on fresh pairs: its max_rate and the rest) for each count,
    after redeploying with it; each step's rate also as a factor of the first's."""
    if local is None:
        return {"skipped": "needs the cluster this bench started (not --target)"}
    if local.settings.db_url.startswith("sqlite"):
        return {"skipped": "SQLite has a single writer, so one shard: run this on a database server "
                           "(make bench-real)"}
    steps = []
    for count in counts:
        local.redeploy(count)
        step = {"shards": count, "shard_hosts": hosts(), **run_one(count)}
        steps.append(step)
    first = steps[0]["max_rate"] if steps else 0
    for step in steps:
        step["scaling"] = round(step["max_rate"] / first, 2) if first else None
    return {"steps": steps}
