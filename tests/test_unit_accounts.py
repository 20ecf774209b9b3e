"""A user's own account (issue 18) without Ray: name rules, the search's prefix, the password change,
log-outs and deletion through the domain, and their SQL on SQLite."""

from __future__ import annotations

import pytest

from imray.actors.login_stamps import LoginStamps
from imray.adapters.rate_limits import LocalFailureCounts
from imray.deployments.account_store import DatabaseAccountStore
from imray.domain.account_changes import (
    UNKNOWN_DEVICE,
    check_prefix,
    deleted_username,
    device_name,
    like_pattern,
    may_match,
)
from imray.domain.account_security import AccountSecurity, TooManyFailures
from imray.domain.accounts import USERNAME, check_nickname, check_registration
from imray.domain.errors import Forbidden, Invalid, NotFound
from imray.domain.login_guard import LoginGuard, LoginLimits, PasswordQueue
from imray.domain.oauth import OAuthError, OAuthServer
from imray.storage import accounts, admin, logins, profiles
from imray.storage import groups as group_store
from imray.storage.db import Database
from imray.storage.schema import logins as login_table

KEEP_S = 900


class PlainPasswords:
    """Hashes that are the password with a mark: enough for the rules, no argon2 cost."""

    def hash(self, password: str) -> str:
        return f"h:{password}"

    def verify(self, stored: str | None, password: str) -> bool:
        return stored == f"h:{password}"


class Revoked:
    def __init__(self) -> None:
        self.families: list[str] = []

    async def is_revoked(self, family: str) -> bool:
        return family in self.families

    async def revoke(self, family: str, ttl_s: int) -> None:
        self.families.append(family)


def user(db: Database, name: str, password: str = "secret-password") -> int:
    return db.transaction(lambda c: accounts.create_user(c, name, f"h:{password}", name))["id"]


def login(db: Database, user_id: int, family: str) -> None:
    def write(conn) -> None:  # type: ignore[no-untyped-def]
        accounts.store_refresh(conn, f"t-{family}", family, user_id, "imray-app", "chat", 3600)
        logins.record(conn, family, user_id, "imray-app", f"device {family}")
    db.transaction(write)


def security(db: Database, revoked: Revoked, per_account: int = 3) -> AccountSecurity:
    queue = PasswordQueue(1, 4)
    guard = LoginGuard(LocalFailureCounts(), LoginLimits(per_account, 0, 300), queue)
    return AccountSecurity(DatabaseAccountStore(db, KEEP_S), PlainPasswords(), guard, queue, revoked, KEEP_S)


def live(db: Database, user_id: int) -> list[str]:
    return [r["family"] for r in db.transaction(lambda c: logins.active(c, user_id))]


# -- names ------------------------------------------------------------------------------------------

def test_a_nickname_of_at_most_64_ordinary_characters_is_kept_and_a_blank_one_means_the_username() -> None:
    assert check_nickname("  Ann Lee  ", "ann") == "Ann Lee"
    assert check_nickname("   ", "ann") == "ann"
    family = "\U0001f469\u200d\U0001f467"  # joined by a zero-width joiner: kept
    assert check_nickname(f" \u00c5sa {family} \u0627\u0644\u0639\u0631\u0628\u064a\u0629", "a") == \
        f"\u00c5sa {family} \u0627\u0644\u0639\u0631\u0628\u064a\u0629"
    assert check_nickname("n" * 64, "ann") == "n" * 64


@pytest.mark.parametrize("bad", ["n" * 65, "a\x00b", "line\nbreak", "tab\t", "\x7f", "evil\u202etxt.exe",
                                 "\u2066isolate", "lone \ud800 surrogate", 7, None])
def test_a_nickname_too_long_or_with_control_characters_or_overrides_is_refused(bad: object) -> None:
    with pytest.raises(Invalid):
        check_nickname(bad, "ann")


def test_a_login_is_listed_by_its_device_name_or_a_cleaned_user_agent() -> None:
    assert device_name(" Ann's phone ", "curl/8") == "Ann's phone"
    assert device_name(None, "Mozilla/5.0\x00\n (X11)") == "Mozilla/5.0 (X11)"
    assert device_name("", "u" * 500) == "u" * 64
    assert device_name(None, "") == UNKNOWN_DEVICE
    for bad in ("d" * 65, "a\x1bb", "\u202e"):
        with pytest.raises(Invalid):
            device_name(bad, "")


def test_a_search_prefix_is_lower_cased_and_too_short_or_too_long_or_odd_prefixes_are_refused() -> None:
    assert check_prefix("BoB", 3) == "bob"
    for bad in ("", "bo", "x" * 33, "ab\x00"):
        with pytest.raises(Invalid):
            check_prefix(bad, 3)


def test_like_wildcards_in_a_prefix_are_escaped_and_only_username_characters_can_match() -> None:
    assert like_pattern("a_b") == "a!_b%"
    assert like_pattern("%!\\") == "!%!!\\%"
    assert may_match("a_b") and may_match("x.y-z")
    assert not may_match("%%%") and not may_match("a b") and not may_match("\u00e9t\u00e9")


