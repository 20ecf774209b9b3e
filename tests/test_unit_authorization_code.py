"""The authorization code + PKCE decisions (domain.authorization_code) and the grant through
domain.oauth.OAuthServer, with in-memory ports: no Ray, no HTTP."""

from __future__ import annotations

import pickle
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
from test_unit_oauth import (
    ACCESS_TTL_S,
    ALICE,
    ALICE_ID,
    ALICE_PASSWORD,
    ISSUER,
    REFRESH_TTL_S,
    FakeNodes,
    FakePasswords,
    FakeRevoked,
    FakeStore,
    StoredRefresh,
    node,
)

from imray.domain.authorization_code import (
    AuthorizationCodes,
    AuthorizeRequest,
    Consent,
    IssuedCode,
    Redirect,
    Refusal,
    Registration,
    csrf_ok,
    csrf_token,
    new_csrf_cookie,
    redirect_to,
    redirect_uri_problem,
    s256,
)
from imray.domain.login_guard import LoginRefused
from imray.domain.oauth import Client, OAuthError, OAuthServer
from imray.domain.tokens import SigningKey, TokenIssuer, TokenVerifier, digest

APP, APP_URI = "notes-app", "https://notes.example/callback"
CONF, CONF_SECRET, CONF_URI = "crm", "crm-secret", "http://127.0.0.1:8123/cb?tenant=1"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 appendix B
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
CODE_TTL_S = 60


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeCodeStore:
    """`CodeStore` in memory; its refresh tokens and revocations land in the OAuth store's fake."""

    def __init__(self, oauth: FakeStore) -> None:
        self.oauth = oauth
        self.clients = {APP: Registration(APP, "Notes", (APP_URI,), public=True),
                        CONF: Registration(CONF, "CRM", (CONF_URI,), public=False),
                        "bare": Registration("bare", "Bare", (), public=False)}
        self.codes: dict[str, IssuedCode] = {}
        self.lose_races = False  # redeem() as if a concurrent request had spent the code first

    async def registration(self, client_id: str) -> Registration | None:
        return self.clients.get(client_id)

    async def credentials(self, username: str) -> tuple[int, str] | None:
        return await self.oauth.credentials(username)

    async def disabled(self, user_id: int) -> bool:
        return await self.oauth.disabled(user_id)

    async def store_code(self, code_hash: str, code: IssuedCode, keep_s: int) -> None:
        self.codes[code_hash] = code

    async def code(self, code_hash: str) -> IssuedCode | None:
        return self.codes.get(code_hash)

    async def redeem(self, code_hash: str, refresh_hash: str, refresh_ttl_s: int) -> bool:
        code = self.codes[code_hash]
        if code.used_at is not None or self.lose_races:
            return False
        self.codes[code_hash] = replace(code, used_at=1)
        await self.oauth.store_refresh(refresh_hash, code.family, code.user_id, code.client_id, code.scope,
                                       refresh_ttl_s)
        return True

    async def revoke_login(self, family: str, keep_s: int) -> None:
        self.oauth._revoke(family, keep_s)


@pytest.fixture
def oauth_store() -> FakeStore:
    store = FakeStore()
    store.clients[APP] = Client(APP, "chat")  # public: no secret
    store.clients[CONF] = Client(CONF, "chat", digest(CONF_SECRET))
    return store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def codes_store(oauth_store: FakeStore) -> FakeCodeStore:
    return FakeCodeStore(oauth_store)


@pytest.fixture
def revoked() -> FakeRevoked:
    return FakeRevoked()


@pytest.fixture
def codes(codes_store: FakeCodeStore, revoked: FakeRevoked, clock: Clock) -> AuthorizationCodes:
    return AuthorizationCodes(codes_store, FakePasswords(), revoked, ISSUER, code_ttl_s=CODE_TTL_S,
                              keep_s=ACCESS_TTL_S, clock=clock)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def server(oauth_store: FakeStore, revoked: FakeRevoked, codes: AuthorizationCodes, key: SigningKey) -> OAuthServer:
    return OAuthServer(oauth_store, FakeNodes(node(1)), FakePasswords(), TokenIssuer(key, ISSUER, ACCESS_TTL_S),
                       revoked, REFRESH_TTL_S, codes=codes)


