"""The embedded stack's denylist: a revoked login reaches every process's cache from the database."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from imray.adapters.revocations import RevocationFollower, Revocations
from imray.storage import accounts
from imray.storage.db import Database
from imray.storage.schema import refresh_tokens, revoked_logins

TTL_S = 900
APP = "imray-app"


def revoke(conn, token_hash: str, keep_s: int, client_id: str = APP) -> str | None:
    return accounts.revoke_family(conn, token_hash, client_id=client_id, keep_s=keep_s)


def consume(conn, token_hash: str, keep_s: int, client_id: str = APP):
    return accounts.consume_refresh(conn, token_hash, client_id=client_id, keep_s=keep_s)


@pytest.fixture
def db(sqlite_db: Database) -> Database:
    return sqlite_db


def _login(db: Database, family: str, refresh_hash: str) -> None:
    def store(conn):
        user = accounts.create_user(conn, f"u{family}", "x", "u")["id"]
        accounts.store_refresh(conn, refresh_hash, family, user, "imray-app", "chat", 3600)
    db.transaction(store)


async def test_a_revoked_login_reaches_another_process_cache(db: Database) -> None:
    _login(db, "fam1", "h1")
    _login(db, "fam2", "h2")
    cache = Revocations()  # another process's view: nothing was set in it directly
    follower = RevocationFollower(db, cache, TTL_S)
    assert await follower.poll_once() == 0
    assert db.transaction(lambda c: revoke(c, "h1", keep_s=TTL_S)) == "fam1"
    assert await follower.poll_once() == 1
    assert cache.known("fam1")
    assert not cache.known("fam2")  # another login is not touched


async def test_a_reused_refresh_token_revokes_its_login_for_every_process(db: Database) -> None:
    _login(db, "fam3", "h3")
    cache = Revocations()
    follower = RevocationFollower(db, cache, TTL_S)
    assert db.transaction(lambda c: consume(c, "h3", keep_s=TTL_S))["family"] == "fam3"  # rotated once
    again = db.transaction(lambda c: consume(c, "h3", keep_s=TTL_S))
    assert again == {"reused": True, "family": "fam3"}
    await follower.poll_once()
    assert cache.known("fam3")


async def test_revocations_older_than_any_access_token_are_not_loaded(db: Database) -> None:
    _login(db, "old", "h4")
    db.transaction(lambda c: revoke(c, "h4", keep_s=TTL_S))
    cache = Revocations()
    # Its tokens would have expired: a follower whose tokens live 0 s sees nothing to deny.
    follower = RevocationFollower(db, cache, token_ttl_s=0)
    await follower.poll_once()
    assert not cache.known("old")
    # The same revocation with a 15-minute token lifetime is denied.
    follower = RevocationFollower(db, cache, TTL_S)
    await follower.poll_once()
    assert cache.known("old")


def test_revoking_twice_keeps_one_row(db: Database) -> None:
    _login(db, "fam5", "h5")
    db.transaction(lambda c: revoke(c, "h5", keep_s=TTL_S))
    db.transaction(lambda c: revoke(c, "h5", keep_s=TTL_S))
    assert [f for f, _ in db.transaction(lambda c: accounts.revoked_since(c, 0))] == ["fam5"]


def test_revocations_past_the_token_lifetime_are_deleted(db: Database) -> None:
    _login(db, "fam6", "h6")
    _login(db, "fam7", "h7")
    db.transaction(lambda c: revoke(c, "h6", keep_s=TTL_S))
    # Revoked 16 minutes ago: its access tokens (15 minutes) have all expired.
    db.transaction(lambda c: c.execute(update(revoked_logins).values(revoked_at=revoked_logins.c.revoked_at - 960_000)))
    db.transaction(lambda c: revoke(c, "h7", keep_s=TTL_S))
    assert [f for f, _ in db.transaction(lambda c: accounts.revoked_since(c, 0))] == ["fam7"]
    # The old login stays logged out: its refresh tokens are spent.
    again = db.transaction(lambda c: consume(c, "h6", keep_s=TTL_S))
    assert again == {"reused": True, "family": "fam6"}


async def test_a_login_the_follower_loaded_is_revoked_for_the_authenticator(db: Database) -> None:
    _login(db, "fam8", "h8")
    cache = Revocations()
    revoked = cache  # what the process's Authenticator asks
    assert await revoked.is_revoked("fam8") is False
    db.transaction(lambda c: revoke(c, "h8", keep_s=TTL_S))
    await RevocationFollower(db, cache, TTL_S).poll_once()
    assert await revoked.is_revoked("fam8") is True


async def test_a_login_revoked_in_this_process_is_revoked_at_once_and_only_that_login() -> None:
    revoked = Revocations()
    await revoked.revoke("fam9", ttl_s=TTL_S)
    assert await revoked.is_revoked("fam9") is True
    assert await revoked.is_revoked("fam10") is False


# -- the view's listeners, and Redis away (a real connection refused: nothing listens on port 1) ---

REDIS_AWAY = "redis://127.0.0.1:1/0"


async def test_listeners_hear_of_each_revoked_login_once(db: Database) -> None:
    _login(db, "fam11", "h11")
    view = Revocations()
    heard: list[list[str]] = []
    view.on_revoked(heard.append)
    follower = RevocationFollower(db, view, TTL_S)
    db.transaction(lambda c: revoke(c, "h11", keep_s=TTL_S))
    await follower.poll_once()
    await follower.poll_once()  # read again (the overlap): not news
    assert heard == [["fam11"]]


async def test_with_redis_away_a_revocation_is_kept_and_every_process_learns_it_from_the_database(
        db: Database) -> None:
    _login(db, "fam12", "h12")
    auth, gateway = Revocations(REDIS_AWAY), Revocations(REDIS_AWAY)  # two processes, Redis unreachable
    try:
        assert db.transaction(lambda c: revoke(c, "h12", keep_s=TTL_S)) == "fam12"
        await auth.revoke("fam12", TTL_S)  # Redis refuses: no error, the database has it
        assert await auth.is_revoked("fam12")
        assert not await gateway.is_revoked("fam12")  # not yet read from the database
        await RevocationFollower(db, gateway, TTL_S).poll_once()
        assert await gateway.is_revoked("fam12")  # Redis still away: the database's word holds
        assert not await gateway.is_revoked("fam13")
    finally:
        await auth.close()
        await gateway.close()


async def test_an_expired_refresh_token_is_refused_without_being_spent(db: Database) -> None:
    _login(db, "fam20", "h20")
    db.transaction(lambda c: c.execute(update(refresh_tokens).where(refresh_tokens.c.token_hash == "h20")
                                       .values(expires_at=1)))
    for _ in range(2):  # a second try is refused the same way, not taken for a leaked token's reuse
        assert db.transaction(lambda c: consume(c, "h20",
                                                                 keep_s=TTL_S)) is None
    assert db.transaction(lambda c: accounts.revoked_since(c, 0)) == []


async def test_a_refresh_token_of_another_client_is_neither_spent_nor_revoked(db: Database) -> None:
    _login(db, "fam21", "h21")
    assert db.transaction(lambda c: consume(c, "h21", keep_s=TTL_S, client_id="bot")) is None
    assert db.transaction(lambda c: revoke(c, "h21", keep_s=TTL_S, client_id="bot")) is None
    assert db.transaction(lambda c: accounts.revoked_since(c, 0)) == []
    used = db.transaction(lambda c: consume(c, "h21",
                                                             keep_s=TTL_S))
    assert used is not None and used["family"] == "fam21"
