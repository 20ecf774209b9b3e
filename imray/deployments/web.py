"""WebService: the conversation list, groups and files (history is read in the gateway: deployments/history.py)."""

from __future__ import annotations

from ray import serve
from sqlalchemy.engine import Connection

from imray.adapters.objects import make_objects
from imray.deployments.common import membership_changed
from imray.deployments.files import FileKeeper
from imray.domain.errors import Forbidden, Invalid, NotFound
from imray.heap import freeze_startup_heap
from imray.settings import Settings
from imray.storage import accounts
from imray.storage import groups as group_store
from imray.storage import messages as msgs
from imray.storage.db import Database


@serve.deployment
class WebService:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._db = Database(settings.db_url)
        self._files = FileKeeper(settings, self._db, make_objects(settings))
        freeze_startup_heap()

    async def upload(self, user_id: int, data: bytes, filename: str | None) -> dict:
        row = await self._files.store(user_id, data, "file", filename)
        return {"file_id": row["file_id"], "url": f"{self._settings.base_url}/api/files/{row['file_id']}",
                "content_type": row["content_type"], "size": row["size"]}

    async def download(self, user_id: int, file_id: str) -> dict:
        return await self._files.fetch(user_id, file_id)

    async def conversations(self, user_id: int) -> list[dict]:
        def read(conn: Connection) -> list[dict]:
            return msgs.conversation_list(conn, user_id, group_store.group_ids_of(conn, user_id))

        return await self._db.run(read)

    async def create_group(self, owner_id: int, name: str, members: list[int]) -> dict:
        wanted = list(dict.fromkeys([owner_id, *members]))
        if len(wanted) > self._settings.max_group_members:
            raise Invalid(f"a group has at most {self._settings.max_group_members} members")

        def create(conn: Connection) -> dict:
            self._check_users_exist(conn, wanted)
            return group_store.create_group(conn, name, owner_id, wanted)

        return await self._db.run(create)

    async def get_group(self, user_id: int, group_id: int) -> dict:
        def read(conn: Connection) -> dict:
            group = group_store.group(conn, group_id)
            if group is None:
                raise NotFound("no such group")
            if user_id not in group["members"]:
                raise Forbidden("you are not a member of this group")
            return group

        return await self._db.run(read)

    async def add_members(self, user_id: int, group_id: int, user_ids: list[int]) -> dict:
        """Any member may add people (as in most chat apps); outsiders may not."""
        def add(conn: Connection) -> dict:
            group = group_store.group(conn, group_id)
            if group is None:
                raise NotFound("no such group")
            if user_id not in group["members"]:
                raise Forbidden("only members can add people to a group")
            self._check_users_exist(conn, user_ids)
            new = [u for u in dict.fromkeys(user_ids) if u not in group["members"]]
            if len(group["members"]) + len(new) > self._settings.max_group_members:
                raise Invalid(f"a group has at most {self._settings.max_group_members} members")
            group_store.add_members(conn, group_id, new)
            return group_store.group(conn, group_id)

        group = await self._db.run(add)
        await self._membership_changed(group["conv"])
        return group

    async def remove_member(self, user_id: int, group_id: int, member_id: int) -> None:
        """The owner removes anyone; a member removes itself."""
        def remove(conn: Connection) -> None:
            group = group_store.group(conn, group_id)
            if group is None:
                raise NotFound("no such group")
            if user_id != group["owner_id"] and user_id != member_id:
                raise Forbidden("only the owner can remove other members")
            if user_id not in group["members"]:
                raise Forbidden("you are not a member of this group")
            if not group_store.remove_member(conn, group_id, member_id):
                raise NotFound("that user is not a member")

        await self._db.run(remove)
        await self._membership_changed(f"g:{group_id}")

    @staticmethod
    def _check_users_exist(conn: Connection, user_ids: list[int]) -> None:
        found = accounts.users_by_ids(conn, list(set(user_ids)))
        missing = sorted(set(user_ids) - set(found))
        if missing:
            raise Invalid(f"no such users: {missing}")

    async def _membership_changed(self, conv: str) -> None:
        """The owning shard must see the change before the next message."""
        await membership_changed(self._settings, conv)
