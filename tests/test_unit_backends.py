"""The wiring place (backends.Backends) on the embedded stack: which adapters its builders choose,
that each part is built once, that rate limits follow the live settings, and that `start()` follows
revoked logins from the database only when a process asked to (and `stop()` undoes it).

Default settings with a temporary data dir: SQLite, per-process caches and limits, local files, no
registry. Nothing here touches Ray, Redis, Nacos or S3.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Connection

from imray.adapters.cache import LocalCache
from imray.adapters.live_config import LiveSettings
from imray.adapters.objects import LocalObjects
from imray.adapters.rate_limits import RateLimiter
from imray.adapters.registry import NoDirectory, Unregistered
from imray.adapters.revocations import Revocations
from imray.backends import Backends
from imray.domain.authenticator import Authenticator
from imray.domain.tokens import SigningKey, TokenIssuer
from imray.settings import Settings
from imray.storage import accounts
from imray.storage.db import Database

FOLLOWER = "revocation follower"  # the name start() gives the follower's task


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"))


@pytest.fixture
async def backends(settings: Settings) -> AsyncIterator[Backends]:
    built = Backends(settings, "test")
    try:
        yield built
    finally:
        await built.stop()


def follower_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == FOLLOWER and not t.done()]


def revoke_a_login(db: Database, family: str) -> None:
    """What AuthService does on RFC 7009 revocation: the login's row in `revoked_logins`."""
    def write(conn: Connection) -> None:
        user_id = accounts.create_user(conn, f"user-{family}", "hash", "nick")["id"]
        accounts.store_refresh(conn, f"hash-{family}", family, user_id, "imray-app", "chat", 3600)
        assert accounts.revoke_family(conn, f"hash-{family}", client_id="imray-app", keep_s=900) == family
    db.transaction(write)


async def eventually_revoked(revoked: object, family: str, within_s: float) -> bool:
    assert isinstance(revoked, Revocations)
    for _ in range(int(within_s / 0.05)):
        if await revoked.is_revoked(family):
            return True
        await asyncio.sleep(0.05)
    return await revoked.is_revoked(family)


# -- builders: the embedded adapters, each built once --------------------------------------------


def test_the_database_is_sqlite_in_the_data_dir_and_built_once(backends: Backends, settings: Settings) -> None:
    db = backends.database()
    assert isinstance(db, Database)
    assert db.embedded
    assert db.url == f"sqlite:///{settings.data_path / 'imray.db'}"
    assert backends.database() is db
    assert backends.database(threads=1) is db  # the first caller sized it; later ones share it


def test_the_cache_is_a_local_one_built_once(backends: Backends) -> None:
    cache = backends.cache()
    assert isinstance(cache, LocalCache)
    assert backends.cache() is cache


def test_the_object_store_is_the_objects_dir_under_the_data_dir_built_once(
        backends: Backends, settings: Settings) -> None:
    objects = backends.objects()
    assert isinstance(objects, LocalObjects)
    assert objects.describe() == f"local directory {settings.data_path / 'objects'}"
    assert backends.objects() is objects


def test_the_rate_limit_is_a_per_process_limiter_with_the_settings_limit_built_once(
        backends: Backends, settings: Settings) -> None:
    limit = backends.rate_limit()
    assert isinstance(limit, RateLimiter)
    assert limit.per_minute == settings.rate_limit_per_minute
    assert backends.rate_limit() is limit


def test_live_settings_are_built_once_from_the_static_settings(backends: Backends, settings: Settings) -> None:
    live = backends.live()
    assert isinstance(live, LiveSettings)
    assert live.rate_limit_per_minute == settings.rate_limit_per_minute
    assert live.max_text_length == settings.max_text_length
    assert live.direct_messages == settings.direct_messages
    assert backends.live() is live


def test_registration_is_unregistered_and_built_once_per_service(backends: Backends) -> None:
    registration = backends.registration("imray-socket", "127.0.0.1", 9101)
    assert isinstance(registration, Unregistered)
    assert backends.registration("imray-socket", "127.0.0.1", 9101) is registration
    assert backends.registration("imray-gateway", "127.0.0.1", 8000) is not registration


def test_the_directory_is_none_and_built_once_per_service(backends: Backends) -> None:
    directory = backends.directory("imray-socket")
    assert isinstance(directory, NoDirectory)
    assert backends.directory("imray-socket") is directory
    assert backends.directory("imray-gateway") is not directory


async def test_the_embedded_directory_has_no_outside_view(backends: Backends) -> None:
    assert await backends.directory("imray-socket").node_ids() is None


def test_revoked_logins_are_kept_in_the_processes_view_and_built_once(backends: Backends) -> None:
    revoked = backends.revoked_logins()
    assert isinstance(revoked, Revocations)
    assert backends.revoked_logins(follow=False) is revoked


async def test_a_login_revoked_here_is_revoked_here_at_once(backends: Backends) -> None:
    await backends.revoked_logins(follow=False).revoke("f" * 32, 900)
    assert await backends.revoked_logins().is_revoked("f" * 32)