def request(**changes: str) -> dict[str, str]:
    params = {"response_type": "code", "client_id": APP, "redirect_uri": APP_URI, "state": "xyz",
              "code_challenge": CHALLENGE, "code_challenge_method": "S256", "scope": "chat"}
    return {k: v for k, v in {**params, **changes}.items() if v != "-"}  # "-": leave the field out


def submitted(**changes: str) -> dict[str, str]:
    return request(**{"username": ALICE, "password": ALICE_PASSWORD, "decision": "allow", **changes})


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def code_for(codes: AuthorizationCodes, **changes: str) -> str:
    outcome = await codes.submit(submitted(**changes))
    assert isinstance(outcome, Redirect), outcome
    return query(outcome.url)["code"]


def exchange(code_: str, **changes: str) -> dict[str, str]:
    form = {"grant_type": "authorization_code", "code": code_, "redirect_uri": APP_URI, "client_id": APP,
            "code_verifier": VERIFIER, **changes}
    return {k: v for k, v in form.items() if v != "-"}


async def oauth_error(awaitable: object) -> OAuthError:
    with pytest.raises(OAuthError) as exc:
        await awaitable  # type: ignore[misc]
    return exc.value


# -- the pieces ----------------------------------------------------------------------------------


def test_s256_matches_the_rfc_7636_example() -> None:
    assert s256(VERIFIER) == CHALLENGE


def test_redirect_uris_must_be_https_loopback_http_or_an_apps_own_scheme() -> None:
    for good in ("https://app.example/cb", "http://127.0.0.1:9/cb", "http://[::1]/cb", "http://localhost:80/x",
                 "com.example.app:/callback"):
        assert redirect_uri_problem(good) is None, good
    for bad in ("http://app.example/cb", "https://app.example/cb#frag", "javascript:alert(1)", "/relative",
                "https:///nohost", "https://a.example/ cb", "data:text/html,x", "https://a.example/" + "x" * 2000):
        assert redirect_uri_problem(bad), bad


def test_the_redirect_keeps_the_registered_query_and_encodes_what_it_adds() -> None:
    assert redirect_to(CONF_URI, {"code": "a b", "state": None}) == f"{CONF_URI}&code=a+b"
    assert redirect_to(APP_URI, {"error": "x", "state": "s&t"}) == f"{APP_URI}?error=x&state=s%26t"


def test_the_csrf_token_holds_only_for_its_cookie_and_its_own_parameters() -> None:
    cookie = new_csrf_cookie()
    checked = AuthorizeRequest(APP, APP_URI, CHALLENGE, "xyz", "chat")
    token = csrf_token(cookie, checked)
    assert csrf_ok(cookie, token, request())
    assert not csrf_ok(new_csrf_cookie(), token, request())  # another browser's cookie
    assert not csrf_ok(None, token, request())
    assert not csrf_ok(cookie, None, request())
    assert not csrf_ok(cookie, token, request(state="other"))
    assert not csrf_ok(cookie, token, request(redirect_uri=CONF_URI))
    assert not csrf_ok("short", csrf_token("short", checked), request())  # not a cookie we set


def test_outcomes_and_codes_cross_a_ray_call_whole() -> None:
    for value in (Refusal("invalid_request", "x", 403), Redirect("https://a/cb?code=1"),
                  Consent(AuthorizeRequest(APP, APP_URI, CHALLENGE, None, "chat"), "Notes", "m", 429, 3)):
        assert pickle.loads(pickle.dumps(value)) == value


# -- the authorization endpoint ------------------------------------------------------------------


