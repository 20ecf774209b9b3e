"""WebService: the conversation list, groups and files (history is read in the gateway: deployments/history.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypedDict

from ray import serve
from sqlalchemy.engine import Connection

from imray.backends import Backends
from imray.deployments.common import BackendsService, publish_events
from imray.deployments.files import Download, FileKeeper, UploadedFile
from imray.domain import groups as rules
from imray.domain.conversation_list import check_may_pin, parse_cursor
from imray.domain.conversations import parse_conv
from imray.domain.errors import Forbidden, Invalid, NotFound
from imray.domain.groups import Group, check_membership
from imray.domain.messaging import hidden
from imray.heap import freeze_startup_heap
from imray.settings import Settings
from imray.storage import accounts, conversation_list
from imray.storage import groups as group_store
from imray.storage.accounts import now_ms
from imray.storage.conversation_list import ConversationItem


class ConversationSettings(TypedDict):
    conv: str
    pinned: bool
    muted: bool


def _check_users_exist(conn: Connection, user_ids: list[int]) -> None:
    found = accounts.users_by_ids(conn, list(set(user_ids)))
    missing = sorted(set(user_ids) - set(found))
    if missing:
        raise Invalid(f"no such users: {missing}")


@serve.deployment
class WebService(BackendsService):
    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]  # Serve awaits it
        self._settings = settings
        self._backends = backends = Backends(settings, f"web-{os.getpid()}")
        self._db = backends.database()
        self._files = FileKeeper(settings, self._db, backends.objects())
        self._actors = backends.actors()
        await self.start()
        freeze_startup_heap()

    async def upload(self, user_id: int, data: bytes, filename: str | None) -> UploadedFile:
        row = await self._files.store(user_id, data, "file", filename)
        return {"file_id": row["file_id"], "url": f"{self._settings.base_url}/api/files/{row['file_id']}",
                "content_type": row["content_type"], "size": row["size"]}

    async def download(self, user_id: int, file_id: str) -> Download:
        return await self._files.fetch(user_id, file_id)

    async def delete_file(self, user_id: int, file_id: str) -> None:
        await self._files.delete(user_id, file_id)

    async def conversations(self, user_id: int, after: str | None, limit: int) -> list[ConversationItem]:
        position = parse_cursor(after) if after is not None else None

        def read(conn: Connection) -> list[ConversationItem]:
            items = conversation_list.page(conn, user_id, group_store.group_ids_of(conn, user_id), position, limit)
            blocked = set(accounts.blocked_by(conn, user_id)) if items else set()
            for item in items:  # as the group's history shows it to this reader
                last = item["last_message"]
                if blocked and last is not None and last["conv"].startswith("g:") and last["from"] in blocked:
                    item["last_message"] = hidden(last)
            return items

        return await self._db.run(read)

    async def conversation_settings(self, user_id: int, conv_text: str, pinned: bool | None,
                                    muted: bool | None) -> ConversationSettings:
        """The user's own pin and mute of a conversation they are part of (403 otherwise, 404 unknown)."""
        conv = parse_conv(conv_text)

        def change(conn: Connection) -> ConversationSettings:
            if conv.is_group:
                check_membership(group_store.membership(conn, conv.group_id, user_id))
            elif user_id not in (conv.a, conv.b):
                raise Forbidden("you are not part of this conversation")
            elif accounts.user_by_id(conn, conv.b if user_id == conv.a else conv.a) is None:
                raise NotFound("no such conversation")
            pinned_at, was_muted = conversation_list.settings_of(conn, user_id, str(conv))
            if pinned and not pinned_at:
                check_may_pin(conversation_list.pinned_count(conn, user_id), self._settings.max_pinned_conversations)
                pinned_at = now_ms()
            elif pinned is False:
                pinned_at = 0
            muting = was_muted if muted is None else muted
            conversation_list.save_settings(conn, user_id, str(conv), pinned_at, muting)
            return {"conv": str(conv), "pinned": bool(pinned_at), "muted": muting}

        return await self._db.run(change)

    async def create_group(self, owner_id: int, name: str, members: list[int]) -> Group:
        rules.check_name(name)
        wanted = rules.founding_members(owner_id, members, self._settings.max_group_members)

        def create(conn: Connection) -> Group:
            _check_users_exist(conn, wanted)
            rules.check_no_blocks(wanted[1:], wanted, group_store.blocks_among(conn, wanted, wanted[1:]))
            return group_store.create_group(conn, name, owner_id, wanted)

        group = await self._db.run(create)
        await publish_events(self._actors, group["conv"])  # its "created" event is seq 1
        return group

    async def get_group(self, user_id: int, group_id: int) -> Group:
        return await self._db.run(lambda conn: rules.visible_group(group_store.group(conn, group_id), user_id))

    async def _change_group(self, group_id: int, change: Callable[[Connection], None]) -> Group:
        """Run `change` (which checks the rules, writes, and queues its events) in one transaction;
        the shard commits the events, members read again, before the group is answered."""

        def run(conn: Connection) -> Group:
            change(conn)
            changed = group_store.group(conn, group_id)
            assert changed is not None  # in the same transaction
            return changed

        group = await self._db.run(run)
        await publish_events(self._actors, group["conv"])  # before the next message
        return group

    async def add_members(self, user_id: int, group_id: int, user_ids: list[int]) -> Group:
        def add(conn: Connection) -> None:
            group = rules.check_may_add(group_store.group(conn, group_id, lock=True), user_id)
            _check_users_exist(conn, user_ids)
            new = rules.joining(group, user_ids, self._settings.max_group_members)
            everyone = [*group["members"], *new]
            rules.check_no_blocks(new, everyone, group_store.blocks_among(conn, everyone, new))
            group_store.add_members(conn, group_id, new, user_id)

        return await self._change_group(group_id, add)

    async def remove_member(self, user_id: int, group_id: int, member_id: int) -> None:
        def remove(conn: Connection) -> None:
            rules.check_removal(group_store.group(conn, group_id, lock=True), user_id, member_id)
            if not group_store.remove_member(conn, group_id, member_id, user_id):
                raise NotFound("that user is not a member")

        await self._db.run(remove)
        await publish_events(self._actors, f"g:{group_id}")  # before the next message

    # -- group administration (issue 18, docs/protocol.md §10) ---------------------------------------

    async def update_group(self, user_id: int, group_id: int, wanted: dict[str, Any]) -> Group:
        def update(conn: Connection) -> None:
            group = rules.check_may_manage(group_store.group(conn, group_id, lock=True), user_id)
            group_store.update_settings(conn, group_id, user_id, rules.settings_change(group, wanted))

        return await self._change_group(group_id, update)

    async def set_role(self, user_id: int, group_id: int, member_id: int, role: str) -> Group:
        def change(conn: Connection) -> None:
            group = rules.check_may_set_role(group_store.group(conn, group_id, lock=True), user_id, member_id)
            if (member_id in group["admins"]) != (role == "admin"):
                group_store.set_role(conn, group_id, user_id, member_id, role)

        return await self._change_group(group_id, change)

    async def set_muted(self, user_id: int, group_id: int, member_id: int, muted: bool) -> Group:
        def change(conn: Connection) -> None:
            group = rules.check_may_mute(group_store.group(conn, group_id, lock=True), user_id, member_id)
            if (member_id in group["muted"]) != muted:
                group_store.set_muted(conn, group_id, user_id, member_id, muted)

        return await self._change_group(group_id, change)

    async def transfer_ownership(self, user_id: int, group_id: int, member_id: int) -> Group:
        def change(conn: Connection) -> None:
            group = rules.check_may_transfer(group_store.group(conn, group_id, lock=True), user_id, member_id)
            if member_id != user_id:
                group_store.transfer(conn, group_id, user_id, member_id, member_id in group["muted"])

        return await self._change_group(group_id, change)

    async def dissolve_group(self, user_id: int, group_id: int) -> None:
        def change(conn: Connection) -> None:
            if not rules.check_may_dissolve(group_store.group(conn, group_id, lock=True), user_id)["dissolved"]:
                group_store.dissolve(conn, group_id, user_id)

        await self._change_group(group_id, change)