def test_a_deleted_accounts_username_can_never_be_signed_up_for() -> None:
    assert not USERNAME.fullmatch(deleted_username(2**63 - 1)) and len(deleted_username(2**63 - 1)) <= 32


# -- the search's SQL ---------------------------------------------------------------------------------

def test_the_search_ignores_case_escapes_wildcards_pages_by_id_and_hides_disabled_and_deleted(
        sqlite_db: Database) -> None:
    ids = {name: user(sqlite_db, name) for name in ("Bob_one", "bob_two", "bobby", "boXb", "b_bx", "gone_bob")}
    sqlite_db.transaction(lambda c: admin.set_disabled(c, ids["bobby"], True))

    def search(prefix: str, after: int = 0, limit: int = 10) -> list[str]:
        found = sqlite_db.transaction(lambda c: profiles.search(c, like_pattern(prefix), after, limit))
        return [u["username"] for u in found]

    assert search("bob") == ["Bob_one", "bob_two"]
    assert search("bob_") == ["Bob_one", "bob_two"]
    assert search("b_b") == ["b_bx"]  # `_` is a character, not "any one"
    assert search("bob", limit=1) == ["Bob_one"]
    assert search("bob", after=ids["Bob_one"]) == ["bob_two"]
    sqlite_db.transaction(lambda c: profiles.delete_account(c, ids["bob_two"], KEEP_S))
    assert search("bob") == ["Bob_one"]


# -- logins -------------------------------------------------------------------------------------------

def test_logins_are_listed_while_they_have_a_live_refresh_token_and_end_one_by_one(sqlite_db: Database) -> None:
    ann, bob = user(sqlite_db, "ann"), user(sqlite_db, "bob")
    for family in ("f1", "f2", "f3"):
        login(sqlite_db, ann, family)
    login(sqlite_db, bob, "fb")
    assert sorted(live(sqlite_db, ann)) == ["f1", "f2", "f3"]
    sqlite_db.transaction(lambda c: accounts.revoke_family(c, "t-f1", client_id="imray-app", keep_s=KEEP_S))
    assert sorted(live(sqlite_db, ann)) == ["f2", "f3"]  # logged out elsewhere: not listed
    rows = {r["family"]: r["id"] for r in sqlite_db.transaction(lambda c: logins.active(c, ann))}
    bobs = sqlite_db.transaction(lambda c: logins.active(c, bob))[0]["id"]
    assert sqlite_db.transaction(lambda c: logins.end_one(c, ann, bobs, KEEP_S)) is None  # not hers
    assert sqlite_db.transaction(lambda c: logins.end_one(c, ann, rows["f2"], KEEP_S)) == "f2"
    assert sqlite_db.transaction(lambda c: logins.end_one(c, ann, rows["f2"], KEEP_S)) is None  # over
    assert live(sqlite_db, ann) == ["f3"] and live(sqlite_db, bob) == ["fb"]


async def test_a_password_change_needs_the_current_one_and_ends_every_other_login(sqlite_db: Database) -> None:
    ann, bob = user(sqlite_db, "ann"), user(sqlite_db, "bob")
    for family in ("here", "phone", "laptop"):
        login(sqlite_db, ann, family)
    login(sqlite_db, bob, "bobs")
    revoked = Revoked()
    accounts_ = security(sqlite_db, revoked)
    with pytest.raises(Forbidden):
        await accounts_.change_password(ann, "here", "wrong-password", "new-password", "10.0.0.1")
    with pytest.raises(Forbidden):
        await accounts_.change_password(ann, "here", "lone \ud800 surrogate", "new-password", "10.0.0.1")
    for bad in ("short", "lone \udfff surrogate"):
        with pytest.raises(Invalid):
            await accounts_.change_password(ann, "here", "secret-password", bad, "10.0.0.1")
    assert await accounts_.change_password(ann, "here", "secret-password", "new-password", "10.0.0.1") == 2
    assert sorted(revoked.families) == ["laptop", "phone"]
    assert live(sqlite_db, ann) == ["here"] and live(sqlite_db, bob) == ["bobs"]
    assert sqlite_db.transaction(lambda c: accounts.credentials(c, "ann")) == (ann, "h:new-password")


async def test_wrong_passwords_count_as_failed_logins_until_the_account_is_throttled(sqlite_db: Database) -> None:
    ann = user(sqlite_db, "ann")
    accounts_ = security(sqlite_db, Revoked(), per_account=2)
    for _ in range(2):
        with pytest.raises(Forbidden):
            await accounts_.delete(ann, "wrong-password", "10.0.0.1")
    with pytest.raises(TooManyFailures):  # the right password waits for the window too
        await accounts_.delete(ann, "secret-password", "10.0.0.1")
    with pytest.raises(TooManyFailures):
        await accounts_.change_password(ann, None, "secret-password", "new-password", "10.0.0.2")


