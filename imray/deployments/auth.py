"""AuthService: the OAuth2 authorization centre (RFC 6749 grants, RFC 8414 metadata, JWKS)."""

from __future__ import annotations

import asyncio
import hmac
import secrets

import ray
from ray import serve

from imray.actors import names
from imray.adapters.cache import make_cache, revoked_family_key
from imray.domain.errors import DomainError, Unavailable
from imray.domain.passwords import Passwords
from imray.domain.tokens import USER_SCOPE, Principal, SigningKey, TokenIssuer, digest, new_refresh_token
from imray.heap import freeze_startup_heap
from imray.settings import Settings
from imray.storage import accounts
from imray.storage.db import Database

PUBLIC_CLIENT = "imray-app"  # the built-in first-party app: a public client, no secret


class OAuthError(DomainError):
    """An RFC 6749 §5.2 error: the gateway answers {"error": ..., "error_description": ...}."""

    def __init__(self, error: str, description: str = "", status: int = 400) -> None:
        super().__init__(description or error)
        self.error, self.status = error, status

    def __reduce__(self):
        return (OAuthError, (self.error, self.message, self.status))


@serve.deployment
class AuthService:
    def __init__(self, settings: Settings, key: SigningKey) -> None:
        self._settings = settings
        self._db = Database(settings.db_url)
        self._passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib,
                                    settings.argon2_parallelism)
        self._issuer = TokenIssuer(key, settings.base_url, settings.access_token_ttl_s)
        self._supervisor = None
        self._cache = make_cache(settings)
        freeze_startup_heap()

    async def _pick_node(self, user_id: int) -> dict:
        if self._supervisor is None:
            self._supervisor = ray.get_actor(names.SUPERVISOR, namespace=self._settings.namespace)
        node = await self._supervisor.pick.remote(user_id)
        if node is None:
            raise Unavailable("no socket node is alive")
        return node

    async def token(self, form: dict[str, str], basic: tuple[str, str] | None) -> dict:
        grant = form.get("grant_type")
        if grant == "password":
            return await self._password_grant(form, basic)
        if grant == "refresh_token":
            return await self._refresh_grant(form, basic)
        if grant == "client_credentials":
            return await self._client_credentials(form, basic)
        if not grant:
            raise OAuthError("invalid_request", "grant_type is required")
        raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")

    async def _client(self, form: dict[str, str], basic: tuple[str, str] | None, confidential: bool) -> dict:
        """Authenticate the client (HTTP Basic or form fields); public clients need no secret."""
        if basic and form.get("client_secret"):
            raise OAuthError("invalid_request", "use one client authentication method")
        client_id, secret = basic if basic else (form.get("client_id", ""), form.get("client_secret"))
        if not client_id:
            raise OAuthError("invalid_client", "client_id is required", 401)
        if client_id == PUBLIC_CLIENT and not confidential:
            return {"client_id": PUBLIC_CLIENT, "scope": USER_SCOPE}
        row = await self._db.run(lambda c: accounts.client(c, client_id))
        ok = row is not None and row["secret_hash"] is not None and secret is not None and \
            hmac.compare_digest(row["secret_hash"], digest(secret))
        if not ok:
            raise OAuthError("invalid_client", "client authentication failed", 401)
        return row

    async def _password_grant(self, form: dict[str, str], basic: tuple[str, str] | None) -> dict:
        client = await self._client(form, basic, confidential=False)
        username, password = form.get("username"), form.get("password")
        if not username or not password:
            raise OAuthError("invalid_request", "username and password are required")
        found = await self._db.run(lambda c: accounts.credentials(c, username)) if len(username) <= 32 else None
        ok = await asyncio.to_thread(self._passwords.verify, found[1] if found else None, password[:1024])
        if not ok or found is None:
            raise OAuthError("invalid_grant", "wrong username or password")
        return await self._user_tokens(found[0], client["client_id"], secrets.token_hex(16))

    async def _refresh_grant(self, form: dict[str, str], basic: tuple[str, str] | None) -> dict:
        client = await self._client(form, basic, confidential=False)
        token = form.get("refresh_token")
        if not token:
            raise OAuthError("invalid_request", "refresh_token is required")
        row = await self._db.run(lambda c: accounts.consume_refresh(
            c, digest(token[:512]), keep_s=self._settings.access_token_ttl_s))
        if row is not None and row.get("reused"):  # a leaked token: its whole login goes, access tokens too
            await self._cache.set(revoked_family_key(row["family"]), True, self._settings.access_token_ttl_s)
            row = None
        if row is None or row["client_id"] != client["client_id"]:
            raise OAuthError("invalid_grant", "refresh token is invalid, expired or already used")
        return await self._user_tokens(row["user_id"], row["client_id"], row["family"])

    async def _client_credentials(self, form: dict[str, str], basic: tuple[str, str] | None) -> dict:
        client = await self._client(form, basic, confidential=True)
        allowed = set(client["scope"].split())
        asked = set((form.get("scope") or client["scope"]).split())
        if not asked <= allowed:
            raise OAuthError("invalid_scope", f"client may ask for: {' '.join(sorted(allowed))}")
        scope = " ".join(sorted(asked))
        return {"access_token": self._issuer.issue_client(client["client_id"], scope), "token_type": "Bearer",
                "expires_in": self._issuer.ttl_s, "scope": scope}

    async def _user_tokens(self, user_id: int, client_id: str, family: str) -> dict:
        node = await self._pick_node(user_id)
        refresh = new_refresh_token()
        await self._db.run(lambda c: accounts.store_refresh(
            c, digest(refresh), family, user_id, client_id, USER_SCOPE, self._settings.refresh_token_ttl_s))
        return {"access_token": self._issuer.issue_user(user_id, client_id, node["node_id"], family),
                "token_type": "Bearer", "expires_in": self._issuer.ttl_s, "refresh_token": refresh,
                "scope": USER_SCOPE, "user_id": user_id, "socket_url": node["url"],
                "socket_node": node["node_id"]}

    async def revoke(self, form: dict[str, str], basic: tuple[str, str] | None) -> None:
        """RFC 7009: revoke the login of a refresh token; unknown tokens are not an error."""
        await self._client(form, basic, confidential=False)
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        family = await self._db.run(lambda c: accounts.revoke_family(
            c, digest(token[:512]), keep_s=self._settings.access_token_ttl_s))
        if family is not None:
            await self._cache.set(revoked_family_key(family), True, self._settings.access_token_ttl_s)

    async def assign(self, principal: Principal) -> dict:
        """A fresh pin (the old node is gone, or the client wants another): a new access token."""
        node = await self._pick_node(principal.user_id)
        return {"socket_url": node["url"], "socket_node": node["node_id"],
                "access_token": self._issuer.issue_user(principal.user_id, principal.client_id, node["node_id"],
                                                        principal.family or secrets.token_hex(16)),
                "expires_in": self._issuer.ttl_s}
