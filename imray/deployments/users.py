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
from imray.deployments.account_store import DatabaseAccountStore
from imray.deployments.common import BackendsService, membership_changed, publish_events
from imray.deployments.contacts import Ended, announce, end_on_block_txn
from imray.deployments.files import Download, FileKeeper
from imray.domain.account_changes import check_prefix, like_pattern, may_match
from imray.domain.account_security import AccountSecurity
from imray.domain.accounts import User, check_nickname, check_registration
from imray.domain.conversations import direct_conv
from imray.domain.errors import NotFound, Unavailable
from imray.domain.login_guard import LoginGuard, LoginLimits, PasswordQueue
from imray.domain.passwords import Passwords
from imray.heap import freeze_startup_heap
from imray.settings import Settings
from imray.storage import accounts, admin, profiles
from imray.storage import groups as group_store
from imray.storage import logins as login_store

USER_TTL_S = 300
FORGET_AT_ONCE = 64  # shards told at once that a deleted user's conversations changed


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
        # Issue 18, accounts: a user's own password, logins and deletion. Their passwords are checked
        # as logins are: a wrong one counts in the failed-login counts the AuthService replicas share.
        guard = LoginGuard(backends.login_failures(), LoginLimits(
            settings.login_failures_per_account, settings.login_failures_per_address,
            settings.login_failure_window_s), self._hashing)
        self._security = AccountSecurity(DatabaseAccountStore(self._db, settings.access_token_ttl_s),
                                         self._passwords, guard, self._hashing,
                                         backends.revoked_logins(follow=False), settings.access_token_ttl_s)
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

        def change(conn: Connection) -> tuple[list[int], Ended]:
            if accounts.user_by_id(conn, other) is None:
                raise NotFound("no such user")
            ended: Ended = []
            if blocked:
                accounts.block(conn, user_id, other)
                ended = end_on_block_txn(conn, user_id, other)  # issue 18: no contact across a block
            elif not accounts.unblock(conn, user_id, other):
                raise NotFound("that user is not blocked")
            return group_store.shared_groups(conn, user_id, other), ended

        shared, ended = await self._db.run(change)
        # The owning shards cache who may write and who hears whom.
        await asyncio.gather(*(membership_changed(self._actors, c) for c in (conv, *(f"g:{g}" for g in shared))))
        if ended:
            await announce(self._backends, ended)

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

    # -- a user's own account (issue 18, docs/protocol.md "Accounts") ---------------------------

    async def search(self, prefix: str, after: int, limit: int) -> list[User]:
        """Live accounts whose username starts with `prefix` (case ignored), by id after `after`."""
        lowered = check_prefix(prefix, self._settings.user_search_min_prefix)
        if not may_match(lowered):  # no username can start so: no query
            return []
        return await self._db.read(lambda c: profiles.search(c, like_pattern(lowered), after, limit))

    async def set_nickname(self, user_id: int, nickname: object) -> User:
        user = await self.get(user_id)
        checked = check_nickname(nickname, user["username"])
        changed = await self._db.run(lambda c: profiles.set_nickname(c, user_id, checked))
        await self._cache.delete(user_key(user_id))
        if changed is None:
            raise NotFound("no such user")
        return changed

    async def change_password(self, user_id: int, login: str | None, current: str, new: str, address: str) -> int:
        """The new password; every login but `login` (the caller's) ended. How many were."""
        return await self._security.change_password(user_id, login, current, new, address)

    async def end_logins(self, user_id: int) -> int:
        return await self._security.end_all(user_id)

    async def end_login(self, user_id: int, login_id: int) -> None:
        await self._security.end_one(user_id, login_id)

    async def logins(self, user_id: int, login: str | None) -> list[dict]:
        """The user's live logins, newest first; `current`: the one the caller's token belongs to."""
        rows = await self._db.read(lambda c: login_store.active(c, user_id))
        return [{"id": r["id"], "device_name": r["device_name"], "client_id": r["client_id"],
                 "created_at": r["created_at"], "last_seen_at": r["last_seen_at"], "current": r["family"] == login}
                for r in rows]

    async def delete_account(self, user_id: int, password: str, address: str) -> None:
        deleted = await self._security.delete(user_id, password, address)
        await self._cache.delete(user_key(user_id))
        convs = deleted.convs
        # Their shards read again who may write there, and commit the groups' "left" (and "owner") events.
        for start in range(0, len(convs), FORGET_AT_ONCE):
            await asyncio.gather(*(publish_events(self._actors, c) for c in convs[start:start + FORGET_AT_ONCE]))
        if deleted.avatar_file_id:
            with contextlib.suppress(NotFound):
                await self._files.delete(user_id, deleted.avatar_file_id, "avatar")
