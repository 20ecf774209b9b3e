"""Groups: what one is, and who may do what with it.

Every path that touches a group (its page, its members, its history) asks these rules, so a
stranger gets the same 404 or 403 everywhere. They decide over values already read; the callers
read and write the group in one transaction around them.
"""

from __future__ import annotations

from typing import TypedDict

from imray.domain.errors import Forbidden, Invalid, NotFound


class Group(TypedDict):
    """A group as stored and as the API shows it (PROTOCOL §3)."""

    id: int
    conv: str
    name: str
    owner_id: int
    members: list[int]


def _existing(group: Group | None) -> Group:
    if group is None:
        raise NotFound("no such group")
    return group


def check_membership(member: bool | None) -> None:
    """`member`: whether the user is in the group, None when there is no such group."""
    if member is None:
        raise NotFound("no such group")
    if not member:
        raise Forbidden("you are not a member of this group")


def visible_group(group: Group | None, user_id: int) -> Group:
    """The group, if `user_id` may see it: only its members may."""
    group = _existing(group)
    check_membership(user_id in group["members"])
    return group


def founding_members(owner_id: int, members: list[int], max_members: int) -> list[int]:
    """The owner first, then the others once each, in the order given."""
    wanted = list(dict.fromkeys([owner_id, *members]))
    check_size(len(wanted), max_members)
    return wanted


def check_may_add(group: Group | None, user_id: int) -> Group:
    """Any member may add people (as in most chat apps); outsiders may not."""
    group = _existing(group)
    if user_id not in group["members"]:
        raise Forbidden("only members can add people to a group")
    return group


def joining(group: Group, user_ids: list[int], max_members: int) -> list[int]:
    """Who of `user_ids` is new to the group (each once); refused if the group would grow too large."""
    new = [u for u in dict.fromkeys(user_ids) if u not in group["members"]]
    check_size(len(group["members"]) + len(new), max_members)
    return new


def check_removal(group: Group | None, user_id: int, member_id: int) -> Group:
    """The owner removes anyone; a member removes itself."""
    group = _existing(group)
    if user_id != group["owner_id"] and user_id != member_id:
        raise Forbidden("only the owner can remove other members")
    if user_id not in group["members"]:
        raise Forbidden("you are not a member of this group")
    return group


def check_no_blocks(newcomers: list[int], members: list[int], blocks: set[tuple[int, int]]) -> None:
    """A group never gains a member who has a block (either way) with someone in it, so a block cannot
    be routed around through a group: not by the blocked user, nor by anyone adding for them.

    `members`: everyone in the group once the newcomers are in (a new group's creator is a member, not
    a newcomer); `blocks`: (blocker, blocked) pairs, of which those between two members count. A block
    made while both already share a group keeps both there, and the blocker gets the blocked user's
    messages hidden (`messaging.hidden`) and none of their typing or receipts.
    """
    fresh, present = set(newcomers), set(members)
    refused = sorted({u for pair in blocks if set(pair) <= present for u in pair if u in fresh})
    if refused:
        raise Forbidden(f"users {refused} cannot join this group: a block stands between them and a member")


def check_size(members: int, max_members: int) -> None:
    if members > max_members:
        raise Invalid(f"a group has at most {max_members} members")
