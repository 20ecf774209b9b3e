"""The OAuth2 authorization centre's decisions: client authentication and the grants (RFC 6749, 7009).

What it needs from outside comes through small ports: the store of clients, credentials and refresh
tokens, the socket-node picker, the password verifier, the token issuer and the revoked logins.
The Serve deployment (`deployments.auth`) only hands requests in and answers out.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Protocol, Required, TypedDict

from imray.domain.account_changes import device_name
from imray.domain.authenticator import RevokedLogins
from imray.domain.errors import DomainError, Forbidden, Unavailable
from imray.domain.nodes import NodeEndpoint
from imray.domain.scopes import INTROSPECT
from imray.domain.tokens import USER_SCOPE, Principal, digest, new_refresh_token

if TYPE_CHECKING:  # it builds on OAuthError
    from imray.domain.authorization_code import AuthorizationCodes
    from imray.domain.login_guard import LoginGuard
    from imray.domain.tokens import TokenVerifier

PUBLIC_CLIENT = "imray-app"  # the built-in first-party app: a public client, no secret
MAX_USERNAME = 32  # longer names cannot exist (domain.accounts): no lookup for them
MAX_PASSWORD = 1024  # what is verified of a password: a longer one costs the hash, not the caller
MAX_TOKEN = 512  # what is hashed of a presented refresh token

Form = Mapping[str, str]
Basic = tuple[str, str] | None  # HTTP Basic client credentials, when the request carried them


class OAuthError(DomainError):
    """An RFC 6749 §5.2 error: the gateway answers {"error": ..., "error_description": ...}."""

    def __init__(self, error: str, description: str = "", status: int = 400) -> None:
        super().__init__(description or error)
        self.error, self.status = error, status

    def __reduce__(self) -> tuple[type[OAuthError], tuple[str, str, int]]:  # crosses Ray calls whole
        return (OAuthError, (self.error, self.message, self.status))


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client: `secret_hash` is None for public ones."""

    client_id: str
    scope: str
    secret_hash: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshUse:
    """A refresh token just spent: the login (`family`) it continues."""

    user_id: int
    client_id: str
    family: str


@dataclass(frozen=True, slots=True)
class RefreshReuse:
    """A refresh token presented again after it was spent: it leaked, and its login is revoked."""

    family: str


class OAuthStore(Protocol):
    """Clients, password hashes and refresh tokens, each call one transaction."""

    async def client(self, client_id: str) -> Client | None: ...
    async def credentials(self, username: str) -> tuple[int, str] | None: ...  # (user id, password hash)
    async def store_refresh(self, token_hash: str, family: str, user_id: int, client_id: str, scope: str,
                            ttl_s: int) -> None: ...
    # Spend a refresh token of `client_id`: None, and nothing spent, when unknown, another client's or
    # expired. A reuse revokes its family in the store.
    async def consume_refresh(self, token_hash: str, client_id: str,
                              keep_s: int) -> RefreshUse | RefreshReuse | None: ...
    # Revoke the login of a refresh token of `client_id`; its family, None for an unknown or another
    # client's token (nothing revoked).
    async def revoke_family(self, token_hash: str, client_id: str, keep_s: int) -> str | None: ...
    # An operator disabled the account (server API): every grant is refused until it is enabled.
    async def disabled(self, user_id: int) -> bool: ...


class LoginBook(Protocol):
    """A user's logins as they list them (issue 18): made by a grant, used by a refresh."""

    async def opened(self, family: str, user_id: int, client_id: str, device_name: str) -> None: ...
    async def used(self, family: str) -> None: ...


class NodePicker(Protocol):
    # None: no socket node is alive. `prefer`: that node if it is alive (a refresh keeping its pin).
    async def pick(self, user_id: int, prefer: str | None = None) -> NodeEndpoint | None: ...


class PasswordVerifier(Protocol):
    def verify(self, stored: str | None, password: str) -> bool: ...  # CPU-bound: called in a thread


