"""The readiness verdict from what each part answered, without Ray."""

from __future__ import annotations

from imray.domain.readiness import PartsSeen


def test_ready_needs_the_database_a_shard_and_a_socket_node() -> None:
    assert PartsSeen(True, 2, 2, 2, 2).report()["status"] == "ready"
    assert PartsSeen(True, 1, 2, 1, 2).ready and PartsSeen(True, 1, 2, 1, 2).report()["status"] == "degraded"
    for seen in (PartsSeen(False, 2, 2, 2, 2), PartsSeen(True, 0, 2, 2, 2), PartsSeen(True, 2, 2, 0, 2)):
        assert not seen.ready and seen.report()["status"] == "unavailable"


def test_the_report_says_which_part_is_away() -> None:
    assert PartsSeen(False, 1, 3, 0, 2).report() == {
        "status": "unavailable", "database": "unavailable", "shards": {"up": 1, "of": 3},
        "socket_nodes": {"up": 0, "of": 2}}
