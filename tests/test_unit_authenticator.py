"""Bearer-token checks shared by every edge (domain.authenticator): a valid token of an unrevoked
login passes; a revoked login, a forged or an expired token does not; places for people only refuse
a client's token."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from imray.domain.authenticator import Authenticator
from imray.domain.errors import Forbidden, NotFound, Unauthorized
from imray.domain.tokens import USER_SCOPE, SigningKey, TokenIssuer, TokenVerifier

ISSUER = "http://127.0.0.1:8000"
USER_ID = 42
LOGIN_A, LOGIN_B = "a" * 32, "b" * 32


@dataclass
class FakeRevoked:
    """`RevokedLogins` in memory; `asked` records every lookup."""

    families: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)

    async def is_revoked(self, family: str) -> bool:
        self.asked.append(family)
        return family in self.families

    async def revoke(self, family: str, ttl_s: int) -> None:
        self.families.add(family)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def issuer(key: SigningKey) -> TokenIssuer:
    return TokenIssuer(key, ISSUER, ttl_s=900)


@pytest.fixture
def revoked() -> FakeRevoked:
    return FakeRevoked()


@pytest.fixture
def auth(key: SigningKey, revoked: FakeRevoked) -> Authenticator:
    return Authenticator(TokenVerifier([key.public()], ISSUER), revoked)


async def test_a_valid_user_token_passes_and_says_whose_it_is(
        auth: Authenticator, issuer: TokenIssuer, revoked: FakeRevoked) -> None:
    principal = await auth.authenticate(issuer.issue_user(USER_ID, "imray-app", "node-1", LOGIN_A))
    assert principal.user_id == USER_ID
    assert principal.client_id == "imray-app"
    assert principal.scope == USER_SCOPE
    assert principal.node == "node-1"
    assert principal.family == LOGIN_A
    assert revoked.asked == [LOGIN_A]  # the login was checked against the denylist


async def test_user_accepts_a_valid_user_token(auth: Authenticator, issuer: TokenIssuer) -> None:
    principal = await auth.user(issuer.issue_user(USER_ID, "imray-app", "node-1", LOGIN_A))
    assert principal.user_id == USER_ID


async def test_a_token_of_a_revoked_login_is_unauthorized(
        auth: Authenticator, issuer: TokenIssuer, revoked: FakeRevoked) -> None:
    token = issuer.issue_user(USER_ID, "imray-app", "node-1", LOGIN_A)
    await revoked.revoke(LOGIN_A, 900)
    with pytest.raises(Unauthorized) as exc:
        await auth.authenticate(token)
    assert exc.value.status == 401
    assert "revoked" in exc.value.message


async def test_revoking_one_login_leaves_the_same_users_other_logins_alone(
        auth: Authenticator, issuer: TokenIssuer, revoked: FakeRevoked) -> None:
    revoked_token = issuer.issue_user(USER_ID, "imray-app", "node-1", LOGIN_A)
    other_token = issuer.issue_user(USER_ID, "imray-app", "node-2", LOGIN_B)
    await revoked.revoke(LOGIN_A, 900)
    with pytest.raises(Unauthorized):
        await auth.authenticate(revoked_token)
    principal = await auth.authenticate(other_token)
    assert (principal.user_id, principal.family) == (USER_ID, LOGIN_B)


async def test_user_refuses_a_revoked_login_as_unauthorized_not_forbidden(
        auth: Authenticator, issuer: TokenIssuer, revoked: FakeRevoked) -> None:
    token = issuer.issue_user(USER_ID, "imray-app", "node-1", LOGIN_A)
    await revoked.revoke(LOGIN_A, 900)
    with pytest.raises(Unauthorized):
        await auth.user(token, not_a_user=NotFound)


async def test_a_client_token_passes_authenticate_without_a_revocation_lookup(
        auth: Authenticator, issuer: TokenIssuer, revoked: FakeRevoked) -> None:
    principal = await auth.authenticate(issuer.issue_client("bot", "chat.read"))
    assert principal.user_id is None
    assert (principal.sub, principal.client_id, principal.scope) == ("bot", "bot", "chat.read")
    assert revoked.asked == []  # a client token belongs to no login


async def test_user_refuses_a_client_token_as_forbidden_by_default(
        auth: Authenticator, issuer: TokenIssuer) -> None:
    with pytest.raises(Forbidden) as exc:
        await auth.user(issuer.issue_client("bot", "chat.read"))
    assert exc.value.status == 403


@pytest.mark.parametrize(("kind", "status"), [(Unauthorized, 401), (NotFound, 404)])
async def test_user_refuses_a_client_token_with_the_error_type_it_is_given(
        auth: Authenticator, issuer: TokenIssuer, kind: type[Unauthorized | NotFound], status: int) -> None:
    with pytest.raises(kind) as exc:
        await auth.user(issuer.issue_client("bot", "chat.read"), not_a_user=kind)
    assert type(exc.value) is kind
    assert exc.value.status == status


async def test_a_token_signed_by_another_key_is_unauthorized(
        auth: Authenticator, other_key: SigningKey, revoked: FakeRevoked) -> None:
    forged = TokenIssuer(other_key, ISSUER, ttl_s=900).issue_user(USER_ID, "imray-app", "node-1", LOGIN_A)
    with pytest.raises(Unauthorized) as exc:
        await auth.authenticate(forged)
    assert exc.value.status == 401
    assert revoked.asked == []  # refused before the denylist is consulted


async def test_a_token_of_another_issuer_is_unauthorized(auth: Authenticator, key: SigningKey) -> None:
    token = TokenIssuer(key, "http://elsewhere", ttl_s=900).issue_user(USER_ID, "imray-app", "node-1", LOGIN_A)
    with pytest.raises(Unauthorized):
        await auth.authenticate(token)


async def test_an_expired_token_is_unauthorized(auth: Authenticator, key: SigningKey) -> None:
    expired = TokenIssuer(key, ISSUER, ttl_s=-60).issue_user(USER_ID, "imray-app", "node-1", LOGIN_A)
    with pytest.raises(Unauthorized) as exc:
        await auth.authenticate(expired)
    assert "expired" in exc.value.message.lower()


async def test_a_tampered_token_is_unauthorized(auth: Authenticator, issuer: TokenIssuer) -> None:
    header, payload, signature = issuer.issue_user(USER_ID, "imray-app", "node-1", LOGIN_A).split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    with pytest.raises(Unauthorized):
        await auth.authenticate(tampered)


@pytest.mark.parametrize("token", [None, "", "not-a-jwt", 12345], ids=["none", "empty", "garbage", "int"])
async def test_a_missing_or_malformed_token_is_unauthorized(auth: Authenticator, token: object) -> None:
    with pytest.raises(Unauthorized):
        await auth.user(token)


# -- renewing a socket's token (the `refresh` frame) -----------------------------------------------


async def test_a_renewal_takes_a_token_of_the_same_user_login_and_node_only(
        auth: Authenticator, issuer: TokenIssuer, revoked: FakeRevoked) -> None:
    current = await auth.user(issuer.issue_user(USER_ID, "imray-app", "node-1", LOGIN_A))
    fresh = await auth.renewal(issuer.issue_user(USER_ID, "imray-app", "node-1", LOGIN_A), current)
    assert (fresh.user_id, fresh.family, fresh.node) == (USER_ID, LOGIN_A, "node-1")
    refused = {
        "another user": issuer.issue_user(USER_ID + 1, "imray-app", "node-1", LOGIN_A),
        "another login": issuer.issue_user(USER_ID, "imray-app", "node-1", LOGIN_B),
        "another node": issuer.issue_user(USER_ID, "imray-app", "node-2", LOGIN_A),
        "a client's token": issuer.issue_client("bot", "chat"),
        "no token": "",
    }
    for what, token in refused.items():
        with pytest.raises(Unauthorized):
            await auth.renewal(token, current)
        assert what
    await revoked.revoke(LOGIN_A, 900)
    with pytest.raises(Unauthorized, match="revoked"):
        await auth.renewal(issuer.issue_user(USER_ID, "imray-app", "node-1", LOGIN_A), current)