def test_building_the_embedded_parts_writes_no_files(backends: Backends, settings: Settings) -> None:
    backends.database()
    backends.objects()
    backends.cache()
    backends.revoked_logins()
    assert not (settings.data_path / "imray.db").exists()
    assert not (settings.data_path / "objects").exists()


# -- rate limits follow the live settings --------------------------------------------------------


async def test_the_rate_limit_follows_the_live_settings(backends: Backends) -> None:
    limit = backends.rate_limit()
    backends.live().apply("rate_limit_per_minute: 5")
    assert limit.per_minute == 5
    assert [await limit.check("caller") for _ in range(6)] == [True] * 5 + [False]


async def test_a_rate_limit_built_after_a_live_change_starts_at_the_live_value(backends: Backends) -> None:
    backends.live().apply("rate_limit_per_minute: 7")
    assert backends.rate_limit().per_minute == 7


async def test_a_bad_live_rate_limit_is_ignored_and_the_last_good_one_stays(backends: Backends) -> None:
    limit = backends.rate_limit()
    backends.live().apply("rate_limit_per_minute: 5")
    backends.live().apply("rate_limit_per_minute: 0")
    assert limit.per_minute == 5
    backends.live().apply("rate_limit_per_minute: [not, a, number]")
    assert limit.per_minute == 5


async def test_other_live_changes_leave_the_rate_limit_alone(backends: Backends, settings: Settings) -> None:
    limit = backends.rate_limit()
    backends.live().apply("max_text_length: 10")
    assert limit.per_minute == settings.rate_limit_per_minute


# -- start and stop: following revoked logins ----------------------------------------------------


async def test_start_follows_revoked_logins_from_the_database_when_asked_to(backends: Backends) -> None:
    revoked = backends.revoked_logins(follow=True)
    db = backends.database()
    db.create_schema()
    await backends.start()
    assert len(follower_tasks()) == 1
    assert not await revoked.is_revoked("x" * 32)
    revoke_a_login(db, "x" * 32)  # written to the database only, as another process would
    assert await eventually_revoked(revoked, "x" * 32, within_s=2.5)
    assert not await revoked.is_revoked("y" * 32)


async def test_start_does_not_follow_revoked_logins_for_a_process_that_only_revokes(
        backends: Backends) -> None:
    revoked = backends.revoked_logins(follow=False)
    db = backends.database()
    db.create_schema()
    revoke_a_login(db, "x" * 32)  # a follower's first read would see it at once
    await backends.start()
    assert follower_tasks() == []
    await asyncio.sleep(1.2)
    assert not await revoked.is_revoked("x" * 32)


async def test_start_follows_nothing_when_revoked_logins_were_never_asked_for(backends: Backends) -> None:
    backends.rate_limit()
    await backends.start()
    assert follower_tasks() == []


async def test_asking_for_an_authenticator_makes_start_follow_revocations(backends: Backends) -> None:
    backends.revoked_logins(follow=False)
    key = SigningKey.generate()
    auth = backends.authenticator([key.public()])
    assert isinstance(auth, Authenticator)
    db = backends.database()
    db.create_schema()
    await backends.start()
    assert len(follower_tasks()) == 1
    token = TokenIssuer(key, backends.settings.base_url, 900).issue_user(1, "imray-app", "node-1", "z" * 32)
    assert (await auth.authenticate(token)).user_id == 1
    revoke_a_login(db, "z" * 32)
    assert await eventually_revoked(backends.revoked_logins(), "z" * 32, within_s=2.5)


async def test_start_builds_the_database_for_the_follower_when_nobody_had(
        backends: Backends, settings: Settings) -> None:
    revoked = backends.revoked_logins()
    # The schema exists (another process made it), but this process never asked for the database.
    other = Database(settings.db_url)
    try:
        other.create_schema()
        await backends.start()
        revoke_a_login(other, "w" * 32)
    finally:
        other.close()
    assert await eventually_revoked(revoked, "w" * 32, within_s=2.5)


async def test_starting_twice_runs_one_follower(backends: Backends) -> None:
    backends.revoked_logins()
    backends.database().create_schema()
    await backends.start()
    await backends.start()
    assert len(follower_tasks()) == 1


async def test_stop_cancels_the_follower_and_closes_the_database(settings: Settings) -> None:
    backends = Backends(settings, "test")
    backends.revoked_logins()
    db = backends.database()
    db.create_schema()
    await backends.start()
    assert len(follower_tasks()) == 1
    assert await backends.stop() == []
    assert follower_tasks() == []
    with pytest.raises(RuntimeError):  # its thread pool is shut down
        await db.read(lambda conn: accounts.revoked_since(conn, 0))


async def test_stop_after_start_with_live_settings_and_no_config_centre_returns_no_errors(
        settings: Settings) -> None:
    backends = Backends(settings, "test")
    backends.rate_limit()
    backends.objects()
    backends.registration("imray-socket", "127.0.0.1", 9101)
    backends.directory("imray-socket")
    await backends.start()
    assert await backends.stop() == []


async def test_stop_without_start_returns_no_errors(settings: Settings) -> None:
    backends = Backends(settings, "test")
    backends.database()
    backends.revoked_logins()
    assert await backends.stop() == []
