"""PresenceTable (no Ray): which socket nodes hold live sessions of which users."""

from __future__ import annotations

from imray.actors.presence import PresenceTable


def test_a_user_with_a_session_on_a_node_is_found_there() -> None:
    table = PresenceTable()
    table.apply("sn-1", [(7, +1)])
    assert table.lookup([7]) == {"sn-1": [7]}
    assert table.online([7]) == [7]


def test_a_user_stays_online_until_the_last_session_on_a_node_closes() -> None:
    table = PresenceTable()
    table.apply("sn-1", [(7, +1), (7, +1)])
    table.apply("sn-1", [(7, -1)])
    assert table.lookup([7]) == {"sn-1": [7]}
    table.apply("sn-1", [(7, -1)])
    assert table.lookup([7]) == {}
    assert table.online([7]) == []  # the emptied entry is gone, not kept at zero


def test_a_close_without_an_open_never_takes_a_count_below_zero() -> None:
    table = PresenceTable()
    table.apply("sn-1", [(7, -1)])  # a close reported for a session this table never saw
    assert table.online([7]) == []
    table.apply("sn-1", [(7, +1)])  # the next open counts from zero, not from -1
    assert table.lookup([7]) == {"sn-1": [7]}
    table.apply("sn-1", [(8, +1), (8, -1), (8, -1), (8, +1)])
    assert table.online([8]) == [8]


def test_sessions_on_two_nodes_are_counted_per_node() -> None:
    table = PresenceTable()
    table.apply("sn-1", [(7, +1)])
    table.apply("sn-2", [(7, +1)])
    table.apply("sn-1", [(7, -1)])
    assert table.lookup([7]) == {"sn-2": [7]}


def test_lookup_groups_the_asked_users_by_node_in_the_order_asked() -> None:
    table = PresenceTable()
    table.apply("sn-1", [(1, +1), (3, +1)])
    table.apply("sn-2", [(2, +1), (3, +1)])
    assert table.lookup([3, 2, 1, 99]) == {"sn-1": [3, 1], "sn-2": [3, 2]}
    assert table.lookup([1]) == {"sn-1": [1]}  # only the users asked about
    assert table.lookup([99]) == {}


def test_online_keeps_the_users_with_any_session_in_the_order_asked() -> None:
    table = PresenceTable()
    table.apply("sn-1", [(1, +1)])
    table.apply("sn-2", [(3, +1)])
    assert table.online([3, 2, 1]) == [3, 1]


def test_replace_node_sets_what_a_node_reports_and_leaves_other_nodes_alone() -> None:
    table = PresenceTable()
    table.apply("sn-1", [(1, +1), (2, +1)])
    table.apply("sn-2", [(2, +1)])
    table.replace_node("sn-1", {2: 1, 3: 2, 4: 0})  # a resync: the node's own count of its sessions
    assert table.lookup([1, 2, 3, 4]) == {"sn-1": [2, 3], "sn-2": [2]}
    assert table.online([1, 4]) == []  # gone from sn-1, and a zero count is no session
    table.apply("sn-1", [(3, -1)])
    assert table.lookup([3]) == {"sn-1": [3]}  # replaced with 2 sessions: one close leaves one


def test_drop_node_forgets_a_node_and_users_only_there_go_offline() -> None:
    table = PresenceTable()
    table.apply("sn-1", [(1, +1), (2, +1)])
    table.apply("sn-2", [(2, +1)])
    table.drop_node("sn-1")
    assert table.lookup([1, 2]) == {"sn-2": [2]}
    assert table.online([1, 2]) == [2]
    table.drop_node("sn-9")  # an unknown node: nothing to forget
    assert table.online([2]) == [2]
