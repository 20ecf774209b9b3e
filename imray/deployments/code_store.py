"""The code flow's store (`domain.authorization_code.CodeStore`) over the accounts tables, one transaction a call."""

from __future__ import annotations

from dataclasses import asdict

from imray.domain.authorization_code import IssuedCode, Registration
from imray.storage import accounts, admin
from imray.storage import authorization_codes as codes
from imray.storage.db import Database


class DatabaseCodeStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def registration(self, client_id: str) -> Registration | None:
        row = await self._db.run(lambda c: codes.registration(c, client_id))
        return None if row is None else Registration(row["client_id"], row["name"], tuple(row["redirect_uris"]),
                                                      row["public"])

    async def credentials(self, username: str) -> tuple[int, str] | None:
        return await self._db.run(lambda c: accounts.credentials(c, username))

    async def disabled(self, user_id: int) -> bool:
        return await self._db.run(lambda c: admin.is_disabled(c, user_id))

    async def store_code(self, code_hash: str, code: IssuedCode, keep_s: int) -> None:
        row: codes.CodeRow = asdict(code)  # type: ignore[assignment]  # the same fields
        await self._db.run(lambda c: codes.store_code(c, code_hash, row, keep_s))

    async def code(self, code_hash: str) -> IssuedCode | None:
        row = await self._db.run(lambda c: codes.code(c, code_hash))
        return None if row is None else IssuedCode(**row)

    async def redeem(self, code_hash: str, refresh_hash: str, refresh_ttl_s: int) -> bool:
        return await self._db.run(lambda c: codes.redeem(c, code_hash, refresh_hash, refresh_ttl_s))

    async def revoke_login(self, family: str, keep_s: int) -> None:
        await self._db.run(lambda c: codes.revoke_login(c, family, keep_s))
