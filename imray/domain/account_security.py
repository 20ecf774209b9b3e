"""A user's own password, logins and deletion (issue 18): decided here, carried out through small ports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from imray.domain.authenticator import RevokedLogins
from imray.domain.errors import DomainError, Forbidden, Invalid, NotFound
from imray.domain.login_guard import LoginGuard, LoginRefused, PasswordQueue


class TooManyFailures(DomainError):
    """Too many wrong passwords for this account (or from this address): the login throttle's 429."""

    code, status = "rate_limited", 429


@dataclass(frozen=True, slots=True)
class DeletedAccount:
    """What the deletion's transaction did, for the edges to finish: the logins it ended, the
    conversations whose cached membership changed, the avatar whose object is to go."""

    families: list[str]
    convs: list[str] = field(default_factory=list)
    avatar_file_id: str | None = None


class AccountStore(Protocol):
    """The accounts tables, each call one transaction."""

    async def password_hash(self, user_id: int) -> str | None: ...  # None: no such (live) account
    # Set the hash and end every other login (`keep`: the caller's, None: none); the families ended.
    async def set_password(self, user_id: int, password_hash: str, keep: str | None) -> list[str]: ...
    async def end_logins(self, user_id: int) -> list[str]: ...
    async def end_login(self, user_id: int, login_id: int) -> str | None: ...  # None: not theirs, or over
    async def delete_account(self, user_id: int) -> DeletedAccount: ...


class Hasher(Protocol):
    def hash(self, password: str) -> str: ...
    def verify(self, stored: str | None, password: str) -> bool: ...


class AccountSecurity:
    """A user's own password, logins and deletion. Passwords are checked through the login guard:
    a wrong one counts as a failed login, and a throttled account is refused before its check."""

    def __init__(self, store: AccountStore, passwords: Hasher, guard: LoginGuard, queue: PasswordQueue,
                 revoked: RevokedLogins, keep_s: int) -> None:
        """`keep_s`: how long a revocation matters (the access tokens' lifetime)."""
        self._store, self._passwords, self._guard, self._queue = store, passwords, guard, queue
        self._revoked, self._keep_s = revoked, keep_s

    async def change_password(self, user_id: int, current_login: str | None, current: str, new: str,
                              address: str) -> int:
        """The new password, and every other login ended (the caller's `current_login` stays); how
        many were ended."""
        if not 8 <= len(new) <= 128 or not _encodable(new):
            raise Invalid("new_password must be 8-128 characters (no lone surrogates)")
        await self._check(user_id, current, address)
        hashed = await self._queue.run(partial(self._passwords.hash, new))
        return await self._spread(await self._store.set_password(user_id, hashed, current_login))

    async def end_all(self, user_id: int) -> int:
        """Log out everywhere: every login ended, the caller's too."""
        return await self._spread(await self._store.end_logins(user_id))

    async def end_one(self, user_id: int, login_id: int) -> None:
        family = await self._store.end_login(user_id, login_id)
        if family is None:
            raise NotFound("no such login among yours")
        await self._spread([family])

    async def delete(self, user_id: int, password: str, address: str) -> DeletedAccount:
        await self._check(user_id, password, address)
        deleted = await self._store.delete_account(user_id)
        await self._spread(deleted.families)
        return deleted

    async def _check(self, user_id: int, password: str, address: str) -> None:
        stored = await self._store.password_hash(user_id)
        if stored is None:
            raise NotFound("no such user")
        check: Callable[[], bool] = partial(self._passwords.verify, stored, password) if _encodable(password) \
            else (lambda: False)  # no hash holds a lone surrogate: it is just wrong
        try:  # the account named as the password grant names it: one count for both
            ok = await self._guard.verify(check, f"id:{user_id}", address)
        except LoginRefused as exc:
            if exc.status == 429:
                raise TooManyFailures(exc.message) from None
            raise
        if not ok:
            raise Forbidden("the password is wrong")

    async def _spread(self, families: list[str]) -> int:
        """The database has the revocations: tell this process and Redis now (every follower reads
        them within a second, and socket nodes close the logins' sessions with 4001)."""
        for family in families:
            await self._revoked.revoke(family, self._keep_s)
        return len(families)


def _encodable(password: str) -> bool:
    """UTF-8 can carry it (JSON can hold a lone surrogate, which no hash function takes)."""
    try:
        password.encode()
    except UnicodeEncodeError:
        return False
    return True
