"""File handling shared by UserService (avatars) and WebService (chat files): store, then record."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import TypedDict, final

from sqlalchemy.engine import Connection

from imray.adapters.objects import ObjectStore
from imray.domain.errors import Forbidden, NotFound
from imray.domain.files import OverQuota, Upload, check_quota, check_upload, content_disposition
from imray.settings import Settings
from imray.storage import files as file_store
from imray.storage.db import Database


class StoredFile(TypedDict):
    """The row of a file just stored (an `Upload` but for its time, which the database stamps)."""

    file_id: str
    owner_id: int
    purpose: str
    object_key: str
    content_type: str
    size: int
    filename: str | None


@final  # final: `"url" in answer` tells the two kinds apart for the type checker
class FileLink(TypedDict):
    url: str  # presigned, short-lived


@final
class FileBytes(TypedDict):
    data: bytes
    content_type: str
    filename: str | None


Download = FileLink | FileBytes  # a link when the object store hands one out, else the bytes


class UploadedFile(TypedDict):
    """What an upload answers (PROTOCOL §3)."""

    file_id: str
    url: str
    content_type: str
    size: int


class FileKeeper:
    def __init__(self, settings: Settings, db: Database, objects: ObjectStore) -> None:
        self._settings, self._db, self._objects = settings, db, objects
        self._ready = False

    async def _ensure_bucket(self) -> None:
        if not self._ready:
            await asyncio.to_thread(self._objects.ensure_bucket)
            self._ready = True

    async def store(self, owner_id: int, data: bytes, purpose: str, filename: str | None) -> StoredFile:
        limit = self._settings.max_avatar_bytes if purpose == "avatar" else self._settings.max_upload_bytes
        content_type = check_upload(data, purpose, limit)
        quota = self._settings.user_storage_quota_bytes
        if quota:  # refused before the bytes travel; checked again, under a lock, with the row
            check_quota(await self._db.read(lambda conn: file_store.stored_bytes(conn, owner_id)), len(data), quota)
        await self._ensure_bucket()
        file_id = secrets.token_urlsafe(18)
        key = f"{purpose}s/{owner_id}/{file_id}"
        row: StoredFile = {"file_id": file_id, "owner_id": owner_id, "purpose": purpose, "object_key": key,
                           "content_type": content_type, "size": len(data),
                           "filename": (filename or "")[:255] or None}
        # The object first, then the row: a failure leaves at worst an unreferenced object.
        await asyncio.to_thread(self._objects.put, key, data, content_type,
                                content_disposition(content_type, row["filename"]))

        def record(conn: Connection) -> None:
            if quota:
                check_quota(file_store.stored_bytes_locked_txn(conn, owner_id), len(data), quota)
            file_store.add_file(conn, row)

        try:
            await self._db.run(record)
        except OverQuota:  # another upload of this user's took the room meanwhile
            with contextlib.suppress(Exception):  # else an unreferenced object, as above: the answer stands
                await asyncio.to_thread(self._objects.delete, key)
            raise
        return row

    async def delete(self, user_id: int, file_id: str, purpose: str = "file") -> None:
        """The owner takes back an upload of `purpose` and the room it took in their quota. Messages
        that carried it stay, and its downloads answer 404 from then on."""
        def remove(conn: Connection) -> Upload:
            found = file_store.file(conn, file_id) if len(file_id) <= 64 else None
            if found is None or found["purpose"] != purpose:
                raise NotFound("no such file")
            if found["owner_id"] != user_id:
                raise Forbidden("only its owner may delete a file")
            file_store.remove_file(conn, file_id)
            return found

        found = await self._db.run(remove)
        # The row first, then the object: a failure leaves at worst an unreferenced object, as `store`.
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._objects.delete, found["object_key"])

    async def fetch(self, user_id: int, file_id: str, check: bool = True) -> Download:
        def find(conn: Connection) -> Upload:
            found = file_store.file(conn, file_id) if len(file_id) <= 64 else None
            if found is None:
                raise NotFound("no such file")
            if check and not file_store.may_read(conn, user_id, found):
                raise Forbidden("this file was not shared with you")
            return found

        found = await self._db.run(find)
        url = await asyncio.to_thread(self._objects.presigned_url, found["object_key"], self._settings.file_url_ttl_s,
                                      found["content_type"], content_disposition(found["content_type"],
                                                                                 found["filename"]))
        if url is not None:
            return {"url": url}
        data = await asyncio.to_thread(self._objects.get, found["object_key"])
        return {"data": data, "content_type": found["content_type"], "filename": found["filename"]}
