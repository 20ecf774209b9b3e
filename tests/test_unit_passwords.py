"""Password hashing with argon2id."""

from __future__ import annotations

import pytest

from imray.domain.passwords import Passwords


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(time_cost=1, memory_kib=1024, parallelism=1)  # cheap parameters: same code path


def test_default_parameters_are_argon2id() -> None:
    stored = Passwords().hash("correct horse battery staple")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_hash_is_argon2id_and_salted(passwords: Passwords) -> None:
    first, second = passwords.hash("s3cret-pass"), passwords.hash("s3cret-pass")
    assert first.startswith("$argon2id$")
    assert "s3cret-pass" not in first
    assert first != second  # a fresh salt every time


def test_verify(passwords: Passwords) -> None:
    stored = passwords.hash("s3cret-pass")
    assert passwords.verify(stored, "s3cret-pass") is True
    assert passwords.verify(stored, "s3cret-pasS") is False
    assert passwords.verify(stored, "") is False
    assert passwords.verify(stored, "s3cret-pass ") is False


def test_unicode_password(passwords: Passwords) -> None:
    stored = passwords.hash("pässwörd-密码")
    assert passwords.verify(stored, "pässwörd-密码") is True
    assert passwords.verify(stored, "passwort-密码") is False


def test_verify_unknown_user_is_false(passwords: Passwords) -> None:
    assert passwords.verify(None, "anything at all") is False
    assert passwords.verify(None, "imray-dummy-password") is False  # not even the dummy's own password


def test_verify_empty_stored_hash_with_anything_else_is_false(passwords: Passwords) -> None:
    assert passwords.verify("", "anything at all") is False


def test_verify_empty_stored_hash_never_matches(passwords: Passwords) -> None:
    assert passwords.verify("", "imray-dummy-password") is False


@pytest.mark.parametrize("stored", ["not-a-hash", "$argon2id$garbage", "$2b$12$abcdefghijklmnopqrstuv"])
def test_verify_corrupt_hash_is_false(passwords: Passwords, stored: str) -> None:
    assert passwords.verify(stored, "whatever") is False


def test_hash_from_other_parameters_still_verifies(passwords: Passwords) -> None:
    """Parameters live in the hash: raising the cost later keeps old hashes valid."""
    stored = Passwords(time_cost=2, memory_kib=2048).hash("s3cret-pass")
    assert passwords.verify(stored, "s3cret-pass") is True