async def test_a_valid_request_shows_the_consent_page_for_that_client(codes: AuthorizationCodes) -> None:
    page = await codes.page(request())
    assert page == Consent(AuthorizeRequest(APP, APP_URI, CHALLENGE, "xyz", "chat"), "Notes")
    assert (await codes.page(request(scope="-", state="-"))) == \
        Consent(AuthorizeRequest(APP, APP_URI, CHALLENGE, None, "chat"), "Notes")


@pytest.mark.parametrize(("changes", "error"), [
    ({"client_id": "-"}, "invalid_request"),
    ({"client_id": "nobody"}, "invalid_request"),
    ({"client_id": "x" * 65}, "invalid_request"),
    ({"redirect_uri": "-"}, "invalid_request"),
    ({"redirect_uri": "https://evil.example/callback"}, "invalid_request"),
    ({"redirect_uri": APP_URI + "/"}, "invalid_request"),  # exact match: no prefix, no normalising
    ({"redirect_uri": APP_URI.upper()}, "invalid_request"),
    ({"redirect_uri": CONF_URI}, "invalid_request"),  # another client's
    ({"client_id": "bare"}, "unauthorized_client"),
    ({"response_type": "token", "redirect_uri": "https://evil.example/"}, "unsupported_response_type"),
    ({"state": "s" * 1025}, "invalid_request"),
])
async def test_an_untrusted_client_or_redirect_uri_is_shown_never_redirected(
        codes: AuthorizationCodes, changes: dict[str, str], error: str) -> None:
    for outcome in (await codes.page(request(**changes)), await codes.submit(submitted(**changes))):
        assert isinstance(outcome, Refusal), outcome
        assert outcome.error == error and outcome.status == 400


@pytest.mark.parametrize(("changes", "error"), [
    ({"response_type": "token"}, "unsupported_response_type"),  # the implicit grant stays refused
    ({"response_type": "-"}, "invalid_request"),
    ({"code_challenge": "-"}, "invalid_request"),
    ({"code_challenge_method": "-"}, "invalid_request"),  # RFC 7636's default, plain, is refused
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge": CHALLENGE[:-1]}, "invalid_request"),
    ({"code_challenge": CHALLENGE[:-1] + "="}, "invalid_request"),
    ({"scope": "users:admin"}, "invalid_scope"),
    ({"scope": ""}, "invalid_scope"),
])
async def test_other_errors_go_back_to_the_client_with_the_state(
        codes: AuthorizationCodes, changes: dict[str, str], error: str) -> None:
    for outcome in (await codes.page(request(**changes)), await codes.submit(submitted(**changes))):
        assert isinstance(outcome, Redirect), outcome
        assert outcome.url.startswith(APP_URI + "?")
        sent = query(outcome.url)
        assert sent["error"] == error and sent["state"] == "xyz" and sent["iss"] == ISSUER and "code" not in sent


async def test_allowing_with_the_right_password_redirects_with_a_code_the_state_and_the_issuer(
        codes: AuthorizationCodes, codes_store: FakeCodeStore, clock: Clock) -> None:
    outcome = await codes.submit(submitted())
    assert isinstance(outcome, Redirect)
    sent = query(outcome.url)
    assert set(sent) == {"code", "state", "iss"} and sent["state"] == "xyz" and sent["iss"] == ISSUER
    stored = codes_store.codes[digest(sent["code"])]  # kept by its hash only
    assert (stored.client_id, stored.user_id, stored.redirect_uri, stored.code_challenge, stored.scope) == \
        (APP, ALICE_ID, APP_URI, CHALLENGE, "chat")
    assert stored.expires_at == (clock.now + CODE_TTL_S) * 1000 and stored.used_at is None
    assert len(stored.family) == 32


async def test_denying_redirects_access_denied_and_issues_no_code(
        codes: AuthorizationCodes, codes_store: FakeCodeStore) -> None:
    outcome = await codes.submit(submitted(decision="deny", password="-"))
    assert isinstance(outcome, Redirect)
    assert query(outcome.url)["error"] == "access_denied" and not codes_store.codes


