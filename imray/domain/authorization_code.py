"""Authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636 S256 only, RFC 9700): the decisions.

The gateway renders the login and consent page and carries its cookie; the AuthService hands the
requests in. Codes are stored by hash, single use, short-lived, bound to client, redirect URI and
challenge; each names in advance the login (refresh family) its redemption starts, so a replayed
code revokes that login whenever the replay comes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlencode, urlsplit

from imray.domain.authenticator import RevokedLogins
from imray.domain.oauth import MAX_PASSWORD, MAX_TOKEN, MAX_USERNAME, OAuthError, PasswordVerifier
from imray.domain.tokens import USER_SCOPE, digest

if TYPE_CHECKING:
    from imray.domain.login_guard import LoginGuard

METHOD = "S256"  # the only code_challenge_method: "plain" would hand the verifier to whoever sees the request
CODE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # BASE64URL(SHA256(verifier)) without padding
CODE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1
CSRF_COOKIE = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_CLIENT_ID = 64
MAX_REDIRECT_URI = 2000
MAX_STATE = 1024
MAX_SCOPE = 255
LOOPBACK = ("127.0.0.1", "::1", "localhost")

Params = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Registration:
    """What the code flow needs of a registered client: its name (shown on the consent page), its
    exact redirect URIs, and whether it is public (no secret: PKCE is its only proof)."""

    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    public: bool


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    """A checked authorization request: what the page carries in hidden fields to its POST."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    state: str | None
    scope: str

    def fields(self) -> dict[str, str]:
        out = {"response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
               "code_challenge": self.code_challenge, "code_challenge_method": METHOD, "scope": self.scope}
        return out if self.state is None else {**out, "state": self.state}


@dataclass(frozen=True, slots=True)
class Consent:
    """Show the login and consent page (again, with `message`, after a failed attempt)."""

    request: AuthorizeRequest
    client_name: str
    message: str = ""
    status: int = 200
    retry_after_s: int | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """Send the browser back to the client: a code, or an error, with the request's state."""

    url: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """An error shown to the user, never redirected: the client or its redirect URI is not trusted."""

    error: str
    description: str
    status: int = 400


Outcome = Consent | Redirect | Refusal


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A code as stored (by its hash). `expires_at`, `used_at`: ms since the epoch."""

    client_id: str
    user_id: int
    redirect_uri: str
    code_challenge: str
    scope: str
    expires_at: int
    family: str
    used_at: int | None = None


@dataclass(frozen=True, slots=True)
class Redeemable:
    """A code that passed every check at the token endpoint, not yet spent."""

    code_hash: str
    user_id: int
    family: str


class CodeStore(Protocol):
    """Registered clients, credentials and codes, each call one transaction."""

    async def registration(self, client_id: str) -> Registration | None: ...
    async def credentials(self, username: str) -> tuple[int, str] | None: ...  # (user id, password hash)
    async def disabled(self, user_id: int) -> bool: ...  # an operator disabled the account
    # Store a code; codes expired more than `keep_s` ago go (a replay older than that only fails).
    async def store_code(self, code_hash: str, code: IssuedCode, keep_s: int) -> None: ...
    async def code(self, code_hash: str) -> IssuedCode | None: ...
    # Spend the code and store the first refresh token of its login, in one transaction; False, and
    # nothing stored, when it was spent already (by a concurrent request).
    async def redeem(self, code_hash: str, refresh_hash: str, refresh_ttl_s: int) -> bool: ...
    # Every refresh token of the login spent, and the login on the denylist (as a reused refresh token).
    async def revoke_login(self, family: str, keep_s: int) -> None: ...


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier))), no padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def redirect_to(uri: str, params: Mapping[str, str | None]) -> str:
    """The redirect URI with `params` added to its query (RFC 6749 §4.1.2: it may have one already)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    separator = "&" if urlsplit(uri).query else "" if uri.endswith("?") else "?"
    return f"{uri}{separator}{query}"


