"""The bench's shard scaling: a redeploy per count, each rate as a factor of the first's."""

from __future__ import annotations

from pathlib import Path

from imray.bench.shards import LocalImray, scaling
from imray.settings import Settings


class Redeploys(LocalImray):
    def __init__(self, database_url: str) -> None:
        super().__init__(Settings(database_url=database_url), Path("/keys"))
        self.counts: list[int] = []

    def redeploy(self, shards: int) -> None:
        self.counts.append(shards)
        self.settings = self.settings.replace(shards=shards)


def test_each_count_runs_after_its_own_redeploy_and_is_scaled_to_the_first():
    local = Redeploys("mysql+pymysql://imray@127.0.0.1/imray")
    seen: list[tuple[int, int]] = []

    def run_one(count: int) -> dict:
        seen.append((count, local.settings.shards))  # deployed with that count when it runs
        return {"max_rate": {1: 1000.0, 2: 1500.0, 4: 1200.0}[count]}

    got = scaling(local, (1, 2, 4), run_one, hosts=lambda: 2)
    assert local.counts == [1, 2, 4] and seen == [(1, 1), (2, 2), (4, 4)]
    assert [(s["shards"], s["scaling"], s["shard_hosts"]) for s in got["steps"]] == [(1, 1.0, 2), (2, 1.5, 2),
                                                                                      (4, 1.2, 2)]


def test_sqlite_and_a_target_are_skipped_with_the_reason():
    assert "single writer" in scaling(Redeploys(""), (1, 2), lambda n: {})["skipped"]
    assert "not --target" in scaling(None, (1, 2), lambda n: {})["skipped"]
