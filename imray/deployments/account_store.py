"""The stores of a user's own account (`domain.account_security.AccountStore`) and of logins
(`domain.oauth.LoginBook`) over the database, one transaction a call."""

from __future__ import annotations

from imray.domain.account_security import DeletedAccount
from imray.storage import logins, profiles
from imray.storage.db import Database


class DatabaseAccountStore:
    def __init__(self, db: Database, keep_s: int) -> None:
        """`keep_s`: how long a revocation matters (the access tokens' lifetime)."""
        self._db, self._keep_s = db, keep_s

    async def password_hash(self, user_id: int) -> str | None:
        return await self._db.run(lambda c: profiles.password_hash(c, user_id))

    async def set_password(self, user_id: int, password_hash: str, keep: str | None) -> list[str]:
        return await self._db.run(lambda c: profiles.set_password(c, user_id, password_hash, keep, self._keep_s))

    async def end_logins(self, user_id: int) -> list[str]:
        return await self._db.run(lambda c: logins.end_all(c, user_id, self._keep_s))

    async def end_login(self, user_id: int, login_id: int) -> str | None:
        return await self._db.run(lambda c: logins.end_one(c, user_id, login_id, self._keep_s))

    async def delete_account(self, user_id: int) -> DeletedAccount:
        return await self._db.run(lambda c: profiles.delete_account(c, user_id, self._keep_s))


class DatabaseLoginBook:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def opened(self, family: str, user_id: int, client_id: str, device_name: str) -> None:
        await self._db.run(lambda c: logins.record(c, family, user_id, client_id, device_name))

    async def used(self, family: str) -> None:
        await self._db.run(lambda c: logins.seen(c, family))