@pytest.mark.parametrize(("changes", "status"), [
    ({"password": "wrong password"}, 400), ({"username": "nobody"}, 400), ({"password": "-"}, 400),
    ({"decision": "-"}, 400), ({"username": "x" * 33}, 400)])
async def test_a_failed_sign_in_shows_the_page_again_and_issues_no_code(
        codes: AuthorizationCodes, codes_store: FakeCodeStore, changes: dict[str, str], status: int) -> None:
    outcome = await codes.submit(submitted(**changes))
    assert isinstance(outcome, Consent) and outcome.status == status and outcome.message
    assert not codes_store.codes


async def test_a_disabled_account_gets_no_code(codes: AuthorizationCodes, oauth_store: FakeStore) -> None:
    oauth_store.disabled_users.add(ALICE_ID)
    outcome = await codes.submit(submitted())
    assert isinstance(outcome, Consent) and outcome.status == 403


# -- the token endpoint --------------------------------------------------------------------------


async def test_the_code_and_its_verifier_give_user_tokens_of_the_login_the_code_named(
        server: OAuthServer, codes: AuthorizationCodes, codes_store: FakeCodeStore, oauth_store: FakeStore,
        key: SigningKey) -> None:
    code = await code_for(codes)
    tokens = await server.token(exchange(code), None)
    assert tokens["scope"] == "chat" and tokens["user_id"] == ALICE_ID  # type: ignore[typeddict-item]
    assert tokens["socket_node"] == "node-1"  # type: ignore[typeddict-item]
    principal = TokenVerifier([key.public()], ISSUER).verify(tokens["access_token"])
    family = codes_store.codes[digest(code)].family
    assert (principal.user_id, principal.client_id, principal.family, principal.node) == \
        (ALICE_ID, APP, family, "node-1")
    refresh = tokens["refresh_token"]  # type: ignore[typeddict-item]
    assert oauth_store.refresh[digest(refresh)] == StoredRefresh(family, ALICE_ID, APP, "chat", REFRESH_TTL_S)
    # A public registered client refreshes by client_id alone, like imray-app.
    again = await server.token({"grant_type": "refresh_token", "refresh_token": refresh, "client_id": APP}, None)
    assert again["user_id"] == ALICE_ID  # type: ignore[typeddict-item]


@pytest.mark.parametrize("changes", [
    {"code_verifier": VERIFIER[:-1] + "A"}, {"code_verifier": CHALLENGE}, {"code_verifier": "short"},
    {"redirect_uri": APP_URI + "/other"}, {"code": "not-a-code"}])
async def test_a_wrong_verifier_redirect_uri_or_code_is_invalid_grant_and_spends_nothing(
        server: OAuthServer, codes: AuthorizationCodes, revoked: FakeRevoked, changes: dict[str, str]) -> None:
    code = await code_for(codes)
    assert (await oauth_error(server.token(exchange(code, **changes), None))).error == "invalid_grant"
    assert not revoked.families
    assert (await server.token(exchange(code), None))["user_id"] == ALICE_ID  # type: ignore[typeddict-item]


@pytest.mark.parametrize(("missing", "error"), [
    ("code", "invalid_request"), ("code_verifier", "invalid_request"), ("redirect_uri", "invalid_request"),
    ("client_id", "invalid_client")])
async def test_a_missing_field_is_named(server: OAuthServer, codes: AuthorizationCodes, missing: str,
                                        error: str) -> None:
    code = await code_for(codes)
    assert (await oauth_error(server.token(exchange(code, **{missing: "-"}), None))).error == error


async def test_a_reused_code_is_refused_and_revokes_the_login_it_started(
        server: OAuthServer, codes: AuthorizationCodes, codes_store: FakeCodeStore, oauth_store: FakeStore,
        revoked: FakeRevoked) -> None:
    code = await code_for(codes)
    tokens = await server.token(exchange(code), None)
    family = codes_store.codes[digest(code)].family
    error = await oauth_error(server.token(exchange(code), None))
    assert error.error == "invalid_grant" and "revoked" in error.message
    assert revoked.families == {family: ACCESS_TTL_S}  # its access tokens die
    assert oauth_store.refresh[digest(tokens["refresh_token"])].used  # type: ignore[typeddict-item]
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": APP}
    assert (await oauth_error(server.token(refresh, None))).error == "invalid_grant"