def redirect_uri_problem(uri: str) -> str | None:
    """Why `uri` cannot be registered (None: it can): absolute, no fragment (RFC 6749 §3.1.2), and
    https, or http on a loopback address (RFC 8252 §7.3), or an app's private-use scheme (§7.1)."""
    if len(uri) > MAX_REDIRECT_URI:
        return f"longer than {MAX_REDIRECT_URI} characters"
    if any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7e for c in uri):
        return "only printable ASCII without spaces"
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:
        return "not a URI"
    if parts.fragment or "#" in uri:
        return "a redirect URI has no fragment"
    if parts.scheme == "https":
        return None if host else "https needs a host"
    if parts.scheme == "http":
        return None if host in LOOPBACK else "http only on a loopback address (127.0.0.1, [::1], localhost)"
    if "." in parts.scheme and parts.path:  # reverse domain name, e.g. com.example.app:/callback
        return None
    return "https, http on loopback, or a private-use scheme like com.example.app:/callback"


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(cookie: str, request: AuthorizeRequest) -> str:
    """The page's anti-CSRF field: keyed by the browser's cookie (which another site can neither read
    nor send along with a cross-site POST: SameSite=Lax), bound to this request's parameters."""
    fields = request.fields()
    message = "\n".join(f"{k}={fields.get(k, '')}" for k in sorted(fields)).encode()
    return base64.urlsafe_b64encode(hmac.new(cookie.encode(), message, hashlib.sha256).digest()).rstrip(b"=").decode()


def csrf_ok(cookie: str | None, token: str | None, params: Params) -> bool:
    """Whether a POST carries the token its page was rendered with, for these same parameters."""
    if not cookie or not token or not CSRF_COOKIE.fullmatch(cookie):
        return False
    request = AuthorizeRequest(params.get("client_id", ""), params.get("redirect_uri", ""),
                               params.get("code_challenge", ""), params.get("state"),
                               params.get("scope", USER_SCOPE))
    return hmac.compare_digest(csrf_token(cookie, request), token)


