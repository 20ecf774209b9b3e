"""The server API's rules without Ray: scopes, senders, idempotency keys, and the admin storage."""

from __future__ import annotations

import pickle
import time

import pytest

from imray.domain.errors import BadRequest, Conflict, Forbidden, Invalid, NotFound, Unavailable
from imray.domain.scopes import (
    InsufficientScope,
    ServerClient,
    ShardBusy,
    check_bot_name,
    check_idempotency_key,
    check_scopes,
    outcome_error,
    require,
    sender_of,
)
from imray.domain.tokens import Principal
from imray.storage import accounts, admin
from imray.storage.db import Database


def client_token(scope: str) -> Principal:
    return Principal(sub="svc", client_id="svc", scope=scope, jti="j", exp=int(time.time()) + 60)


def test_a_client_scope_is_checked_against_the_known_names_and_normalised() -> None:
    assert check_scopes(" users:admin messages:send users:admin ") == "messages:send users:admin"
    with pytest.raises(Invalid, match="unknown scopes"):
        check_scopes("users:admin root")
    with pytest.raises(Invalid):
        check_scopes("   ")


def test_a_client_token_with_the_scope_passes_and_without_it_is_refused_naming_the_scope() -> None:
    require(client_token("users:read messages:send"), "messages:send")
    with pytest.raises(InsufficientScope) as exc:
        require(client_token("users:read"), "users:admin")
    assert (exc.value.status, exc.value.scope) == (403, "users:admin")


def test_a_scope_name_inside_another_does_not_count() -> None:
    with pytest.raises(InsufficientScope):
        require(client_token("users:administrator"), "users:admin")


def test_a_users_token_is_refused_on_server_routes_whatever_its_scope_says() -> None:
    user = Principal(sub="7", client_id="imray-app", scope="users:admin", jti="j", exp=0, user_id=7, node="sn-1")
    with pytest.raises(InsufficientScope, match="not a user's"):
        require(user, "users:admin")


def test_an_insufficient_scope_error_survives_pickling() -> None:
    again = pickle.loads(pickle.dumps(InsufficientScope("users:read")))
    assert isinstance(again, InsufficientScope) and again.scope == "users:read"


def test_only_a_client_with_an_enabled_bot_can_send() -> None:
    assert sender_of(ServerClient("c", 42, revoked=False)) == 42
    with pytest.raises(Forbidden, match="no bot"):
        sender_of(ServerClient("c", None, revoked=False))
    with pytest.raises(Forbidden, match="disabled"):
        sender_of(ServerClient("c", 42, revoked=False, bot_disabled=True))


@pytest.mark.parametrize("key", ["", " ", "a b", "x" * 65, "é", "tab\there"])
def test_odd_idempotency_keys_are_refused(key: str) -> None:
    with pytest.raises(BadRequest):
        check_idempotency_key(key)


def test_bot_names_follow_the_username_rules() -> None:
    assert check_bot_name("report-bot") == "report-bot"
    for bad in ("ab", "has space", "x" * 33, "ünï"):
        with pytest.raises(Invalid):
            check_bot_name(bad)


def test_a_shards_refusal_keeps_its_meaning_over_http() -> None:
    assert isinstance(outcome_error("forbidden", "m"), Forbidden)
    assert isinstance(outcome_error("not_found", "m"), NotFound)
    assert isinstance(outcome_error("internal", "m"), Unavailable)
    busy = outcome_error("rate_limited", "m")
    assert isinstance(busy, ShardBusy) and busy.status == 429
    assert outcome_error("whatever", "m").status == 400


# -- storage --------------------------------------------------------------------------------------


def test_a_bot_client_creates_its_bot_account_which_no_password_opens(sqlite_db: Database) -> None:
    bot_id = sqlite_db.transaction(lambda c: admin.create_bot_client(c, "helper", "helper-1", "h", "messages:send"))
    user = sqlite_db.transaction(lambda c: admin.user(c, bot_id))
    assert user is not None and user["bot"] and not user["disabled"]
    assert sqlite_db.transaction(lambda c: accounts.credentials(c, "helper")) == (bot_id, admin.NO_PASSWORD)
    found = sqlite_db.transaction(lambda c: admin.server_client(c, "helper-1"))
    assert found == ServerClient("helper-1", bot_id, revoked=False, bot_disabled=False)


