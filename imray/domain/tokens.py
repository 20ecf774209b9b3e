"""Access tokens: RS256 JWTs signed by the authorization service, verified locally everywhere else."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt
from jose.exceptions import JOSEError

from imray.domain.errors import Unauthorized

if TYPE_CHECKING:  # the keyring is built of this module's keys
    from imray.domain.keyring import Keyring, KeySource

ALGORITHM = "RS256"
USER_SCOPE = "chat"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: str = field(repr=False)  # never printed or logged
    public_pem: str

    @classmethod
    def generate(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return cls.from_private_pem(private_pem)

    @classmethod
    def from_private_pem(cls, private_pem: str) -> SigningKey:
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
        public_pem = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        kid = hashlib.sha256(public_pem.encode()).hexdigest()[:16]
        return cls(kid=kid, private_pem=private_pem, public_pem=public_pem)

    @classmethod
    def load_or_create(cls, directory: Path) -> SigningKey:
        """The key lives in the data dir, readable by its owner only."""
        path = directory / "jwt-signing-key.pem"
        if path.exists():
            return cls.from_private_pem(path.read_text())
        directory.mkdir(parents=True, exist_ok=True)
        key = cls.generate()
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(key.private_pem)
        tmp.replace(path)
        return key

    def public(self) -> PublicKey:
        return PublicKey(self.kid, self.public_pem)


@dataclass(frozen=True)
class PublicKey:
    kid: str
    public_pem: str

    def jwk(self) -> dict[str, Any]:
        data = jwk.construct(self.public_pem, ALGORITHM).to_dict()
        return {**{k: (v.decode() if isinstance(v, bytes) else v) for k, v in data.items()},
                "kid": self.kid, "use": "sig", "alg": ALGORITHM}


@dataclass(frozen=True, slots=True)  # slots: a socket session keeps its own for its life
class Principal:
    """Who a verified token speaks for: a user (user_id set) or a confidential client."""

    sub: str
    client_id: str
    scope: str
    jti: str
    exp: int
    user_id: int | None = None
    node: str | None = None
    family: str | None = None
    iat: int = 0
    issuer: str = ""
    kid: str | None = None  # the key that signed it: a socket closes when that key is retired


class TokenIssuer:
    """Signs with the active key of `keys` (a key, or a ring that may rotate while the process runs)."""

    def __init__(self, keys: SigningKey | KeySource, issuer: str, ttl_s: int) -> None:
        self._source = _fixed(keys) if isinstance(keys, SigningKey) else keys
        self._issuer, self.ttl_s = issuer, ttl_s
        # Parsed once per key: python-jose would parse (and validate) the PEM on every signature, ~30 % of a login.
        self._prepared: dict[str, Any] = {}

    def _signing(self) -> tuple[str, Any]:
        key = self._source.current().active
        prepared = self._prepared.get(key.kid)
        if prepared is None:
            prepared = self._prepared[key.kid] = jwk.construct(key.private_pem, ALGORITHM)
        return key.kid, prepared

    def issue_user(self, user_id: int, client_id: str, node: str, family: str | None = None,
                   scope: str = USER_SCOPE, expires_at: int | None = None) -> str:
        """`fam` names the login (the refresh-token family): revoking it revokes these tokens too.
        `expires_at` (unix s) caps the token's life below the full TTL (a re-pin keeps the old end)."""
        claims = {"sub": str(user_id), "client_id": client_id, "scope": scope, "node": node}
        return self._issue({**claims, "fam": family} if family else claims, expires_at)

    def issue_client(self, client_id: str, scope: str) -> str:
        return self._issue({"sub": client_id, "client_id": client_id, "scope": scope})

    def _issue(self, claims: dict[str, str], expires_at: int | None = None) -> str:
        now = int(time.time())
        exp = now + self.ttl_s if expires_at is None else min(expires_at, now + self.ttl_s)
        body = {**claims, "iss": self._issuer, "iat": now, "exp": exp, "jti": uuid.uuid4().hex}
        kid, prepared = self._signing()
        return jwt.encode(body, prepared, algorithm=ALGORITHM, headers={"kid": kid})