async def test_log_out_everywhere_and_ending_one_login_revoke_them(sqlite_db: Database) -> None:
    ann = user(sqlite_db, "ann")
    for family in ("a", "b", "c"):
        login(sqlite_db, ann, family)
    revoked = Revoked()
    accounts_ = security(sqlite_db, revoked)
    one = next(r["id"] for r in sqlite_db.transaction(lambda c: logins.active(c, ann)) if r["family"] == "a")
    await accounts_.end_one(ann, one)
    with pytest.raises(NotFound):
        await accounts_.end_one(ann, one)
    with pytest.raises(NotFound):
        await accounts_.end_one(ann, 2**63 - 1)
    assert await accounts_.end_all(ann) == 2
    assert await accounts_.end_all(ann) == 0  # again: nothing left to end
    assert sorted(revoked.families) == ["a", "b", "c"] and live(sqlite_db, ann) == []


async def test_a_deleted_account_frees_its_name_and_leaves_its_groups_blocks_and_logins(sqlite_db: Database) -> None:
    ann, bob, cy = user(sqlite_db, "ann"), user(sqlite_db, "bob"), user(sqlite_db, "cy")
    login(sqlite_db, ann, "fa")
    group = sqlite_db.transaction(lambda c: group_store.create_group(c, "g", ann, [bob, cy]))
    sqlite_db.transaction(lambda c: accounts.block(c, ann, bob))
    sqlite_db.transaction(lambda c: accounts.block(c, cy, ann))
    sqlite_db.transaction(lambda c: accounts.set_avatar(c, ann, "http://x/api/users/1/avatar?v=file123"))
    revoked = Revoked()
    deleted = await security(sqlite_db, revoked).delete(ann, "secret-password", "")
    assert deleted.families == ["fa"] and revoked.families == ["fa"] and deleted.avatar_file_id == "file123"
    assert deleted.convs == [group["conv"]]
    placeholder = sqlite_db.transaction(lambda c: accounts.user_by_id(c, ann))
    assert placeholder == {"id": ann, "username": deleted_username(ann), "nickname": "Deleted user",
                           "avatar_url": None}
    assert sqlite_db.transaction(lambda c: group_store.group(c, group["id"]))["owner_id"] == bob
    assert sqlite_db.transaction(lambda c: group_store.members(c, group["id"])) == [bob, cy]
    assert sqlite_db.transaction(lambda c: accounts.blocked_by(c, cy)) == []
    assert sqlite_db.transaction(lambda c: admin.is_disabled(c, ann))  # every grant refused
    assert user(sqlite_db, "ann") != ann  # the name is free again
    with pytest.raises(NotFound):  # deleted once: no password left to check
        await security(sqlite_db, revoked).delete(ann, "secret-password", "")


async def test_a_password_grant_refuses_a_bad_device_name_before_checking_the_password() -> None:
    server = OAuthServer(None, None, None, None, None, 60)  # type: ignore[arg-type]  # nothing reached
    form = {"grant_type": "password", "client_id": "imray-app", "username": "ann", "password": "x",
            "device_name": "x" * 65}
    with pytest.raises(OAuthError) as refused:
        await server.token(form, None)
    assert refused.value.error == "invalid_request" and "device_name" in refused.value.message


async def test_a_socket_node_stamps_its_logins_soon_then_once_a_minute_and_a_reconnect_not_again(
        sqlite_db: Database) -> None:
    ann = user(sqlite_db, "ann")
    for family in ("a", "b"):
        login(sqlite_db, ann, family)
    sqlite_db.transaction(lambda c: c.execute(login_table.update().values(last_seen_at=1)))
    now = [1000.0]
    open_here = ["a"]
    stamps = LoginStamps(sqlite_db, lambda: open_here, every_s=60, clock=lambda: now[0])
    assert await stamps.stamp_once() == 1  # a new session's login at once
    seen = {r["family"]: r["last_seen_at"] for r in sqlite_db.transaction(lambda c: logins.active(c, ann))}
    assert seen["a"] > 1 and seen["b"] == 1
    open_here.append("b")
    now[0] += 30
    assert stamps.due() == ["b"]  # "a" was stamped 30 s ago
    now[0] += 31
    assert stamps.due() == ["a"]
    open_here.remove("a")  # closed, and back within the minute: its stamp is fresh, not stamped again
    now[0] += 1
    assert stamps.due() == []
    open_here.append("a")
    assert stamps.due() == []
    open_here.remove("a")  # closed for a minute: forgotten, stamped at once when it comes back
    now[0] += 60
    assert stamps.due() == ["b"]
    open_here.append("a")
    assert stamps.due() == ["a"]


@pytest.mark.parametrize("nickname", ["bell\u0007", "evil\u202eredro", "nul\u0000", "x" * 65])
def test_sign_up_refuses_the_nicknames_an_edit_refuses(nickname: str) -> None:
    with pytest.raises(Invalid):
        check_registration("alice", "password1", nickname)
    assert check_registration("alice", "password1", " ") == ("alice", "password1", "alice")