class AuthorizationCodes:
    """The authorization endpoint's decisions (page, login, code) and the code's checks at the token endpoint."""

    def __init__(self, store: CodeStore, passwords: PasswordVerifier, revoked: RevokedLogins, issuer_url: str, *,
                 code_ttl_s: int, keep_s: int, guard: LoginGuard | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`keep_s`: how long a revocation matters (the access tokens' lifetime)."""
        self._store, self._passwords, self._revoked, self._issuer_url = store, passwords, revoked, issuer_url
        self._code_ttl_s, self._keep_s, self._guard, self._clock = code_ttl_s, keep_s, guard, clock

    async def page(self, params: Params) -> Outcome:
        """GET /oauth2/authorize: the page, or the request's error."""
        checked = await self._check(params)
        if not isinstance(checked, tuple):
            return checked
        request, registration = checked
        return Consent(request, registration.name)

    async def submit(self, params: Params, address: str = "") -> Outcome:
        """POST /oauth2/authorize, its CSRF token already checked: the user's decision and credentials."""
        checked = await self._check(params)
        if not isinstance(checked, tuple):
            return checked
        request, registration = checked
        decision = params.get("decision")
        if decision == "deny":
            return self._back(request.redirect_uri, request.state, "access_denied", "the user denied the request")
        if decision != "allow":
            return Consent(request, registration.name, "choose Allow or Deny", 400)
        username, password = params.get("username", ""), params.get("password", "")
        if not username or not password:
            return Consent(request, registration.name, "enter your username and password", 400)
        user_id = await self._login(username, password, address)
        if not isinstance(user_id, int):
            return Consent(request, registration.name, user_id.message, user_id.status,
                           getattr(user_id, "retry_after_s", None))
        if await self._store.disabled(user_id):  # the token endpoint checks again when the code is redeemed
            return Consent(request, registration.name, "this account is disabled", 403)
        code = secrets.token_urlsafe(32)
        now_ms = int(self._clock() * 1000)
        await self._store.store_code(digest(code), IssuedCode(
            request.client_id, user_id, request.redirect_uri, request.code_challenge, request.scope,
            now_ms + self._code_ttl_s * 1000, secrets.token_hex(16)), keep_s=self._keep_s)
        return Redirect(redirect_to(request.redirect_uri, {"code": code, "state": request.state,
                                                           "iss": self._issuer_url}))

    async def check(self, form: Params, client_id: str) -> Redeemable:
        """RFC 6749 §4.1.3 + RFC 7636 §4.6 for an authenticated client: the code, not yet spent.
        A code presented after it was spent revokes the login it started (RFC 6749 §4.1.2)."""
        code, redirect_uri, verifier = form.get("code"), form.get("redirect_uri"), form.get("code_verifier")
        if not code:
            raise OAuthError("invalid_request", "code is required")
        if not redirect_uri:
            raise OAuthError("invalid_request", "redirect_uri is required (the authorization request's)")
        if not verifier:
            raise OAuthError("invalid_request", "code_verifier is required (PKCE)")
        code_hash = digest(code[:MAX_TOKEN])
        issued = await self._store.code(code_hash)
        if issued is None:
            raise OAuthError("invalid_grant", "authorization code is invalid")
        if issued.used_at is not None:
            await self._revoke(issued.family)
            raise OAuthError("invalid_grant", "authorization code was already used: the login it started is revoked")
        # Refused without being spent, as another client's refresh token is: its own client may still redeem it.
        if issued.expires_at <= self._clock() * 1000:
            raise OAuthError("invalid_grant", "authorization code has expired")
        if issued.client_id != client_id:
            raise OAuthError("invalid_grant", "authorization code was issued to another client")
        if issued.redirect_uri != redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request's")
        if not CODE_VERIFIER.fullmatch(verifier) or not hmac.compare_digest(s256(verifier), issued.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        return Redeemable(code_hash, issued.user_id, issued.family)

    async def redeem(self, code: Redeemable, refresh_hash: str, refresh_ttl_s: int) -> None:
        """Spend the code, storing the login's first refresh token; a concurrent redemption that won
        makes this one a reuse."""
        if not await self._store.redeem(code.code_hash, refresh_hash, refresh_ttl_s):
            await self._revoke(code.family)
            raise OAuthError("invalid_grant", "authorization code was already used: the login it started is revoked")

    async def _revoke(self, family: str) -> None:
        await self._store.revoke_login(family, self._keep_s)
        await self._revoked.revoke(family, self._keep_s)

    async def _login(self, username: str, password: str, address: str) -> int | OAuthError:
        """The user id, or why not: as the password grant checks (throttled, queued, timing-safe)."""
        found = await self._store.credentials(username) if len(username) <= MAX_USERNAME else None
        check = partial(self._passwords.verify, found[1] if found else None, password[:MAX_PASSWORD])
        try:
            if self._guard is None:
                ok = await asyncio.to_thread(check)
            else:
                account = f"id:{found[0]}" if found else f"name:{username[:MAX_USERNAME].lower()}"
                ok = await self._guard.verify(check, account, address)
        except OAuthError as exc:  # throttled (429) or the password queue is full (503)
            return exc
        if not ok or found is None:
            return OAuthError("invalid_grant", "wrong username or password")
        return found[0]

    async def _check(self, params: Params) -> tuple[AuthorizeRequest, Registration] | Redirect | Refusal:
        """RFC 6749 §4.1.2.1: while the client and redirect URI are not established, errors are shown;
        after, they go back to the client with the request's state."""
        response_type = params.get("response_type", "")
        client_id, redirect_uri = params.get("client_id", ""), params.get("redirect_uri", "")
        state = params.get("state")
        type_error = None if response_type == "code" else \
            ("invalid_request", "response_type is required") if not response_type else \
            ("unsupported_response_type", f"response_type {response_type[:40]!r} is not supported: use 'code' "
                                          "with PKCE (the implicit grant is refused, RFC 9700)")
        registration = await self._store.registration(client_id) if 0 < len(client_id) <= MAX_CLIENT_ID else None
        if registration is None or redirect_uri not in registration.redirect_uris:
            if type_error:
                return Refusal(*type_error)
            if not client_id:
                return Refusal("invalid_request", "client_id is required")
            if registration is None:
                return Refusal("invalid_request", "unknown client_id")
            if not registration.redirect_uris:
                return Refusal("unauthorized_client", "this client has no redirect URI registered")
            if not redirect_uri:
                return Refusal("invalid_request", "redirect_uri is required")
            return Refusal("invalid_request", "redirect_uri is not registered for this client (exact match)")
        if state is not None and len(state) > MAX_STATE:
            return Refusal("invalid_request", f"state is longer than {MAX_STATE} characters")
        if type_error:
            return self._back(redirect_uri, state, *type_error)
        challenge, method = params.get("code_challenge", ""), params.get("code_challenge_method", "")
        if not challenge:
            return self._back(redirect_uri, state, "invalid_request", "code_challenge is required (PKCE, RFC 7636)")
        if method != METHOD:
            return self._back(redirect_uri, state, "invalid_request", "code_challenge_method must be S256")
        if not CODE_CHALLENGE.fullmatch(challenge):
            return self._back(redirect_uri, state, "invalid_request",
                              "code_challenge must be 43 base64url characters (S256)")
        scope = params.get("scope", USER_SCOPE)
        if scope.split() != [USER_SCOPE]:
            return self._back(redirect_uri, state, "invalid_scope", f"the scope available is {USER_SCOPE!r}")
        return AuthorizeRequest(client_id, redirect_uri, challenge, state, USER_SCOPE), registration

    def _back(self, redirect_uri: str, state: str | None, error: str, description: str) -> Redirect:
        return Redirect(redirect_to(redirect_uri, {"error": error, "error_description": description,
                                                   "state": state, "iss": self._issuer_url}))