class TokenVerifier:
    """Checks signature (RS256 only: `none` and HMAC tokens are refused), issuer, expiry and shape.

    `remember`: how many verified tokens to keep, so that a client's next request with the same
    token costs a lookup and an expiry check instead of a signature check (56 us, 9 % of a
    gateway's history read; a reconnecting session's too). Only tokens that passed every check are
    kept, by the SHA-256 of their exact text (32 bytes, not a ~700-byte token, per entry); revocation
    stays the caller's check, on every request.

    `keys`: fixed public keys, or a ring that may change while the process runs: when it does, the
    keys are parsed again and the remembered tokens forgotten (a retired key's tokens go with it).
    """

    def __init__(self, keys: list[PublicKey] | KeySource, issuer: str, remember: int = 0) -> None:
        self._source = keys if not isinstance(keys, list) else None
        self._ring: Keyring | None = None
        self._keys: dict[str, Any] = {k.kid: jwk.construct(k.public_pem, ALGORITHM)  # parsed once, not per token
                                      for k in (keys if isinstance(keys, list) else [])}
        self._issuer = issuer
        self._remember = remember
        self._verified: dict[bytes, Principal] = {}  # insertion order: the oldest goes first
        if self._source is not None:
            self._follow(self._source.current())

    def _follow(self, ring: Keyring) -> None:
        """Use `ring`'s keys (a no-op when it is the ring in use)."""
        if ring is self._ring:
            return
        self._keys = {k.kid: self._keys.get(k.kid) or jwk.construct(k.public_pem, ALGORITHM) for k in ring.keys}
        self._ring = ring
        self._verified.clear()

    def verify(self, token: object) -> Principal:
        if not isinstance(token, str) or not token or len(token) > 8192:
            raise Unauthorized("missing or malformed token")
        if self._source is not None:
            self._follow(self._source.current())
        if not self._remember:
            return self._check(token)
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None:
            if int(time.time()) <= known.exp:  # python-jose's own rule: expired once past `exp`'s second
                return known
            del self._verified[digest]
            raise Unauthorized("invalid token: Signature has expired.")
        principal = self._check(token)
        if len(self._verified) >= self._remember:
            del self._verified[next(iter(self._verified))]
        self._verified[digest] = principal
        return principal

    def _check(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            if isinstance(kid, str) and len(kid) <= 64:
                key = self._keys.get(kid)
                if key is None and self._source is not None:  # signed since this process last looked?
                    self._follow(self._source.unknown_kid(kid))
                    key = self._keys.get(kid)
            else:  # no kid: only a lone key can be meant
                key = next(iter(self._keys.values())) if len(self._keys) == 1 and kid is None else None
            if key is None or header.get("alg") != ALGORITHM:
                raise Unauthorized("token not signed by this issuer")
            claims = jwt.decode(
                token, key, algorithms=[ALGORITHM], issuer=self._issuer,
                options={"require_exp": True, "require_iat": True, "require_sub": True, "require_jti": True,
                         "verify_aud": False},
            )
        except JOSEError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        sub, client_id = claims.get("sub"), claims.get("client_id")
        if not isinstance(sub, str) or not isinstance(client_id, str):
            raise Unauthorized("invalid token claims")
        node = claims.get("node")
        user_id = int(sub) if sub.isdigit() and node is not None else None
        return Principal(sub=sub, client_id=client_id, scope=str(claims.get("scope", "")),
                         jti=str(claims["jti"]), exp=int(claims["exp"]), user_id=user_id,
                         node=node if isinstance(node, str) else None,
                         family=claims["fam"] if isinstance(claims.get("fam"), str) else None,
                         iat=int(claims["iat"]), issuer=self._issuer, kid=kid if isinstance(kid, str) else None)


def _fixed(key: SigningKey) -> KeySource:
    from imray.domain.keyring import FixedKeys, Keyring

    return FixedKeys(Keyring((key,), key.kid))


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """Refresh tokens and client secrets are random and long: a plain SHA-256 is the right store."""
    return hashlib.sha256(secret.encode()).hexdigest()
