"""Group administration rules (domain.groups, issue 18): roles, mutes, settings, transfer, dissolution.

The owner does everything; admins manage plain members and the settings; members add people only
while the add policy is "everyone"; a dissolved group takes no change (409) but stays readable.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Connection

from imray.domain.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from imray.domain.groups import (
    Group,
    check_may_add,
    check_may_dissolve,
    check_may_manage,
    check_may_mute,
    check_may_set_role,
    check_may_transfer,
    check_name,
    check_removal,
    role_of,
    settings_change,
    successor,
    visible_group,
)
from imray.storage import groups as group_store
from imray.storage import outbox
from imray.storage.db import Database
from imray.storage.schema import group_members

OWNER, ADMIN, ADMIN2, MEMBER, MEMBER2, STRANGER = 1, 2, 3, 4, 5, 99


def group(**changes: object) -> Group:
    g: Group = {"id": 7, "conv": "g:7", "name": "team", "owner_id": OWNER,
                "members": [OWNER, ADMIN, ADMIN2, MEMBER, MEMBER2], "description": "", "add_policy": "everyone",
                "muted_all": False, "dissolved": False, "admins": [ADMIN, ADMIN2], "muted": []}
    g.update(changes)  # type: ignore[typeddict-item]
    return g


def refused(kind: type[DomainError], status: int, check, *args: object) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(kind) as exc:
        check(*args)
    assert type(exc.value) is kind and exc.value.status == status


def test_roles_are_owner_admin_member_or_none_for_a_stranger() -> None:
    g = group()
    assert [role_of(g, u) for u in (OWNER, ADMIN, MEMBER, STRANGER)] == ["owner", "admin", "member", None]


# -- adding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("user_id", [OWNER, ADMIN, MEMBER])
def test_everyone_in_the_group_adds_people_while_the_policy_is_everyone(user_id: int) -> None:
    assert check_may_add(group(), user_id)["id"] == 7


@pytest.mark.parametrize("user_id", [OWNER, ADMIN])
def test_owner_and_admins_still_add_people_when_the_policy_is_admins(user_id: int) -> None:
    assert check_may_add(group(add_policy="admins"), user_id)["id"] == 7


def test_a_member_may_not_add_people_when_the_policy_is_admins() -> None:
    refused(Forbidden, 403, check_may_add, group(add_policy="admins"), MEMBER)


def test_a_stranger_adding_to_a_dissolved_group_is_still_forbidden_not_conflict() -> None:
    refused(Forbidden, 403, check_may_add, group(dissolved=True), STRANGER)


# -- removing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [ADMIN, MEMBER])
def test_the_owner_removes_admins_and_members(target: int) -> None:
    assert check_removal(group(), OWNER, target)["id"] == 7


def test_an_admin_removes_a_plain_member() -> None:
    assert check_removal(group(), ADMIN, MEMBER)["id"] == 7


@pytest.mark.parametrize("target", [OWNER, ADMIN2])
def test_an_admin_may_not_remove_the_owner_or_another_admin(target: int) -> None:
    refused(Forbidden, 403, check_removal, group(), ADMIN, target)


def test_a_member_may_not_remove_another_member() -> None:
    refused(Forbidden, 403, check_removal, group(), MEMBER, MEMBER2)


@pytest.mark.parametrize("user_id", [OWNER, ADMIN, MEMBER])
def test_anyone_in_the_group_may_leave_it(user_id: int) -> None:
    assert check_removal(group(), user_id, user_id)["id"] == 7


def test_nobody_leaves_or_is_removed_from_a_dissolved_group() -> None:
    refused(Conflict, 409, check_removal, group(dissolved=True), MEMBER, MEMBER)
    refused(Conflict, 409, check_removal, group(dissolved=True), OWNER, MEMBER)


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("user_id", [OWNER, ADMIN])
def test_owner_and_admins_manage_the_settings(user_id: int) -> None:
    assert check_may_manage(group(), user_id)["id"] == 7


def test_a_member_may_not_manage_the_settings() -> None:
    refused(Forbidden, 403, check_may_manage, group(), MEMBER)


def test_a_stranger_managing_a_missing_or_foreign_group_gets_404_or_403() -> None:
    refused(NotFound, 404, check_may_manage, None, STRANGER)
    refused(Forbidden, 403, check_may_manage, group(), STRANGER)


def test_a_dissolved_group_refuses_a_change_of_settings_even_by_its_owner() -> None:
    refused(Conflict, 409, check_may_manage, group(dissolved=True), OWNER)


def test_a_dissolved_group_stays_readable_to_its_members() -> None:
    assert visible_group(group(dissolved=True), MEMBER)["dissolved"] is True


def test_a_settings_change_lists_only_the_fields_that_differ() -> None:
    wanted = {"name": "team", "description": "new", "add_policy": None, "muted_all": True}
    assert settings_change(group(), wanted) == {"description": "new", "muted_all": True}


def test_a_settings_change_to_the_same_values_is_empty() -> None:
    assert settings_change(group(), {"name": "team", "description": "", "add_policy": "everyone"}) == {}


@pytest.mark.parametrize("name", ["", "x" * 65, "bad\u202ename", "tab\tname", "nul\x00", "line\nbreak"])
def test_odd_or_wrongly_sized_names_are_invalid(name: str) -> None:
    refused(Invalid, 422, settings_change, group(), {"name": name})


@pytest.mark.parametrize("text", ["x" * 513, "\u2066isolate", "bell\x07"])
def test_odd_or_oversized_descriptions_are_invalid(text: str) -> None:
    refused(Invalid, 422, settings_change, group(), {"description": text})


def test_a_description_may_hold_line_breaks_emoji_and_any_script() -> None:
    text = "第一行\nzweite Zeile 👋🏽 " + "x" * 480
    assert settings_change(group(), {"description": text}) == {"description": text}


def test_a_name_of_exactly_64_characters_is_accepted() -> None:
    assert check_name("é" * 64) == "é" * 64


def test_an_unknown_add_policy_is_invalid() -> None:
    refused(Invalid, 422, settings_change, group(), {"add_policy": "nobody"})


# -- mutes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("user_id", [OWNER, ADMIN])
def test_owner_and_admins_mute_plain_members(user_id: int) -> None:
    assert check_may_mute(group(), user_id, MEMBER)["id"] == 7


def test_the_owner_mutes_an_admin_but_an_admin_does_not() -> None:
    assert check_may_mute(group(), OWNER, ADMIN)["id"] == 7
    refused(Forbidden, 403, check_may_mute, group(), ADMIN, ADMIN2)


def test_nobody_mutes_the_owner() -> None:
    refused(Forbidden, 403, check_may_mute, group(), OWNER, OWNER)
    refused(Forbidden, 403, check_may_mute, group(), ADMIN, OWNER)


def test_a_member_may_not_mute_anyone() -> None:
    refused(Forbidden, 403, check_may_mute, group(), MEMBER, MEMBER2)


def test_muting_someone_not_in_the_group_is_not_found() -> None:
    refused(NotFound, 404, check_may_mute, group(), OWNER, STRANGER)


# -- roles, transfer, dissolution -----------------------------------------------------------------


def test_only_the_owner_sets_roles() -> None:
    assert check_may_set_role(group(), OWNER, MEMBER)["id"] == 7
    refused(Forbidden, 403, check_may_set_role, group(), ADMIN, MEMBER)
    refused(Forbidden, 403, check_may_set_role, group(), MEMBER, MEMBER2)


def test_the_owner_role_changes_only_by_transfer() -> None:
    refused(Invalid, 422, check_may_set_role, group(), OWNER, OWNER)


def test_setting_the_role_of_a_non_member_is_not_found() -> None:
    refused(NotFound, 404, check_may_set_role, group(), OWNER, STRANGER)


def test_only_the_owner_transfers_and_only_to_a_member() -> None:
    assert check_may_transfer(group(), OWNER, MEMBER)["id"] == 7
    refused(Forbidden, 403, check_may_transfer, group(), ADMIN, ADMIN)
    refused(NotFound, 404, check_may_transfer, group(), OWNER, STRANGER)


def test_only_the_owner_dissolves_and_again_is_no_conflict() -> None:
    refused(Forbidden, 403, check_may_dissolve, group(), ADMIN)
    assert check_may_dissolve(group(dissolved=True), OWNER)["dissolved"] is True


def test_a_dissolved_group_refuses_roles_transfer_and_mutes() -> None:
    g = group(dissolved=True)
    refused(Conflict, 409, check_may_set_role, g, OWNER, MEMBER)
    refused(Conflict, 409, check_may_transfer, g, OWNER, MEMBER)
    refused(Conflict, 409, check_may_mute, g, OWNER, MEMBER)


def test_the_longest_standing_admin_succeeds_before_any_member() -> None:
    assert successor([MEMBER, ADMIN2, ADMIN], [ADMIN, ADMIN2]) == ADMIN2


def test_without_admins_the_longest_standing_member_succeeds() -> None:
    assert successor([MEMBER2, MEMBER], []) == MEMBER2


def test_nobody_succeeds_in_an_empty_group() -> None:
    assert successor([], []) is None


# -- storage: each change and the events it queues ------------------------------------------------


def test_each_stored_change_queues_exactly_its_events_and_keeps_the_owner_row_in_step(sqlite_db: Database) -> None:
    def run(conn: Connection) -> tuple[list[dict], Group | None, list[str]]:
        made = group_store.create_group(conn, "team", 30, [10, 20, 30])
        gid = made["id"]
        assert made["members"] == [30, 10, 20]  # the owner first, then by id
        group_store.add_members(conn, gid, [40, 20], actor=10)
        group_store.set_role(conn, gid, 30, 40, "admin")
        group_store.set_muted(conn, gid, 30, 40, True)
        group_store.update_settings(conn, gid, 40, {})  # nothing changed: no event
        group_store.update_settings(conn, gid, 40, {"name": "crew", "muted_all": True})
        group_store.remove_member(conn, gid, 20, actor=40)
        group_store.remove_member(conn, gid, 30)  # the owner leaves: the muted admin 40 succeeds, unmuted
        group_store.transfer(conn, gid, 40, 10, muted=False)
        group_store.dissolve(conn, gid, 10)
        roles = [r.role for r in conn.execute(select(group_members.c.role).where(group_members.c.group_id == gid)
                                              .order_by(group_members.c.user_id))]
        return [{"actor": e.actor, **e.event} for e in outbox.pending_for(conn, [made["conv"]])], \
            group_store.group(conn, gid, lock=True), roles

    events, stored, roles = sqlite_db.transaction(run)
    assert [(e["actor"], e["type"]) for e in events] == [
        (30, "created"), (10, "joined"), (30, "role"), (30, "muted"), (40, "updated"), (40, "removed"),
        (30, "left"), (30, "muted"), (30, "owner"), (40, "owner"), (10, "dissolved")]
    assert events[1]["user_ids"] == [40] and events[4] == {"actor": 40, "type": "updated", "name": "crew",
                                                             "muted_all": True}
    assert stored is not None
    assert {k: stored[k] for k in ("name", "owner_id", "members", "admins", "muted", "muted_all", "dissolved")} == {
        "name": "crew", "owner_id": 10, "members": [10, 40], "admins": [40], "muted": [], "muted_all": True,
        "dissolved": True}
    assert roles == ["owner", "admin"]  # users 10 and 40: exactly one owner row, the one chat_groups names


def test_removing_someone_not_in_the_group_queues_nothing(sqlite_db: Database) -> None:
    def run(conn: Connection) -> tuple[bool, int]:
        made = group_store.create_group(conn, "team", 1, [2])
        return group_store.remove_member(conn, made["id"], 99, actor=1), len(outbox.pending_for(conn, [made["conv"]]))

    assert sqlite_db.transaction(run) == (False, 1)  # the "created" event only
