"""Access tokens: RS256 JWTs issued and verified locally; the usual JWT attacks are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from jose import jwt

from imray.domain.errors import Unauthorized
from imray.domain.tokens import (
    ALGORITHM,
    USER_SCOPE,
    PublicKey,
    SigningKey,
    TokenIssuer,
    TokenVerifier,
    digest,
    new_refresh_token,
)

ISSUER = "http://127.0.0.1:8000"


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
def verifier(key: SigningKey) -> TokenVerifier:
    return TokenVerifier([key.public()], ISSUER)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: object) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def unb64(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def refuse(verifier: TokenVerifier, token: object) -> str:
    with pytest.raises(Unauthorized) as info:
        verifier.verify(token)
    assert info.value.code == "unauthorized" and info.value.status == 401
    return info.value.message


# --- keys --------------------------------------------------------------------------------------

def test_generate(key: SigningKey) -> None:
    assert "PRIVATE KEY" in key.private_pem and "PUBLIC KEY" in key.public_pem
    assert len(key.kid) == 16
    assert key.kid == hashlib.sha256(key.public_pem.encode()).hexdigest()[:16]
    private = serialization.load_pem_private_key(key.private_pem.encode(), password=None)
    assert private.key_size >= 2048
    assert SigningKey.from_private_pem(key.private_pem) == key


def test_generate_gives_distinct_keys(key: SigningKey, other_key: SigningKey) -> None:
    assert key.kid != other_key.kid and key.private_pem != other_key.private_pem


def test_load_or_create(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "keys"  # does not exist yet
    first = SigningKey.load_or_create(directory)
    path = directory / "jwt-signing-key.pem"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == first.private_pem
    assert [p.name for p in directory.iterdir()] == ["jwt-signing-key.pem"]  # no temp file left behind
    again = SigningKey.load_or_create(directory)
    assert again == first
    token = TokenIssuer(first, ISSUER, 60).issue_user(3, "imray-app", "n1")
    assert TokenVerifier([again.public()], ISSUER).verify(token).user_id == 3


def test_public_key_jwk(key: SigningKey) -> None:
    public = key.public()
    assert isinstance(public, PublicKey) and public.kid == key.kid
    data = public.jwk()
    assert data["kty"] == "RSA"
    assert data["alg"] == "RS256" and data["kid"] == key.kid and data["use"] == "sig"
    assert isinstance(data["n"], str) and isinstance(data["e"], str)
    assert data["e"] == "AQAB"  # 65537
    numbers = serialization.load_pem_public_key(key.public_pem.encode()).public_numbers()
    n = int.from_bytes(base64.urlsafe_b64decode(data["n"] + "=" * (-len(data["n"]) % 4)), "big")
    assert n == numbers.n
    assert "d" not in data and "p" not in data  # nothing private is published
    json.dumps(data)  # serialisable as is


# --- issue and verify ----------------------------------------------------------------------------

def test_user_token_round_trip(issuer: TokenIssuer, verifier: TokenVerifier, key: SigningKey) -> None:
    before = int(time.time())
    token = issuer.issue_user(42, "imray-app", "socket-1")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == ALGORITHM and header["kid"] == key.kid
    claims = jwt.get_unverified_claims(token)
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "42"
    assert claims["scope"] == USER_SCOPE
    assert claims["node"] == "socket-1"
    assert claims["client_id"] == "imray-app"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + 900
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    principal = verifier.verify(token)
    assert principal.user_id == 42 and principal.sub == "42"
    assert principal.node == "socket-1" and principal.client_id == "imray-app"
    assert principal.scope == USER_SCOPE and principal.jti == claims["jti"] and principal.exp == claims["exp"]


def test_jti_unique(issuer: TokenIssuer) -> None:
    jtis = {jwt.get_unverified_claims(issuer.issue_user(1, "imray-app", "n"))["jti"] for _ in range(20)}
    assert len(jtis) == 20


def test_client_token(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    token = issuer.issue_client("reporting-bot", "stats")
    assert "node" not in jwt.get_unverified_claims(token)
    principal = verifier.verify(token)
    assert principal.user_id is None and principal.node is None
    assert principal.sub == "reporting-bot" and principal.client_id == "reporting-bot" and principal.scope == "stats"


def test_client_named_like_a_number_is_not_a_user(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    assert verifier.verify(issuer.issue_client("12345", "stats")).user_id is None


def test_expired_token_refused(key: SigningKey, verifier: TokenVerifier) -> None:
    token = TokenIssuer(key, ISSUER, ttl_s=-10).issue_user(1, "imray-app", "n1")
    assert "expired" in refuse(verifier, token).lower()


def test_a_remembered_token_is_refused_once_it_expires(key: SigningKey) -> None:
    verifier = TokenVerifier([key.public()], ISSUER, remember=2)
    token = TokenIssuer(key, ISSUER, ttl_s=1).issue_user(1, "imray-app", "n1")
    assert verifier.verify(token).user_id == 1
    assert verifier.verify(token).user_id == 1  # from memory
    header, payload, signature = token.split(".")
    refuse(verifier, f"{header}.{b64json({**unb64(payload), 'sub': '2'})}.{signature}")  # no memory of that
    time.sleep(max(0.0, unb64(payload)["exp"] + 1 - time.time()) + 0.05)
    assert "expired" in refuse(verifier, token).lower()
    assert "expired" in refuse(verifier, token).lower()  # and stays refused


def test_remembering_is_bounded_and_changes_no_answer(key: SigningKey, other_key: SigningKey) -> None:
    verifier = TokenVerifier([key.public()], ISSUER, remember=2)
    issuer = TokenIssuer(key, ISSUER, 60)
    tokens = [issuer.issue_user(u, "imray-app", "n") for u in (1, 2, 3, 4)]
    for _ in range(2):
        assert [verifier.verify(t).user_id for t in tokens] == [1, 2, 3, 4]
    refuse(verifier, TokenIssuer(other_key, ISSUER, 60).issue_user(1, "imray-app", "n"))
    assert len(verifier._verified) == 2


def test_wrong_key_refused(other_key: SigningKey, verifier: TokenVerifier) -> None:
    refuse(verifier, TokenIssuer(other_key, ISSUER, 900).issue_user(1, "imray-app", "n1"))


def test_wrong_issuer_refused(key: SigningKey, verifier: TokenVerifier) -> None:
    refuse(verifier, TokenIssuer(key, "http://evil.example", 900).issue_user(1, "imray-app", "n1"))


def test_several_keys_chosen_by_kid(key: SigningKey, other_key: SigningKey) -> None:
    verifier = TokenVerifier([key.public(), other_key.public()], ISSUER)
    for k in (key, other_key):
        assert verifier.verify(TokenIssuer(k, ISSUER, 60).issue_user(7, "imray-app", "n")).user_id == 7
    token = TokenIssuer(other_key, ISSUER, 60).issue_user(7, "imray-app", "n")
    header, payload, signature = token.split(".")
    unknown_kid = b64json({**unb64(header), "kid": "0000000000000000"})
    refuse(verifier, f"{unknown_kid}.{payload}.{signature}")


def test_alg_none_refused(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    claims = jwt.get_unverified_claims(issuer.issue_user(1, "imray-app", "n1"))
    for alg in ("none", "None", "NONE"):
        header = b64json({"alg": alg, "typ": "JWT"})
        refuse(verifier, f"{header}.{b64json(claims)}.")
        refuse(verifier, f"{header}.{b64json(claims)}")


def test_hs256_with_public_key_as_secret_refused(issuer: TokenIssuer, verifier: TokenVerifier,
                                                 key: SigningKey) -> None:
    """The classic algorithm confusion: HMAC keyed with the published public key."""
    claims = jwt.get_unverified_claims(issuer.issue_user(1, "imray-app", "n1"))
    for header in ({"alg": "HS256", "typ": "JWT"}, {"alg": "HS256", "typ": "JWT", "kid": key.kid}):
        signing_input = f"{b64json(header)}.{b64json(claims)}"
        for secret in (key.public_pem.encode(), key.public_pem.strip().encode()):
            sig = b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
            refuse(verifier, f"{signing_input}.{sig}")


def test_tampered_payload_refused(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    header, payload, signature = issuer.issue_user(1, "imray-app", "n1").split(".")
    for change in ({"sub": "2"}, {"node": "other"}, {"exp": 2**40}, {"scope": "admin"}):
        forged = b64json({**unb64(payload), **change})
        refuse(verifier, f"{header}.{forged}.{signature}")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    refuse(verifier, f"{header}.{payload}.{flipped}")


def test_tampered_header_refused(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    header, payload, signature = issuer.issue_user(1, "imray-app", "n1").split(".")
    forged = b64json({**unb64(header), "typ": "at+jwt"})
    refuse(verifier, f"{forged}.{payload}.{signature}")


def test_missing_required_claims_refused(key: SigningKey, verifier: TokenVerifier) -> None:
    now = int(time.time())
    full = {"iss": ISSUER, "sub": "1", "client_id": "imray-app", "scope": "chat", "node": "n1",
            "iat": now, "exp": now + 60, "jti": "abc"}
    assert verifier.verify(jwt.encode(full, key.private_pem, algorithm="RS256")).user_id == 1
    for claim in ("exp", "iat", "sub", "jti", "client_id", "iss"):
        partial = {k: v for k, v in full.items() if k != claim}
        refuse(verifier, jwt.encode(partial, key.private_pem, algorithm="RS256"))
    refuse(verifier, jwt.encode({**full, "sub": 1}, key.private_pem, algorithm="RS256"))


@pytest.mark.parametrize("token", [None, "", 5, b"a.b.c", "not-a-jwt", "a.b.c", "a" * 9000, "..",
                                   b64json([1, 2]) + ".e30.", b64json("x") + ".e30."])
def test_malformed_tokens_refused(verifier: TokenVerifier, token: object) -> None:
    refuse(verifier, token)


def test_refresh_tokens_and_digest() -> None:
    a, b = new_refresh_token(), new_refresh_token()
    assert a != b and len(a) >= 40
    assert digest(a) == hashlib.sha256(a.encode()).hexdigest() and len(digest(a)) == 64
