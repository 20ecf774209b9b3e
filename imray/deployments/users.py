"""UserService: accounts and profiles."""

from __future__ import annotations

import asyncio

from ray import serve

from imray.domain.accounts import check_registration
from imray.domain.errors import NotFound
from imray.domain.passwords import Passwords
from imray.settings import Settings
from imray.storage import accounts
from imray.storage.db import Database


@serve.deployment
class UserService:
    def __init__(self, settings: Settings) -> None:
        self._db = Database(settings.db_url)
        self._passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib,
                                    settings.argon2_parallelism)

    async def register(self, username: object, password: object, nickname: object) -> dict:
        username, password, nickname = check_registration(username, password, nickname)
        hashed = await asyncio.to_thread(self._passwords.hash, password)
        return await self._db.run(lambda c: accounts.create_user(c, username, hashed, nickname))

    async def get(self, user_id: int) -> dict:
        user = await self._db.run(lambda c: accounts.user_by_id(c, user_id))
        if user is None:
            raise NotFound("no such user")
        return user
