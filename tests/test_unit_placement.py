"""Socket-node placement: least connections, ties by rendezvous hashing of the user id."""

from __future__ import annotations

from collections import Counter

from imray.domain.nodes import NodeEndpoint
from imray.domain.placement import least_connections, pick_listed

USERS = range(1, 501)


def test_empty_means_none() -> None:
    assert least_connections({}, 1) is None


def test_single_node() -> None:
    assert least_connections({"only": 10_000}, 5) == "only"


def test_picks_least_loaded() -> None:
    loads = {"a": 3, "b": 1, "c": 2}
    assert all(least_connections(loads, u) == "b" for u in USERS)
    assert least_connections({"a": 0, "b": 5}, 1) == "a"
    assert least_connections({"a": 5, "b": 0}, 1) == "b"


def test_ties_only_among_least_loaded() -> None:
    loads = {"a": 2, "b": 2, "c": 9, "d": 3}
    picks = {least_connections(loads, u) for u in USERS}
    assert picks == {"a", "b"}


def test_ties_are_deterministic_and_order_independent() -> None:
    loads = {"n1": 0, "n2": 0, "n3": 0}
    reordered = dict(reversed(list(loads.items())))
    first = [least_connections(loads, u) for u in USERS]
    assert first == [least_connections(loads, u) for u in USERS]
    assert first == [least_connections(reordered, u) for u in USERS]


def test_ties_spread_users() -> None:
    loads = {"n1": 0, "n2": 0, "n3": 0}
    counts = Counter(least_connections(loads, u) for u in USERS)
    assert set(counts) == set(loads)
    assert min(counts.values()) > 100  # roughly a third each (500 users)


def test_removing_a_node_moves_only_its_users() -> None:
    nodes = {f"node-{i}": 0 for i in range(4)}
    before = {u: least_connections(nodes, u) for u in USERS}
    gone = "node-2"
    rest = {n: load for n, load in nodes.items() if n != gone}
    after = {u: least_connections(rest, u) for u in USERS}
    moved = {u for u in USERS if before[u] != after[u]}
    assert moved == {u for u in USERS if before[u] == gone}
    assert moved  # the removed node did have users
    assert gone not in after.values()


def test_adding_a_node_moves_users_only_onto_it() -> None:
    nodes = {f"node-{i}": 0 for i in range(3)}
    before = {u: least_connections(nodes, u) for u in USERS}
    after = {u: least_connections({**nodes, "node-new": 0}, u) for u in USERS}
    moved = {u for u in USERS if before[u] != after[u]}
    assert moved and all(after[u] == "node-new" for u in moved)


def _listed(node_id: str, connections: int) -> tuple[NodeEndpoint, int]:
    return NodeEndpoint(node_id, f"ws://h/{node_id}", "h", 9101, "ray", "actor"), connections


def test_a_pick_from_the_registry_takes_the_preferred_node_when_listed_else_the_least_loaded():
    listed = [_listed("sn-1", 5), _listed("sn-2", 2), _listed("sn-3", 9)]
    assert pick_listed(listed, 7).node_id == "sn-2"
    assert pick_listed(listed, 7, prefer="sn-3").node_id == "sn-3"
    assert pick_listed(listed, 7, prefer="sn-9").node_id == "sn-2"  # gone: chosen afresh
    assert pick_listed([], 7) is None
