"""Group rules (domain.groups): who may see, add to and remove from a group, and how large it may grow.

Every path that touches a group asks these rules, so a missing group is always a 404, a stranger
always a 403 and a group too large always a 422.
"""

from __future__ import annotations

import pytest

from imray.domain.errors import DomainError, Forbidden, Invalid, NotFound
from imray.domain.groups import (
    Group,
    check_may_add,
    check_membership,
    check_no_blocks,
    check_removal,
    check_size,
    founding_members,
    joining,
    visible_group,
)

OWNER, MEMBER, STRANGER = 1, 2, 99


def group(members: list[int] | None = None, owner_id: int = OWNER) -> Group:
    return {"id": 7, "conv": "g:7", "name": "team", "owner_id": owner_id,
            "members": [OWNER, MEMBER] if members is None else members, "description": "",
            "add_policy": "everyone", "muted_all": False, "dissolved": False, "admins": [], "muted": []}


def assert_error(exc: pytest.ExceptionInfo[DomainError], kind: type[DomainError], status: int) -> None:
    assert type(exc.value) is kind
    assert exc.value.status == status


# -- check_membership ----------------------------------------------------------------------------


def test_membership_of_a_group_that_does_not_exist_is_not_found() -> None:
    with pytest.raises(NotFound) as exc:
        check_membership(None)
    assert_error(exc, NotFound, 404)


def test_a_non_member_is_forbidden() -> None:
    with pytest.raises(Forbidden) as exc:
        check_membership(False)
    assert_error(exc, Forbidden, 403)


def test_a_member_passes_the_membership_check() -> None:
    assert check_membership(True) is None


# -- visible_group -------------------------------------------------------------------------------


def test_a_missing_group_is_not_found_for_anyone() -> None:
    with pytest.raises(NotFound) as exc:
        visible_group(None, OWNER)
    assert_error(exc, NotFound, 404)


def test_a_stranger_may_not_see_a_group() -> None:
    with pytest.raises(Forbidden) as exc:
        visible_group(group(), STRANGER)
    assert_error(exc, Forbidden, 403)


@pytest.mark.parametrize("user_id", [OWNER, MEMBER])
def test_a_member_sees_the_group_itself(user_id: int) -> None:
    g = group()
    assert visible_group(g, user_id) is g


def test_an_owner_who_is_no_longer_a_member_may_not_see_the_group() -> None:
    with pytest.raises(Forbidden):
        visible_group(group(members=[MEMBER]), OWNER)


# -- founding_members ----------------------------------------------------------------------------


def test_founding_members_are_the_owner_first_then_the_others_in_order() -> None:
    assert founding_members(OWNER, [5, 3, 4], max_members=10) == [OWNER, 5, 3, 4]


def test_founding_members_list_each_user_once_even_the_owner() -> None:
    assert founding_members(OWNER, [3, OWNER, 3, 4, 4], max_members=10) == [OWNER, 3, 4]


def test_a_group_may_be_founded_by_its_owner_alone() -> None:
    assert founding_members(OWNER, [], max_members=1) == [OWNER]


def test_a_group_may_be_founded_with_exactly_the_most_members_allowed() -> None:
    assert founding_members(OWNER, [2, 3], max_members=3) == [OWNER, 2, 3]


def test_a_group_founded_with_more_members_than_allowed_is_invalid() -> None:
    with pytest.raises(Invalid) as exc:
        founding_members(OWNER, [2, 3, 4], max_members=3)
    assert_error(exc, Invalid, 422)
    assert "3" in exc.value.message


def test_duplicates_do_not_count_against_the_founding_size() -> None:
    assert founding_members(OWNER, [2, 2, 2, OWNER], max_members=2) == [OWNER, 2]


# -- check_may_add -------------------------------------------------------------------------------


def test_adding_to_a_missing_group_is_not_found() -> None:
    with pytest.raises(NotFound) as exc:
        check_may_add(None, OWNER)
    assert_error(exc, NotFound, 404)


def test_an_outsider_may_not_add_people_to_a_group() -> None:
    with pytest.raises(Forbidden) as exc:
        check_may_add(group(), STRANGER)
    assert_error(exc, Forbidden, 403)


@pytest.mark.parametrize("user_id", [OWNER, MEMBER])
def test_any_member_may_add_people_not_only_the_owner(user_id: int) -> None:
    g = group()
    assert check_may_add(g, user_id) is g


# -- joining -------------------------------------------------------------------------------------


def test_joining_lists_only_the_users_new_to_the_group() -> None:
    assert joining(group(), [MEMBER, 5, OWNER, 6], max_members=10) == [5, 6]


def test_joining_lists_each_new_user_once_in_the_order_given() -> None:
    assert joining(group(), [6, 5, 6, 5], max_members=10) == [6, 5]


def test_joining_with_nobody_new_is_an_empty_list() -> None:
    assert joining(group(), [OWNER, MEMBER], max_members=2) == []


def test_joining_up_to_exactly_the_most_members_allowed_is_accepted() -> None:
    assert joining(group(), [3, 4], max_members=4) == [3, 4]


def test_joining_that_would_grow_the_group_past_its_limit_is_invalid() -> None:
    with pytest.raises(Invalid) as exc:
        joining(group(), [3, 4, 5], max_members=4)
    assert_error(exc, Invalid, 422)


