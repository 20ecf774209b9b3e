"""WebService: the conversation list, groups and files (history is read in the gateway: deployments/history.py)."""

from __future__ import annotations

import os

from ray import serve
from sqlalchemy.engine import Connection

from imray.backends import Backends
from imray.deployments.common import BackendsService, membership_changed
from imray.deployments.files import Download, FileKeeper, UploadedFile
from imray.domain import groups as rules
from imray.domain.errors import Invalid, NotFound
from imray.domain.groups import Group
from imray.domain.messaging import hidden
from imray.heap import freeze_startup_heap
from imray.settings import Settings
from imray.storage import accounts
from imray.storage import groups as group_store
from imray.storage import messages as msgs
from imray.storage.messages import ConversationItem


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

    async def conversations(self, user_id: int) -> list[ConversationItem]:
        def read(conn: Connection) -> list[ConversationItem]:
            items = msgs.conversation_list(conn, user_id, group_store.group_ids_of(conn, user_id))
            blocked = set(accounts.blocked_by(conn, user_id)) if items else set()
            for item in items:  # as the group's history shows it to this reader
                last = item["last_message"]
                if blocked and last is not None and last["conv"].startswith("g:") and last["from"] in blocked:
                    item["last_message"] = hidden(last)
            return items

        return await self._db.run(read)

    async def create_group(self, owner_id: int, name: str, members: list[int]) -> Group:
        wanted = rules.founding_members(owner_id, members, self._settings.max_group_members)

        def create(conn: Connection) -> Group:
            _check_users_exist(conn, wanted)
            rules.check_no_blocks(wanted[1:], wanted, group_store.blocks_among(conn, wanted, wanted[1:]))
            return group_store.create_group(conn, name, owner_id, wanted)

        return await self._db.run(create)

    async def get_group(self, user_id: int, group_id: int) -> Group:
        return await self._db.run(lambda conn: rules.visible_group(group_store.group(conn, group_id), user_id))

    async def add_members(self, user_id: int, group_id: int, user_ids: list[int]) -> Group:
        def add(conn: Connection) -> Group:
            group = rules.check_may_add(group_store.group(conn, group_id), user_id)
            _check_users_exist(conn, user_ids)
            new = rules.joining(group, user_ids, self._settings.max_group_members)
            everyone = [*group["members"], *new]
            rules.check_no_blocks(new, everyone, group_store.blocks_among(conn, everyone, new))
            group_store.add_members(conn, group_id, new)
            changed = group_store.group(conn, group_id)
            assert changed is not None  # in the same transaction
            return changed

        group = await self._db.run(add)
        await membership_changed(self._actors, group["conv"])  # before the next message
        return group

    async def remove_member(self, user_id: int, group_id: int, member_id: int) -> None:
        def remove(conn: Connection) -> None:
            rules.check_removal(group_store.group(conn, group_id), user_id, member_id)
            if not group_store.remove_member(conn, group_id, member_id):
                raise NotFound("that user is not a member")

        await self._db.run(remove)
        await membership_changed(self._actors, f"g:{group_id}")  # before the next message