async def test_a_code_spent_by_a_concurrent_request_counts_as_reused(
        server: OAuthServer, codes: AuthorizationCodes, codes_store: FakeCodeStore, revoked: FakeRevoked) -> None:
    code = await code_for(codes)
    codes_store.lose_races = True
    assert (await oauth_error(server.token(exchange(code), None))).error == "invalid_grant"
    assert revoked.families == {codes_store.codes[digest(code)].family: ACCESS_TTL_S}


async def test_an_expired_code_is_refused(server: OAuthServer, codes: AuthorizationCodes, clock: Clock) -> None:
    code = await code_for(codes)
    clock.now += CODE_TTL_S
    error = await oauth_error(server.token(exchange(code), None))
    assert error.error == "invalid_grant" and "expired" in error.message


async def test_a_code_is_bound_to_its_client(server: OAuthServer, codes: AuthorizationCodes) -> None:
    code = await code_for(codes)
    other = exchange(code, client_id=CONF, client_secret=CONF_SECRET, redirect_uri=CONF_URI)
    assert (await oauth_error(server.token(other, None))).error == "invalid_grant"
    # imray-app, the built-in public client, is "another client" too.
    assert (await oauth_error(server.token(exchange(code, client_id="imray-app"), None))).error == "invalid_grant"


async def test_a_confidential_client_must_authenticate_to_redeem_its_code(
        server: OAuthServer, codes: AuthorizationCodes) -> None:
    code = await code_for(codes, client_id=CONF, redirect_uri=CONF_URI)
    form = exchange(code, client_id=CONF, redirect_uri=CONF_URI)
    assert (await oauth_error(server.token(form, None))).error == "invalid_client"
    assert (await oauth_error(server.token({**form, "client_secret": "wrong"}, None))).error == "invalid_client"
    tokens = await server.token(exchange(code, client_id="-", redirect_uri=CONF_URI), (CONF, CONF_SECRET))
    assert tokens["user_id"] == ALICE_ID  # type: ignore[typeddict-item]


async def test_a_public_third_party_client_cannot_use_the_password_grant(server: OAuthServer) -> None:
    form = {"grant_type": "password", "client_id": APP, "username": ALICE, "password": ALICE_PASSWORD}
    assert (await oauth_error(server.token(form, None))).error == "invalid_client"


async def test_a_public_client_that_sends_a_secret_is_refused(server: OAuthServer, codes: AuthorizationCodes) -> None:
    code = await code_for(codes)
    assert (await oauth_error(server.token(exchange(code, client_secret="guess"), None))).error == "invalid_client"


async def test_a_code_of_an_account_disabled_since_gives_no_tokens(
        server: OAuthServer, codes: AuthorizationCodes, oauth_store: FakeStore) -> None:
    code = await code_for(codes)
    oauth_store.disabled_users.add(ALICE_ID)
    assert (await oauth_error(server.token(exchange(code), None))).error == "invalid_grant"


async def test_without_codes_the_grant_is_unsupported(oauth_store: FakeStore, revoked: FakeRevoked,
                                                       key: SigningKey) -> None:
    bare = OAuthServer(oauth_store, FakeNodes(node(1)), FakePasswords(), TokenIssuer(key, ISSUER, ACCESS_TTL_S),
                       revoked, REFRESH_TTL_S)
    error = await oauth_error(bare.token(exchange("x"), None))
    assert error.error == "unsupported_grant_type"


# -- the store, on a database migrated as `imray up` migrates it ---------------------------------


