"""UserService: accounts and profiles."""

from __future__ import annotations

import asyncio
import contextlib
import os
from functools import partial

from ray import serve
from sqlalchemy.engine import Connection

from imray.adapters.cache import user_key
from imray.backends import Backends
from imray.deployments.common import BackendsService, membership_changed
from imray.deployments.files import Download, FileKeeper
from imray.domain.accounts import User, check_registration
from imray.domain.conversations import direct_conv
from imray.domain.errors import NotFound, Unavailable
from imray.domain.login_guard import PasswordQueue
from imray.domain.passwords import Passwords
from imray.heap import freeze_startup_heap
from imray.settings import Settings
from imray.storage import accounts, admin
from imray.storage import groups as group_store

USER_TTL_S = 300


@serve.deployment
class UserService(BackendsService):
    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]  # Serve awaits it
        self._settings = settings
        self._backends = backends = Backends(settings, f"users-{os.getpid()}")
        self._db = backends.database()
        self._files = FileKeeper(settings, self._db, backends.objects())
        self._cache = backends.cache()
        self._actors = backends.actors()
        self._passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib,
                                    settings.argon2_parallelism)
        # Registrations hash passwords as logins check them: the same bound, so a flood of sign-ups
        # gets quick 503s instead of starving the replica (issue 16).
        self._hashing = PasswordQueue(settings.password_checks_at_once or len(os.sched_getaffinity(0)),
                                      settings.password_checks_waiting,
                                      busy=lambda: Unavailable("too many registrations at once; try again shortly"))
        await self.start()
        freeze_startup_heap()

    async def stop(self) -> None:
        self._hashing.close()
        await super().stop()

    async def register(self, username: object, password: object, nickname: object) -> User:
        username, password, nickname = check_registration(username, password, nickname)
        hashed = await self._hashing.run(partial(self._passwords.hash, password))
        return await self._db.run(lambda c: accounts.create_user(c, username, hashed, nickname))

    async def set_password(self, user_id: int, password: object) -> None:
        """An operator's reset (server API): hashed here, where registrations hash theirs."""
        _, password, _ = check_registration("placeholder", password, None)
        hashed = await self._hashing.run(partial(self._passwords.hash, password))
        await self._db.run(lambda c: admin.set_password(c, user_id, hashed))

    async def blocks(self, user_id: int) -> list[int]:
        return await self._db.run(lambda c: accounts.blocked_by(c, user_id))

    async def block(self, user_id: int, other: int, blocked: bool) -> None:
        """Block (or unblock) `other`: they can no longer write to `user_id` in their direct conversation,
        and in the groups both are in, `user_id` gets their messages hidden (docs/protocol.md, "Blocks")."""
        conv = str(direct_conv(user_id, other))  # refuses blocking oneself

        def change(conn: Connection) -> list[int]:
            if accounts.user_by_id(conn, other) is None:
                raise NotFound("no such user")
            if blocked:
                accounts.block(conn, user_id, other)
            elif not accounts.unblock(conn, user_id, other):
                raise NotFound("that user is not blocked")
            return group_store.shared_groups(conn, user_id, other)

        shared = await self._db.run(change)
        # The owning shards cache who may write and who hears whom.
        await asyncio.gather(*(membership_changed(self._actors, c) for c in (conv, *(f"g:{g}" for g in shared))))

    async def set_avatar(self, user_id: int, data: bytes) -> User:
        before = (await self.get(user_id))["avatar_url"]
        row = await self._files.store(user_id, data, "avatar", None)
        url = f"{self._settings.base_url}/api/users/{user_id}/avatar?v={row['file_id']}"
        await self._db.run(lambda c: accounts.set_avatar(c, user_id, url))
        if before:  # the replaced avatar gives its room in the quota back
            with contextlib.suppress(NotFound):  # replaced by a concurrent change meanwhile
                await self._files.delete(user_id, before.rsplit("?v=", 1)[1], "avatar")
        await self._cache.delete(user_key(user_id))
        return await self.get(user_id)

    async def avatar(self, user_id: int) -> Download:
        user = await self.get(user_id)
        if not user["avatar_url"]:
            raise NotFound("this user has no avatar")
        file_id = user["avatar_url"].rsplit("?v=", 1)[1]
        return await self._files.fetch(user_id, file_id, check=False)

    async def get(self, user_id: int) -> User:
        user: User | None = await self._cache.get(user_key(user_id))
        if user is None:
            user = await self._db.run(lambda c: accounts.user_by_id(c, user_id))
            if user is None:
                raise NotFound("no such user")
            await self._cache.set(user_key(user_id), user, USER_TTL_S)
        return user