def test_a_bot_name_already_taken_creates_neither_account_nor_client(sqlite_db: Database) -> None:
    sqlite_db.transaction(lambda c: accounts.create_user(c, "taken", "hash", "taken"))
    with pytest.raises(Conflict):
        sqlite_db.transaction(lambda c: admin.create_bot_client(c, "taken", "taken-1", "h", "messages:send"))
    assert sqlite_db.transaction(lambda c: admin.server_client(c, "taken-1")) is None


def test_a_revoked_client_is_listed_as_revoked_and_unknown_to_the_grants(sqlite_db: Database) -> None:
    sqlite_db.transaction(lambda c: accounts.create_client(c, "svc-1", "svc", "h", "users:read"))
    assert sqlite_db.transaction(lambda c: admin.revoke_client(c, "svc-1"))
    assert sqlite_db.transaction(lambda c: admin.revoke_client(c, "svc-1"))  # again: still known, no error
    assert not sqlite_db.transaction(lambda c: admin.revoke_client(c, "nobody"))
    assert sqlite_db.transaction(lambda c: accounts.client(c, "svc-1")) is None
    listed = sqlite_db.transaction(admin.list_clients)
    assert [(r["client_id"], r["revoked_at"] is not None) for r in listed] == [("svc-1", True)]
    assert "secret_hash" not in listed[0]
    assert sqlite_db.transaction(lambda c: admin.server_client(c, "svc-1")).revoked  # type: ignore[union-attr]


def test_ending_a_users_logins_revokes_each_live_login_and_no_one_elses(sqlite_db: Database) -> None:
    alice = sqlite_db.transaction(lambda c: accounts.create_user(c, "alice", "h", "alice"))["id"]
    bob = sqlite_db.transaction(lambda c: accounts.create_user(c, "bob", "h", "bob"))["id"]
    for token, family, user, ttl in [("t1", "fa1", alice, 60), ("t2", "fa1", alice, 60), ("t3", "fa2", alice, 60),
                                     ("t4", "fb", bob, 60), ("t5", "old", alice, -3600)]:
        sqlite_db.transaction(lambda c, t=token, f=family, u=user, s=ttl:
                              accounts.store_refresh(c, t, f, u, "imray-app", "chat", s))
    ended = sqlite_db.transaction(lambda c: admin.end_logins(c, alice, keep_s=900))
    assert sorted(ended) == ["fa1", "fa2"]  # "old" expired long enough ago that its tokens are dead
    revoked = {f for f, _ in sqlite_db.transaction(lambda c: accounts.revoked_since(c, 0))}
    assert revoked == {"fa1", "fa2"}
    assert sqlite_db.transaction(lambda c: accounts.consume_refresh(c, "t4", client_id="imray-app", keep_s=900))


def test_disabling_and_enabling_an_account(sqlite_db: Database) -> None:
    uid = sqlite_db.transaction(lambda c: accounts.create_user(c, "carol", "h", "carol"))["id"]
    assert not sqlite_db.transaction(lambda c: admin.is_disabled(c, uid))
    sqlite_db.transaction(lambda c: admin.set_disabled(c, uid, True))
    assert sqlite_db.transaction(lambda c: admin.is_disabled(c, uid))
    assert sqlite_db.transaction(lambda c: admin.user_by_name(c, "carol"))["disabled"]  # type: ignore[index]
    sqlite_db.transaction(lambda c: admin.set_disabled(c, uid, False))
    assert not sqlite_db.transaction(lambda c: admin.is_disabled(c, uid))
    assert not sqlite_db.transaction(lambda c: admin.is_disabled(c, 999_999))  # no such user: not disabled