def test_codes_are_spent_once_with_their_logins_first_refresh_token_in_the_same_transaction(tmp_path) -> None:
    from sqlalchemy import select

    from imray.storage import accounts, migrate
    from imray.storage import authorization_codes as stored
    from imray.storage.db import Database
    from imray.storage.schema import refresh_tokens, revoked_logins

    url = f"sqlite:///{tmp_path}/codes.db"
    migrate.upgrade(url)
    db = Database(url)
    try:
        def setup(c) -> None:
            accounts.create_client(c, APP, "Notes", None, "chat")
            stored.set_redirect_uris(c, APP, [APP_URI, "com.example.notes:/cb"])
            accounts.create_client(c, CONF, "CRM", digest(CONF_SECRET), "chat")

        db.transaction(setup)
        assert db.transaction(lambda c: stored.registration(c, APP)) == {
            "client_id": APP, "name": "Notes", "public": True, "redirect_uris": [APP_URI, "com.example.notes:/cb"]}
        assert db.transaction(lambda c: stored.registration(c, CONF))["redirect_uris"] == []  # type: ignore[index]
        assert db.transaction(lambda c: stored.registration(c, "nobody")) is None
        now = accounts.now_ms()
        row: stored.CodeRow = {"client_id": APP, "user_id": 7, "redirect_uri": APP_URI, "code_challenge": CHALLENGE,
                               "scope": "chat", "expires_at": now + 60_000, "used_at": None, "family": "f" * 32}
        old: stored.CodeRow = {**row, "expires_at": now - 3_600_000, "family": "o" * 32}
        db.transaction(lambda c: stored.store_code(c, "old", old, keep_s=900))
        db.transaction(lambda c: stored.store_code(c, "h1", row, keep_s=900))  # expired long ago: gone
        assert db.transaction(lambda c: stored.code(c, "old")) is None
        assert db.transaction(lambda c: stored.code(c, "h1")) == row
        assert db.transaction(lambda c: stored.redeem(c, "h1", "r1", 3600)) is True
        assert db.transaction(lambda c: stored.redeem(c, "h1", "r2", 3600)) is False
        assert db.transaction(lambda c: stored.code(c, "h1"))["used_at"] is not None  # type: ignore[index]
        tokens = db.transaction(lambda c: c.execute(select(refresh_tokens.c.token_hash, refresh_tokens.c.family,
                                                           refresh_tokens.c.client_id)).all())
        assert [tuple(t) for t in tokens] == [("r1", "f" * 32, APP)]
        db.transaction(lambda c: stored.revoke_login(c, "f" * 32, 900))
        assert db.transaction(lambda c: c.execute(select(refresh_tokens.c.used)).scalar()) is True
        assert db.transaction(lambda c: c.execute(select(revoked_logins.c.family)).scalar()) == "f" * 32
    finally:
        db.close()


class RefusingGuard:
    """A `LoginGuard` at its limit: every sign-in refused before its password is checked."""

    def __init__(self, refusal: OAuthError) -> None:
        self.refusal = refusal
        self.addresses: list[str] = []

    async def verify(self, check: object, account: str, address: str) -> bool:
        self.addresses.append(address)
        raise self.refusal


@pytest.mark.parametrize(("refusal", "status", "retry"), [
    (LoginRefused("slow_down", "too many failed logins for this account: try again in 7 s", 429, 7), 429, 7),
    (LoginRefused("temporarily_unavailable", "too many logins at once", 503, 1), 503, 1)])
async def test_sign_ins_are_throttled_and_queued_like_the_password_grant(
        codes_store: FakeCodeStore, revoked: FakeRevoked, refusal: OAuthError, status: int, retry: int) -> None:
    guard = RefusingGuard(refusal)
    codes = AuthorizationCodes(codes_store, FakePasswords(), revoked, ISSUER, code_ttl_s=CODE_TTL_S,
                               keep_s=ACCESS_TTL_S, guard=guard)  # type: ignore[arg-type]
    outcome = await codes.submit(submitted(), "203.0.113.9")
    assert isinstance(outcome, Consent) and (outcome.status, outcome.retry_after_s) == (status, retry)
    assert outcome.message == refusal.message and guard.addresses == ["203.0.113.9"] and not codes_store.codes
