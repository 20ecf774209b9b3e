"""Forged and broken tokens, for the attacks every verifier must refuse."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from jose import jwt

from imray.domain.tokens import SigningKey
from imray.storage.keyfiles import read_ring


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def tampered(token: str, **changes) -> str:
    """Same header and signature, different claims."""
    head, _, sig = token.split(".")
    return f"{head}.{_b64({**jwt.get_unverified_claims(token), **changes})}.{sig}"


def unsigned(token: str) -> str:
    """`alg: none` with the same claims and no signature."""
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(jwt.get_unverified_claims(token))}."


def signed_with(key: SigningKey, token: str, **changes) -> str:
    claims = {**jwt.get_unverified_claims(token), **changes}
    return jwt.encode(claims, key.private_pem, algorithm="RS256", headers={"kid": key.kid})


def hmac_with_public_key(token: str, public_pem: str) -> str:
    """The classic algorithm-confusion attack: HS256 keyed with the server's public key."""
    import hashlib
    import hmac

    head = _b64({"alg": "HS256", "typ": "JWT"})
    body = _b64(jwt.get_unverified_claims(token))
    sig = hmac.new(public_pem.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{base64.urlsafe_b64encode(sig).decode().rstrip('=')}"


def real_key(data_dir: str) -> SigningKey:
    """The key the stack signs new tokens with: its keyring's active one."""
    return read_ring(Path(data_dir) / "keys").active


def expired(data_dir: str, token: str) -> str:
    now = int(time.time())
    return signed_with(real_key(data_dir), token, iat=now - 3600, exp=now - 60)