class Issuer(Protocol):
    ttl_s: int

    def issue_user(self, user_id: int, client_id: str, node: str, family: str | None = None,
                   scope: str = USER_SCOPE, expires_at: int | None = None) -> str: ...
    def issue_client(self, client_id: str, scope: str) -> str: ...


class UserTokens(TypedDict):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    scope: str
    user_id: int
    socket_url: str
    socket_node: str


class ClientToken(TypedDict):
    access_token: str
    token_type: str
    expires_in: int
    scope: str


class Introspection(TypedDict, total=False):
    """RFC 7662 §2.2: `active` alone for a token that is not (unknown, forged, expired, revoked)."""

    active: Required[bool]
    scope: str
    client_id: str
    sub: str
    exp: int
    iat: int
    iss: str
    token_type: str
    jti: str


class Assignment(TypedDict):
    socket_url: str
    socket_node: str
    access_token: str
    expires_in: int


class OAuthServer:
    """The token endpoint's grants, revocation, and socket-node assignment."""

    def __init__(self, store: OAuthStore, nodes: NodePicker, passwords: PasswordVerifier, issuer: Issuer,
                 revoked: RevokedLogins, refresh_ttl_s: int, *, guard: LoginGuard | None = None,
                 verifier: TokenVerifier | None = None, codes: AuthorizationCodes | None = None,
                 logins: LoginBook | None = None) -> None:
        self._store, self._nodes, self._passwords = store, nodes, passwords
        self._issuer, self._revoked, self._refresh_ttl_s = issuer, revoked, refresh_ttl_s
        self._guard = guard  # throttles failed logins and bounds the password checks; None: neither
        self._verifier = verifier  # for introspection; None: every token is inactive
        self._codes = codes  # the authorization code grant's checks; None: no such grant
        self._logins = logins  # where logins are listed (issue 18); None: nowhere

    async def token(self, form: Form, basic: Basic, address: str = "",
                    user_agent: str = "") -> UserTokens | ClientToken:
        """`address`: the client's, as the gateway sees it ("": unknown); `user_agent`: its
        User-Agent, what a new login is listed as without a `device_name` field."""
        grant = form.get("grant_type")
        if grant == "password":
            return await self._password_grant(form, basic, address, user_agent)
        if grant == "refresh_token":
            return await self._refresh_grant(form, basic)
        if grant == "client_credentials":
            return await self._client_credentials(form, basic)
        if grant == "authorization_code" and self._codes is not None:
            return await self._authorization_code_grant(form, basic, user_agent)
        if not grant:
            raise OAuthError("invalid_request", "grant_type is required")
        raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")

    async def revoke(self, form: Form, basic: Basic) -> None:
        """RFC 7009: revoke the login of a refresh token; unknown tokens are not an error."""
        client = await self._client(form, basic, confidential=False, registered_public=True)
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        # Another client's token is answered like an unknown one (RFC 7009 §2.2) and revokes nothing.
        family = await self._store.revoke_family(digest(token[:MAX_TOKEN]), client.client_id,
                                                 keep_s=self._issuer.ttl_s)
        if family is not None:
            await self._revoked.revoke(family, self._issuer.ttl_s)

    async def introspect(self, form: Form, basic: Basic) -> Introspection:
        """RFC 7662, for resource servers: a confidential client asks whether an access token is active.
        Refresh tokens are never introspected (inactive): they are only for the token endpoint.
        `token_type_hint` is ignored, as §2.1 allows. The client must hold the `introspect` scope: a
        bot that may only send messages learns nothing of other callers' tokens."""
        client = await self._client(form, basic, confidential=True)
        if INTROSPECT not in client.scope.split():
            raise OAuthError("insufficient_scope", f"introspection needs a client with scope {INTROSPECT!r}", 403)
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        if self._verifier is None:
            return {"active": False}
        try:
            principal = self._verifier.verify(token)
        except DomainError:  # malformed, forged, expired, of a retired key, of another issuer
            return {"active": False}
        if principal.family and await self._revoked.is_revoked(principal.family):
            return {"active": False}
        return {"active": True, "scope": principal.scope, "client_id": principal.client_id, "sub": principal.sub,
                "exp": principal.exp, "iat": principal.iat, "iss": principal.issuer, "token_type": "Bearer",
                "jti": principal.jti}

    async def assign(self, principal: Principal) -> Assignment:
        """A fresh pin (the old node is gone, or the client wants another): a new access token that
        ends when the presented one does. Only the refresh grant extends a login, so a leaked access
        token cannot renew itself past its own expiry (nor its login past the refresh token's)."""
        if principal.user_id is None:  # the gateway lets only users' tokens through; this holds regardless
            raise Forbidden("a user token is required, not a client's")
        node = await self._pick(principal.user_id)
        token = self._issuer.issue_user(principal.user_id, principal.client_id, node.node_id,
                                        principal.family or secrets.token_hex(16), expires_at=principal.exp)
        return {"socket_url": node.url, "socket_node": node.node_id, "access_token": token,
                "expires_in": max(0, principal.exp - int(time.time()))}

    async def _client(self, form: Form, basic: Basic, confidential: bool, registered_public: bool = False) -> Client:
        """Authenticate the client (HTTP Basic or form fields); public clients need no secret.
        `registered_public`: registered public clients too (third-party apps of the code flow); the
        password grant leaves them out, as RFC 9700 §2.4 would have it."""
        if basic and form.get("client_secret"):
            raise OAuthError("invalid_request", "use one client authentication method")
        client_id, secret = basic if basic else (form.get("client_id", ""), form.get("client_secret"))
        if not client_id:
            raise OAuthError("invalid_client", "client_id is required", 401)
        if client_id == PUBLIC_CLIENT and not confidential:
            return Client(PUBLIC_CLIENT, USER_SCOPE)
        client = await self._store.client(client_id)
        if registered_public and client is not None and client.secret_hash is None and not secret:
            return client
        ok = client is not None and client.secret_hash is not None and secret is not None and \
            hmac.compare_digest(client.secret_hash, digest(secret))
        if not ok or client is None:
            raise OAuthError("invalid_client", "client authentication failed", 401)
        return client

    async def _password_grant(self, form: Form, basic: Basic, address: str, user_agent: str) -> UserTokens:
        client = await self._client(form, basic, confidential=False)
        username, password = form.get("username"), form.get("password")
        if not username or not password:
            raise OAuthError("invalid_request", "username and password are required")
        device = _device(form, user_agent)  # before the password: a bad field costs no check
        found = await self._store.credentials(username) if len(username) <= MAX_USERNAME else None
        # Verified even for an unknown name (against a dummy hash): it costs as long as a wrong password.
        check = partial(self._passwords.verify, found[1] if found else None, password[:MAX_PASSWORD])
        if self._guard is None:
            ok = await asyncio.to_thread(check)
        else:  # an account by its id: however the database compares names, they count as one
            account = f"id:{found[0]}" if found else f"name:{username[:MAX_USERNAME].lower()}"
            ok = await self._guard.verify(check, account, address)
        if not ok or found is None:
            raise OAuthError("invalid_grant", "wrong username or password")
        return await self._user_tokens(found[0], client.client_id, secrets.token_hex(16), opened=device)

    async def _refresh_grant(self, form: Form, basic: Basic) -> UserTokens:
        client = await self._client(form, basic, confidential=False, registered_public=True)
        token = form.get("refresh_token")
        if not token:
            raise OAuthError("invalid_request", "refresh_token is required")
        # Another client's token is refused without being spent: its owner's next refresh still works.
        used = await self._store.consume_refresh(digest(token[:MAX_TOKEN]), client.client_id,
                                                 keep_s=self._issuer.ttl_s)
        if isinstance(used, RefreshReuse):  # a leaked token: its whole login goes, access tokens too
            await self._revoked.revoke(used.family, self._issuer.ttl_s)
            used = None
        if used is None or used.client_id != client.client_id:
            raise OAuthError("invalid_grant", "refresh token is invalid, expired or already used")
        # `socket_node`: keep that pin if the node is alive, so a socket can renew its token in place.
        return await self._user_tokens(used.user_id, used.client_id, used.family, form.get("socket_node"))

    async def _client_credentials(self, form: Form, basic: Basic) -> ClientToken:
        client = await self._client(form, basic, confidential=True)
        allowed = set(client.scope.split())
        if "scope" in form and not form["scope"].strip():  # asked for nothing: not the whole scope
            raise OAuthError("invalid_scope", "scope is empty; leave it out for the client's whole scope")
        asked = set(form.get("scope", client.scope).split())
        if not asked <= allowed:
            raise OAuthError("invalid_scope", f"client may ask for: {' '.join(sorted(allowed))}")
        scope = " ".join(sorted(asked))
        return {"access_token": self._issuer.issue_client(client.client_id, scope), "token_type": "Bearer",
                "expires_in": self._issuer.ttl_s, "scope": scope}

    async def _authorization_code_grant(self, form: Form, basic: Basic, user_agent: str) -> UserTokens:
        """RFC 6749 §4.1.3 with PKCE: user tokens like the password grant's, for the client the code
        was issued to (public ones by client_id alone, confidential ones with their secret)."""
        assert self._codes is not None  # only called when there are codes
        client = await self._client(form, basic, confidential=False, registered_public=True)
        code = await self._codes.check(form, client.client_id)
        device = _device(form, user_agent)
        node = await self._pick(code.user_id)  # before the code is spent: with no node, it can be tried again
        refresh = new_refresh_token()
        await self._codes.redeem(code, digest(refresh), self._refresh_ttl_s)
        if await self._store.disabled(code.user_id):  # as in _user_tokens: checked once the login is stored
            raise OAuthError("invalid_grant", "this account is disabled")
        if self._logins is not None:
            await self._logins.opened(code.family, code.user_id, client.client_id, device)
        return {"access_token": self._issuer.issue_user(code.user_id, client.client_id, node.node_id, code.family),
                "token_type": "Bearer", "expires_in": self._issuer.ttl_s, "refresh_token": refresh,
                "scope": USER_SCOPE, "user_id": code.user_id, "socket_url": node.url, "socket_node": node.node_id}

    async def _user_tokens(self, user_id: int, client_id: str, family: str,
                           prefer: str | None = None, opened: str | None = None) -> UserTokens:
        """`opened`: the device a new login (password grant) is listed as; None: a refresh of `family`."""
        node = await self._pick(user_id, prefer)
        refresh = new_refresh_token()
        await self._store.store_refresh(digest(refresh), family, user_id, client_id, USER_SCOPE,
                                        self._refresh_ttl_s)
        # Checked after the refresh token is stored: a disable that commits after this check finds
        # this login and revokes it; one that committed before is seen here. Neither lets one through.
        if await self._store.disabled(user_id):
            raise OAuthError("invalid_grant", "this account is disabled")
        if self._logins is not None:
            await (self._logins.used(family) if opened is None else
                   self._logins.opened(family, user_id, client_id, opened))
        return {"access_token": self._issuer.issue_user(user_id, client_id, node.node_id, family),
                "token_type": "Bearer", "expires_in": self._issuer.ttl_s, "refresh_token": refresh,
                "scope": USER_SCOPE, "user_id": user_id, "socket_url": node.url, "socket_node": node.node_id}

    async def _pick(self, user_id: int, prefer: str | None = None) -> NodeEndpoint:
        node = await self._nodes.pick(user_id, prefer)
        if node is None:
            raise Unavailable("no socket node is alive")
        return node


def _device(form: Form, user_agent: str) -> str:
    """What a new login is listed as (`device_name`, else the User-Agent); a bad field is invalid_request."""
    try:
        return device_name(form.get("device_name"), user_agent)
    except DomainError as exc:
        raise OAuthError("invalid_request", exc.message) from None
