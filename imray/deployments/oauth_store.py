"""The OAuth2 centre's store (`domain.oauth.OAuthStore`) over the accounts tables, one transaction a call."""

from __future__ import annotations

from imray.domain.oauth import Client, RefreshReuse, RefreshUse
from imray.storage import accounts, admin
from imray.storage.db import Database


class DatabaseOAuthStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def client(self, client_id: str) -> Client | None:
        row = await self._db.run(lambda c: accounts.client(c, client_id))
        return None if row is None else Client(row["client_id"], row["scope"], row["secret_hash"])

    async def credentials(self, username: str) -> tuple[int, str] | None:
        return await self._db.run(lambda c: accounts.credentials(c, username))

    async def store_refresh(self, token_hash: str, family: str, user_id: int, client_id: str, scope: str,
                            ttl_s: int) -> None:
        await self._db.run(lambda c: accounts.store_refresh(c, token_hash, family, user_id, client_id, scope, ttl_s))

    async def consume_refresh(self, token_hash: str, client_id: str,
                              keep_s: int) -> RefreshUse | RefreshReuse | None:
        row = await self._db.run(lambda c: accounts.consume_refresh(c, token_hash, client_id=client_id,
                                                                    keep_s=keep_s))
        if row is None:
            return None
        if "reused" in row:
            return RefreshReuse(row["family"])
        return RefreshUse(row["user_id"], row["client_id"], row["family"])

    async def revoke_family(self, token_hash: str, client_id: str, keep_s: int) -> str | None:
        return await self._db.run(lambda c: accounts.revoke_family(c, token_hash, client_id=client_id,
                                                                   keep_s=keep_s))

    async def disabled(self, user_id: int) -> bool:
        return await self._db.run(lambda c: admin.is_disabled(c, user_id))
