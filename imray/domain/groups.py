"""Groups: what one is, and who may do what with it.

Every path that touches a group (its page, its members, its history) asks these rules, so a
stranger gets the same 404 or 403 everywhere. They decide over values already read; the callers
read and write the group in one transaction around them.

Roles (issue 18): the owner does everything; admins add, remove and mute members (not the owner nor
other admins), rename and describe, and set the add policy and muted_all; only the owner sets roles,
transfers ownership and dissolves. A dissolved group refuses every change (409) and stays readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from imray.domain.accounts import odd_character
from imray.domain.errors import Conflict, Forbidden, Invalid, NotFound

Role = Literal["owner", "admin", "member"]
ADD_POLICIES = ("everyone", "admins")
MAX_NAME = 64
MAX_DESCRIPTION = 512


class Group(TypedDict):
    """A group as stored and as the API shows it: PROTOCOL §3's fields, then issue 18's
    (`admins` and `muted` list member ids in ascending order)."""

    id: int
    conv: str
    name: str
    owner_id: int
    members: list[int]
    description: str
    add_policy: str  # "everyone" | "admins": who may add members besides owner and admins
    muted_all: bool  # only the owner and admins write
    dissolved: bool
    admins: list[int]
    muted: list[int]


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


def role_of(group: Group, user_id: int) -> Role | None:
    """The user's role in the group, None for a non-member."""
    if user_id == group["owner_id"] and user_id in group["members"]:
        return "owner"
    if user_id in group["admins"]:
        return "admin"
    return "member" if user_id in group["members"] else None


def _managers(group: Group) -> set[int]:
    return {group["owner_id"], *group["admins"]}


def _changeable(group: Group | None, user_id: int) -> Group:
    """The group, if `user_id` is a member and it still takes changes."""
    group = visible_group(group, user_id)
    if group["dissolved"]:
        raise Conflict("this group was dissolved: it takes no more changes")
    return group


def _target(group: Group, member_id: int) -> None:
    if member_id not in group["members"]:
        raise NotFound("that user is not a member")


def check_may_add(group: Group | None, user_id: int) -> Group:
    """Owner and admins add people; members too while the add policy is "everyone"; outsiders never."""
    group = _existing(group)
    if user_id not in group["members"]:
        raise Forbidden("only members can add people to a group")
    group = _changeable(group, user_id)
    if group["add_policy"] == "admins" and user_id not in _managers(group):
        raise Forbidden("only the owner and admins can add people to this group")
    return group


def joining(group: Group, user_ids: list[int], max_members: int) -> list[int]:
    """Who of `user_ids` is new to the group (each once); refused if the group would grow too large."""
    new = [u for u in dict.fromkeys(user_ids) if u not in group["members"]]
    check_size(len(group["members"]) + len(new), max_members)
    return new


def check_removal(group: Group | None, user_id: int, member_id: int) -> Group:
    """Anyone leaves; the owner removes anyone; an admin removes members who are neither owner nor
    admin. Removing someone not in the group is left to the caller (404)."""
    group = _existing(group)
    if user_id != member_id and user_id not in _managers(group):
        raise Forbidden("only the owner and admins can remove other members")
    group = _changeable(group, user_id)
    if user_id != member_id and user_id != group["owner_id"] and member_id in _managers(group):
        raise Forbidden("an admin cannot remove the owner or another admin")
    return group


def check_may_manage(group: Group | None, user_id: int) -> Group:
    """Rename, describe, set the add policy and muted_all: the owner and admins."""
    group = _changeable(group, user_id)
    if user_id not in _managers(group):
        raise Forbidden("only the owner and admins can change the group's settings")
    return group


def check_may_mute(group: Group | None, user_id: int, member_id: int) -> Group:
    """The owner mutes anyone but itself; an admin mutes members who are neither owner nor admin."""
    group = _changeable(group, user_id)
    if user_id not in _managers(group):
        raise Forbidden("only the owner and admins can mute members")
    _target(group, member_id)
    if member_id == group["owner_id"]:
        raise Forbidden("the owner cannot be muted")
    if user_id != group["owner_id"] and member_id in group["admins"]:
        raise Forbidden("an admin cannot mute another admin")
    return group


def _owner_only(group: Group | None, user_id: int, what: str) -> Group:
    group = _changeable(group, user_id)
    if user_id != group["owner_id"]:
        raise Forbidden(f"only the owner can {what}")
    return group


def check_may_set_role(group: Group | None, user_id: int, member_id: int) -> Group:
    """Only the owner makes members admins or admins members; its own role changes only by transfer."""
    group = _owner_only(group, user_id, "set roles")
    _target(group, member_id)
    if member_id == group["owner_id"]:
        raise Invalid("the owner's role changes only by transferring ownership")
    return group


def check_may_transfer(group: Group | None, user_id: int, member_id: int) -> Group:
    """Only the owner hands the group to another member (the old owner becomes an admin)."""
    group = _owner_only(group, user_id, "transfer ownership")
    _target(group, member_id)
    return group


def check_may_dissolve(group: Group | None, user_id: int) -> Group:
    """Only the owner dissolves; dissolving a dissolved group again changes nothing (no 409)."""
    group = visible_group(group, user_id)
    if user_id != group["owner_id"]:
        raise Forbidden("only the owner can dissolve the group")
    return group


def successor(members_in_order: list[int], admins: list[int]) -> int | None:
    """Who owns the group when its owner leaves: the longest-standing admin, else member; None when
    nobody is left. `members_in_order`: the remaining members, longest-standing first."""
    chosen = [m for m in members_in_order if m in admins] or members_in_order
    return chosen[0] if chosen else None


def check_text(field: str, text: str, most: int, least: int = 0, newlines: bool = False) -> str:
    """A name or description as stored: `least`..`most` characters, no control or bidirectional
    override characters (a description may hold line breaks)."""
    if not least <= len(text) <= most:
        raise Invalid(f"{field} must be {least} to {most} characters")
    odd = odd_character(text.replace("\n", "") if newlines else text)
    if odd is not None:
        raise Invalid(f"{field} may not contain the character U+{ord(odd):04X}")
    return text


def check_name(name: str) -> str:
    return check_text("name", name, MAX_NAME, least=1)


def settings_change(group: Group, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """Of the settings asked for (name, description, add_policy, muted_all; None: unchanged), those
    that differ from the group's: the `updated` event's fields, empty for a change that changes nothing."""
    if wanted.get("name") is not None:
        check_name(wanted["name"])
    if wanted.get("description") is not None:
        check_text("description", wanted["description"], MAX_DESCRIPTION, newlines=True)
    if wanted.get("add_policy") is not None and wanted["add_policy"] not in ADD_POLICIES:
        raise Invalid(f"add_policy must be one of {list(ADD_POLICIES)}")
    fields = ("name", "description", "add_policy", "muted_all")
    return {f: wanted[f] for f in fields if wanted.get(f) is not None and wanted[f] != group[f]}  # type: ignore[literal-required]


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