def test_users_already_in_the_group_do_not_count_against_its_limit() -> None:
    assert joining(group(), [OWNER, MEMBER, OWNER, 3], max_members=3) == [3]


def test_joining_does_not_change_the_group_it_is_given() -> None:
    g = group()
    joining(g, [3, 4], max_members=10)
    assert g["members"] == [OWNER, MEMBER]


# -- check_removal -------------------------------------------------------------------------------


def test_removing_from_a_missing_group_is_not_found() -> None:
    with pytest.raises(NotFound) as exc:
        check_removal(None, OWNER, MEMBER)
    assert_error(exc, NotFound, 404)


def test_the_owner_may_remove_any_member() -> None:
    g = group(members=[OWNER, MEMBER, 3])
    assert check_removal(g, OWNER, 3) is g


def test_the_owner_may_remove_itself() -> None:
    g = group()
    assert check_removal(g, OWNER, OWNER) is g


def test_a_member_may_remove_itself() -> None:
    g = group()
    assert check_removal(g, MEMBER, MEMBER) is g


def test_a_member_may_not_remove_another_member() -> None:
    with pytest.raises(Forbidden) as exc:
        check_removal(group(members=[OWNER, MEMBER, 3]), MEMBER, 3)
    assert_error(exc, Forbidden, 403)


def test_a_member_may_not_remove_the_owner() -> None:
    with pytest.raises(Forbidden) as exc:
        check_removal(group(), MEMBER, OWNER)
    assert_error(exc, Forbidden, 403)


def test_a_stranger_may_not_remove_itself_from_a_group_it_is_not_in() -> None:
    with pytest.raises(Forbidden) as exc:
        check_removal(group(), STRANGER, STRANGER)
    assert_error(exc, Forbidden, 403)
    assert "not a member" in exc.value.message


def test_a_stranger_may_not_remove_a_member() -> None:
    with pytest.raises(Forbidden) as exc:
        check_removal(group(), STRANGER, MEMBER)
    assert_error(exc, Forbidden, 403)
    assert "owner" in exc.value.message


def test_an_owner_who_has_left_may_no_longer_remove_members() -> None:
    with pytest.raises(Forbidden) as exc:
        check_removal(group(members=[MEMBER, 3]), OWNER, 3)
    assert_error(exc, Forbidden, 403)


def test_the_owner_removing_someone_not_in_the_group_is_left_to_the_caller() -> None:
    # The rule checks who removes, not whom: removing a non-member is not refused here.
    g = group()
    assert check_removal(g, OWNER, STRANGER) is g


# -- check_size ----------------------------------------------------------------------------------


@pytest.mark.parametrize("members", [0, 1, 5])
def test_a_group_at_or_under_its_limit_is_accepted(members: int) -> None:
    assert check_size(members, max_members=5) is None


def test_a_group_over_its_limit_is_invalid_and_says_the_limit() -> None:
    with pytest.raises(Invalid) as exc:
        check_size(6, max_members=5)
    assert_error(exc, Invalid, 422)
    assert exc.value.message == "a group has at most 5 members"
    assert exc.value.code == "bad_request"


# -- check_no_blocks (issue 16: a block holds in groups) -------------------------------------------

BLOCKER, BLOCKED = 3, 4


def test_a_newcomer_blocked_by_a_member_is_refused_and_named() -> None:
    with pytest.raises(Forbidden) as exc:
        check_no_blocks([BLOCKED], [OWNER, BLOCKER, BLOCKED], {(BLOCKER, BLOCKED)})
    assert_error(exc, Forbidden, 403)
    assert exc.value.message.startswith(f"users [{BLOCKED}] cannot join this group")


def test_a_newcomer_who_blocked_a_member_is_refused_too() -> None:
    with pytest.raises(Forbidden):
        check_no_blocks([BLOCKER], [OWNER, BLOCKED, BLOCKER], {(BLOCKER, BLOCKED)})


def test_two_newcomers_with_a_block_between_them_are_both_named() -> None:
    with pytest.raises(Forbidden) as exc:
        check_no_blocks([BLOCKER, BLOCKED], [OWNER, BLOCKER, BLOCKED], {(BLOCKER, BLOCKED)})
    assert exc.value.message.startswith(f"users [{BLOCKER}, {BLOCKED}] cannot join")


def test_a_creator_blocked_by_a_founding_member_cannot_found_the_group_with_them() -> None:
    # A new group's creator is a member, not a newcomer: the one named is whom they tried to bring in.
    with pytest.raises(Forbidden) as exc:
        check_no_blocks([BLOCKER], [BLOCKED, BLOCKER], {(BLOCKER, BLOCKED)})
    assert exc.value.message.startswith(f"users [{BLOCKER}] cannot join")


def test_a_block_between_two_existing_members_does_not_stop_others_joining() -> None:
    assert check_no_blocks([MEMBER], [BLOCKER, BLOCKED, MEMBER], {(BLOCKER, BLOCKED)}) is None


def test_a_block_with_someone_outside_the_group_does_not_count() -> None:
    assert check_no_blocks([BLOCKED], [OWNER, BLOCKED], {(BLOCKER, BLOCKED), (BLOCKED, STRANGER)}) is None


def test_no_blocks_no_refusal() -> None:
    assert check_no_blocks([MEMBER], [OWNER, MEMBER], set()) is None
