"""The signing keyring without Ray: its rules, its files (modes, the old layout, atomic changes), how a
process follows a rotation (rate-limited re-reads), and RFC 7662 introspection's decisions."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_unit_oauth import (
    ALICE,
    ALICE_PASSWORD,
    BOT,
    BOT_SECRET,
    FakeNodes,
    FakePasswords,
    FakeRevoked,
    FakeStore,
    node,
)

from imray.domain.errors import Conflict, NotFound, Unauthorized
from imray.domain.keyring import FixedKeys, Keyring
from imray.domain.oauth import Client, OAuthError, OAuthServer
from imray.domain.tokens import SigningKey, TokenIssuer, TokenVerifier, digest
from imray.storage import keyfiles
from imray.storage.keyfiles import KeyFiles

ISSUER = "http://127.0.0.1:8000"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def three() -> tuple[SigningKey, SigningKey, SigningKey]:
    return SigningKey.generate(), SigningKey.generate(), SigningKey.generate()


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(old)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the ring's rules ---------------------------------------------------------------------------------


def test_a_ring_publishes_every_key_and_signs_with_the_active_one(three) -> None:
    a, b, _ = three
    ring = Keyring((a,), a.kid).added(b)
    assert ring.active == b and [k.kid for k in ring.public()] == [a.kid, b.kid]
    staged = Keyring((a,), a.kid).added(b, activate=False)
    assert staged.active == a and staged.activated(b.kid).active == b


def test_the_active_key_cannot_be_retired_nor_an_unknown_one(three) -> None:
    a, b, c = three
    ring = Keyring((a, b), b.kid)
    with pytest.raises(Conflict):
        ring.retired(b.kid)
    with pytest.raises(NotFound):
        ring.retired(c.kid)
    with pytest.raises(NotFound):
        ring.activated(c.kid)
    with pytest.raises(Conflict):
        ring.added(a)
    assert ring.retired(a.kid).public() == [b.public()]
    with pytest.raises(ValueError):
        Keyring((a,), b.kid)


# -- the files ----------------------------------------------------------------------------------------


def test_a_new_keyring_is_owner_only_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    directory = tmp_path / "keys"
    ring = keyfiles.ensure(directory)
    keyfiles.rotate(directory)
    assert mode(directory) == 0o700
    files = [p for p in directory.iterdir()]
    assert {p.name for p in files} >= {f"{ring.active_kid}.pem", "active"}
    assert all(mode(p) == 0o600 for p in files), [(p.name, oct(mode(p))) for p in files]
    assert not [p for p in files if p.name.endswith(".tmp")]


def test_imray_keys_rotate_in_a_fresh_data_dir_makes_it_owner_only(tmp_path: Path, open_umask: None) -> None:
    from imray.cli import main

    data = tmp_path / "fresh"
    assert main(["--data-dir", str(data), "keys", "rotate"]) == 0
    assert mode(data) == 0o700 and mode(data / "keys") == 0o700
    assert main(["--data-dir", str(data), "keys", "list"]) == 0
    assert len(keyfiles.read_ring(data / "keys").keys) == 2


def test_the_old_single_key_file_is_moved_into_the_ring_and_its_tokens_still_verify(
        tmp_path: Path, three) -> None:
    a = three[0]
    directory = tmp_path / "keys"
    directory.mkdir()
    (directory / keyfiles.LEGACY).write_text(a.private_pem)
    token = TokenIssuer(a, ISSUER, 60).issue_user(3, "imray-app", "n1")
    assert keyfiles.read_ring(directory).active == a  # readable as it is, before any migration
    ring = keyfiles.ensure(directory)
    assert ring.active == a and not (directory / keyfiles.LEGACY).exists()
    assert TokenVerifier(KeyFiles(directory), ISSUER).verify(token).user_id == 3


def test_an_existing_ring_is_only_read(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    keyfiles.ensure(directory)
    before = keyfiles.stamp(directory)
    keyfiles.ensure(directory)
    assert keyfiles.stamp(directory) == before


def test_rotate_then_retire_on_disk(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    first = keyfiles.ensure(directory).active_kid
    ring, key = keyfiles.rotate(directory)
    assert ring.active_kid == key.kid and [k.kid for k in keyfiles.read_ring(directory).keys] == [first, key.kid]
    with pytest.raises(Conflict):
        keyfiles.retire(directory, key.kid)
    assert (directory / f"{key.kid}.pem").exists()
    keyfiles.retire(directory, first)
    assert not (directory / f"{first}.pem").exists()
    assert [k.kid for k in keyfiles.read_ring(directory).keys] == [key.kid]


def test_retire_without_a_ring_makes_none(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        keyfiles.retire(tmp_path / "keys", "abc")
    assert not (tmp_path / "keys").exists()


# -- a process following the ring ---------------------------------------------------------------------


def test_a_process_sees_a_rotation_within_the_check_interval(tmp_path: Path) -> None:
    directory, clock = tmp_path / "keys", Clock()
    old = keyfiles.ensure(directory).active_kid
    source = KeyFiles(directory, check_s=2.0, clock=clock)
    issuer = TokenIssuer(source, ISSUER, 60)
    _, new = keyfiles.rotate(directory)
    assert source.current().active_kid == old  # not looked yet
    clock.now += 2.0
    assert source.current().active_kid == new.kid
    token = issuer.issue_user(1, "imray-app", "n1")
    assert token.split(".")[0] and TokenVerifier(source, ISSUER).verify(token).user_id == 1


def test_a_token_with_an_unknown_kid_makes_a_verifier_look_at_once_but_not_twice_a_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory, clock = tmp_path / "keys", Clock()
    keyfiles.ensure(directory)
    source = KeyFiles(directory, check_s=2.0, unknown_kid_s=1.0, clock=clock)
    verifier = TokenVerifier(source, ISSUER)
    _, new = keyfiles.rotate(directory)
    token = TokenIssuer(new, ISSUER, 60).issue_user(5, "imray-app", "n1")
    assert verifier.verify(token).user_id == 5  # no wait for the next check
    reads: list[Path] = []
    real = keyfiles.read_ring
    monkeypatch.setattr(keyfiles, "read_ring", lambda d: reads.append(d) or real(d))
    keyfiles.rotate(directory)  # a change on disk, so a look would read
    reads.clear()
    forged = TokenIssuer(SigningKey.generate(), ISSUER, 60).issue_user(5, "imray-app", "n1")
    for _ in range(50):
        with pytest.raises(Unauthorized):
            verifier.verify(forged)
    assert reads == []  # the forced look was spent on the genuine token above, under a second ago
    clock.now += 1.0
    with pytest.raises(Unauthorized):
        verifier.verify(forged)
    assert len(reads) == 1


def test_a_retired_keys_tokens_are_refused_even_when_remembered(tmp_path: Path) -> None:
    directory, clock = tmp_path / "keys", Clock()
    old = keyfiles.ensure(directory).active
    source = KeyFiles(directory, clock=clock)
    verifier = TokenVerifier(source, ISSUER, remember=10)
    token = TokenIssuer(old, ISSUER, 60).issue_user(9, "imray-app", "n1")
    assert verifier.verify(token).user_id == 9
    keyfiles.rotate(directory)
    clock.now += keyfiles.CHECK_S
    assert verifier.verify(token).user_id == 9  # rotated, not retired: still valid
    keyfiles.retire(directory, old.kid)
    clock.now += keyfiles.CHECK_S
    with pytest.raises(Unauthorized):
        verifier.verify(token)


def test_a_broken_key_file_keeps_the_ring_a_process_had(tmp_path: Path) -> None:
    directory, clock = tmp_path / "keys", Clock()
    ring = keyfiles.ensure(directory)
    source = KeyFiles(directory, clock=clock)
    (directory / "ffffffffffffffff.pem").write_text("not a key")
    clock.now += keyfiles.CHECK_S
    assert [k.kid for k in source.current().keys] == [ring.active_kid]
    os.unlink(directory / "ffffffffffffffff.pem")
    (directory / "active").write_text("0123456789abcdef\n")  # names no key
    clock.now += keyfiles.CHECK_S
    assert source.current().active_kid == ring.active_kid


def test_a_token_without_kid_is_refused_once_the_ring_has_two_keys(three) -> None:
    a, b, _ = three
    from jose import jwt

    claims = {"sub": "1", "client_id": "imray-app", "scope": "chat", "node": "n", "iss": ISSUER,
              "iat": int(time.time()), "exp": int(time.time()) + 60, "jti": "x"}
    token = jwt.encode(claims, a.private_pem, algorithm="RS256")
    assert TokenVerifier(FixedKeys(Keyring((a,), a.kid)), ISSUER).verify(token).user_id == 1
    with pytest.raises(Unauthorized):
        TokenVerifier(FixedKeys(Keyring((a, b), b.kid)), ISSUER).verify(token)


# -- introspection ------------------------------------------------------------------------------------


RS, RS_SECRET = "resource-server", "rs-secret"  # a confidential client holding the introspect scope


@pytest.fixture
def served(three) -> tuple[OAuthServer, FakeRevoked, TokenIssuer]:
    key = three[0]
    issuer, revoked, store = TokenIssuer(key, ISSUER, 900), FakeRevoked(), FakeStore()
    store.clients[RS] = Client(RS, "introspect users:read", digest(RS_SECRET))
    server = OAuthServer(store, FakeNodes(node(1)), FakePasswords(), issuer, revoked, 3600,
                         verifier=TokenVerifier([key.public()], ISSUER))
    return server, revoked, issuer


async def test_introspection_tells_a_confidential_client_what_an_active_token_is(served) -> None:
    server, _, issuer = served
    login = await server.token({"grant_type": "password", "username": ALICE, "password": ALICE_PASSWORD,
                                "client_id": "imray-app"}, None)
    answer = await server.introspect({"token": login["access_token"]}, (RS, RS_SECRET))
    assert answer["active"] is True and answer["sub"] == str(login["user_id"]) and answer["scope"] == "chat"
    assert answer["client_id"] == "imray-app" and answer["iss"] == ISSUER and answer["token_type"] == "Bearer"
    assert answer["exp"] - answer["iat"] == 900
    client = issuer.issue_client(BOT, "users.read")
    assert (await server.introspect({"token": client, "client_id": RS, "client_secret": RS_SECRET}, None)
            )["scope"] == "users.read"


async def test_introspection_answers_inactive_for_expired_forged_revoked_and_refresh_tokens(
        served, three) -> None:
    server = served[0]
    login = await server.token({"grant_type": "password", "username": ALICE, "password": ALICE_PASSWORD,
                                "client_id": "imray-app"}, None)
    expired = TokenIssuer(three[0], ISSUER, -10).issue_user(1, "imray-app", "n")
    forged = TokenIssuer(three[1], ISSUER, 900).issue_user(1, "imray-app", "n")
    for token in (expired, forged, login["refresh_token"], "x", "a.b.c"):
        assert await server.introspect({"token": token}, (RS, RS_SECRET)) == {"active": False}
    await server.revoke({"token": login["refresh_token"], "client_id": "imray-app"}, None)
    assert await server.introspect({"token": login["access_token"]}, (RS, RS_SECRET)) == {"active": False}


@pytest.mark.parametrize("form, basic", [
    ({"token": "t"}, None),
    ({"token": "t", "client_id": "imray-app"}, None),  # a public client may not introspect
    ({"token": "t"}, (RS, "wrong")),
    ({"token": "t", "client_id": RS, "client_secret": "wrong"}, None),
    ({"token": "t", "client_id": "nobody", "client_secret": "x"}, None),
])
async def test_introspection_refuses_a_caller_that_is_not_an_authenticated_confidential_client(
        served, form, basic) -> None:
    with pytest.raises(OAuthError) as refused:
        await served[0].introspect(form, basic)
    assert (refused.value.error, refused.value.status) == ("invalid_client", 401)


async def test_introspection_needs_a_token(served) -> None:
    with pytest.raises(OAuthError) as refused:
        await served[0].introspect({}, (RS, RS_SECRET))
    assert (refused.value.error, refused.value.status) == ("invalid_request", 400)


async def test_a_confidential_client_without_the_introspect_scope_learns_nothing(served) -> None:
    server, _, issuer = served
    with pytest.raises(OAuthError) as refused:
        await server.introspect({"token": issuer.issue_client(BOT, "users.read")}, (BOT, BOT_SECRET))
    assert (refused.value.error, refused.value.status) == ("insufficient_scope", 403)


def test_the_keys_directory_is_the_data_dirs_unless_set(tmp_path: Path) -> None:
    from imray.settings import Settings

    assert Settings(data_dir=str(tmp_path)).keys_path == tmp_path / "keys"
    assert Settings(data_dir=str(tmp_path), keys_dir="/run/secrets/imray").keys_path == Path("/run/secrets/imray")
    assert Settings(keys_dir="~/k").keys_path == Path.home() / "k"
