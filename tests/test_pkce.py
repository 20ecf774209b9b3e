"""A third-party app signs a user in with the authorization code flow and PKCE (RFC 6749 §4.1,
RFC 7636 S256), driven by Authlib's OAuth2 client, and chats on the socket with the tokens; then
the flow's failure cases. Only HTTP and WebSocket, as a browser and an app would use them."""

from __future__ import annotations

import asyncio
import html
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from support import PASSWORD, PUBLIC_CLIENT, Api, Socket, direct, eventually

APP_URI = "http://127.0.0.1:9/notes/callback"  # nothing listens there: the redirect is read, not followed
CONF_URI = "https://crm.example/oauth/callback"
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
BROWSER = {"Accept": "text/html,application/xhtml+xml"}


@dataclass
class Apps:
    public: str  # client id of a public app (no secret): PKCE is its proof
    confidential: tuple[str, str]  # (client id, secret)


def _create(stack, *args: str) -> dict[str, str]:
    env = {**os.environ, "IMRAY_DATA_DIR": stack.data_dir}
    out = subprocess.run([sys.executable, "-m", "imray.cli", "clients", "create", *args], env=env,
                         capture_output=True, text=True, check=True).stdout
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines()
                                              if line.startswith("client_"))}


@pytest.fixture(scope="module")
def apps(stack) -> Apps:
    """Registered as an operator registers them: `imray clients create --redirect-uri ...`."""
    public = _create(stack, "Notes App", "--public", "--redirect-uri", APP_URI)
    assert "client_secret" not in public
    conf = _create(stack, "CRM", "--redirect-uri", CONF_URI)
    return Apps(public["client_id"], (conf["client_id"], conf["client_secret"]))


def _app(stack, client_id: str, redirect_uri: str = APP_URI, secret: str | None = None) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(client_id=client_id, client_secret=secret, redirect_uri=redirect_uri, scope="chat",
                             code_challenge_method="S256", base_url=stack.base_url, timeout=30,
                             token_endpoint_auth_method="client_secret_basic" if secret else "none")


async def _browse(app: AsyncOAuth2Client, url: str) -> httpx.Response:
    """The browser opens the authorization URL (withhold_token: Authlib sends a token otherwise)."""
    return await app.request("GET", url, withhold_token=True, headers=BROWSER)


async def _submit(app: AsyncOAuth2Client, data: dict[str, str], **kwargs) -> httpx.Response:
    """The browser posts the page's form."""
    return await app.request("POST", "/oauth2/authorize", data=data, withhold_token=True, **kwargs)


def _hidden(page: str) -> dict[str, str]:
    return {html.unescape(k): html.unescape(v) for k, v in HIDDEN.findall(page)}


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def _authorize(stack, app: AsyncOAuth2Client, username: str, verifier: str,
                     **extra: str) -> tuple[httpx.Response, str]:
    """The browser's part: open the authorization URL, sign in, allow. (The 303, the state sent.)"""
    url, state = app.create_authorization_url(f"{stack.base_url}/oauth2/authorize", code_verifier=verifier, **extra)
    page = await _browse(app, url)
    assert page.status_code == 200, page.text
    form = _hidden(page.text)
    r = await _submit(app, {**form, "username": username, "password": PASSWORD, "decision": "allow"},
                      headers=BROWSER)
    return r, state


async def _code(stack, app: AsyncOAuth2Client, username: str, verifier: str) -> tuple[str, str]:
    """A fresh code of `username` for `app`, and the redirect that carried it."""
    r, state = await _authorize(stack, app, username, verifier)
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    assert location.startswith(str(app.redirect_uri) + "?") and _query(location)["state"] == state
    return _query(location)["code"], location


async def _token(stack, client_id: str, **form: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        return await http.post("/oauth2/token", data={"grant_type": "authorization_code", "client_id": client_id,
                                                      "redirect_uri": APP_URI, **form})


@pytest.fixture(scope="module")
def early_code(stack, apps) -> tuple[str, str, float]:
    """A code taken at the module's start and left unredeemed: the last test finds it expired."""
    async def take() -> tuple[str, str, float]:
        api = Api(stack.base_url)
        user = await api.register()
        await api.close()
        verifier = generate_token(48)
        async with _app(stack, apps.public) as app:
            code, _ = await _code(stack, app, user["username"], verifier)
        return code, verifier, time.monotonic()

    return asyncio.run(take())


async def test_a_third_party_app_signs_a_user_in_with_authlib_and_chats_on_the_socket(stack, apps, early_code):
    api = Api(stack.base_url)
    user, friend = await api.register(), await api.user()
    verifier = generate_token(48)
    async with _app(stack, apps.public) as app:
        url, state = app.create_authorization_url(f"{stack.base_url}/oauth2/authorize", code_verifier=verifier)
        page = await _browse(app, url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "Notes App" in page.text and 'type="password"' in page.text and "<script" not in page.text
        # Never framed (clickjacking), never cached; the CSRF cookie is not for scripts or other sites.
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/oauth2/authorize" in cookie
        form = _hidden(page.text)
        assert form["state"] == state and form["code_challenge_method"] == "S256" and form["csrf_token"]
        r = await _submit(app, {**form, "username": user["username"], "password": PASSWORD, "decision": "allow"})
        assert r.status_code == 303, r.text
        sent = _query(r.headers["location"])
        assert r.headers["location"].startswith(APP_URI + "?")
        assert sent["state"] == state and sent["iss"] == stack.base_url and sent["code"]
        # Authlib checks the state and sends the verifier; the tokens are a user's, like the password grant's.
        tokens = await app.fetch_token(f"{stack.base_url}/oauth2/token", authorization_response=r.headers["location"],
                                       state=state, code_verifier=verifier)
        assert tokens["token_type"] == "Bearer" and tokens["scope"] == "chat" and tokens["user_id"] == user["id"]
        assert tokens["refresh_token"] and tokens["socket_url"] and tokens["socket_node"]
        me = await app.get("/api/users/me")  # Authlib adds the bearer token
        assert me.status_code == 200 and me.json()["id"] == user["id"]
        mine = await Socket.open(tokens["socket_url"], tokens["access_token"])
        theirs = await Socket.open(friend.socket_url, friend.access_token)
        try:
            assert mine.auth is not None and mine.auth["type"] == "auth_ok", mine.auth
            conv = direct(user["id"], friend.user_id)
            assert (await mine.send_text(conv, "hello from a third-party app"))["type"] == "ack"
            await theirs.wait(lambda fs: any(f["type"] == "msg" and f["from"] == user["id"] for f in fs))
            assert (await theirs.send_text(conv, "hello back"))["type"] == "ack"
            await mine.wait(lambda fs: any(f["type"] == "msg" and f["body"] == "hello back" for f in fs))
        finally:
            await mine.close()
            await theirs.close()
        # The app refreshes as any public client does: client_id alone.
        refreshed = await app.refresh_token(f"{stack.base_url}/oauth2/token")
        assert refreshed["user_id"] == user["id"] and refreshed["refresh_token"] != tokens["refresh_token"]
    await api.close()


async def test_a_wrong_verifier_is_refused_and_the_right_one_still_redeems_the_code(stack, apps):
    api = Api(stack.base_url)
    user = await api.register()
    verifier = generate_token(48)
    async with _app(stack, apps.public) as app:
        code, _ = await _code(stack, app, user["username"], verifier)
    for wrong in (generate_token(48), verifier[:-1], ""):
        r = await _token(stack, apps.public, code=code, code_verifier=wrong)
        assert r.status_code == 400 and r.json()["error"] in ("invalid_grant", "invalid_request"), r.text
    r = await _token(stack, apps.public, code=code)  # no verifier at all
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await _token(stack, apps.public, code=code, code_verifier=verifier)
    assert r.status_code == 200 and r.json()["user_id"] == user["id"], r.text
    await api.close()


async def test_a_reused_code_is_refused_and_revokes_the_login_it_issued(stack, apps):
    api = Api(stack.base_url)
    user = await api.register()
    verifier = generate_token(48)
    async with _app(stack, apps.public) as app:
        code, _ = await _code(stack, app, user["username"], verifier)
    first = await _token(stack, apps.public, code=code, code_verifier=verifier)
    assert first.status_code == 200, first.text
    tokens = first.json()
    sock = await Socket.open(tokens["socket_url"], tokens["access_token"])
    assert sock.auth is not None and sock.auth["type"] == "auth_ok"
    again = await _token(stack, apps.public, code=code, code_verifier=verifier)  # a leaked code, replayed
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text
    await asyncio.wait_for(sock.ws.wait_closed(), 5)
    assert sock.ws.close_code == 4001
    await sock.close()
    r = await api.http.post("/oauth2/token", data={"grant_type": "refresh_token", "client_id": apps.public,
                                                   "refresh_token": tokens["refresh_token"]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    async def refused_over_http() -> bool:
        return (await api.get("/api/users/me", tokens["access_token"])).status_code == 401

    await eventually(refused_over_http, 5, "the revoked login's access token refused by the gateway")
    refused = await Socket.open(tokens["socket_url"], tokens["access_token"])
    assert refused.auth is not None and refused.auth["code"] == "unauthorized"
    await refused.close()
    await api.close()


async def test_revoking_an_app_ends_the_logins_made_through_it_and_no_other(stack):
    app_id = (await asyncio.to_thread(_create, stack, "Doomed App", "--public", "--redirect-uri", APP_URI)
              )["client_id"]
    api = Api(stack.base_url)
    user = await api.register()
    own = await api.login(user["username"])  # the first-party app's login: not the revoked app's
    verifier = generate_token(48)
    async with _app(stack, app_id) as app:
        code, _ = await _code(stack, app, user["username"], verifier)
    tokens = (await _token(stack, app_id, code=code, code_verifier=verifier)).json()
    sock = await Socket.open(tokens["socket_url"], tokens["access_token"])
    own_sock = await Socket.open(own.socket_url, own.access_token)
    try:
        assert sock.auth["type"] == own_sock.auth["type"] == "auth_ok"
        env = {**os.environ, "IMRAY_DATA_DIR": stack.data_dir}
        out = (await asyncio.to_thread(subprocess.run,
                                       [sys.executable, "-m", "imray.cli", "clients", "revoke", app_id],
                                       env=env, capture_output=True, text=True, check=True)).stdout
        assert "1 logins made through it ended" in out, out
        await asyncio.wait_for(sock.ws.wait_closed(), 10)
        assert sock.ws.close_code == 4001
        r = await api.http.post("/oauth2/token", data={"grant_type": "refresh_token", "client_id": app_id,
                                                       "refresh_token": tokens["refresh_token"]})
        assert r.status_code in (400, 401), r.text

        async def refused_over_http() -> bool:  # each gateway replica reads revocations every second
            return (await api.get("/api/users/me", tokens["access_token"])).status_code == 401
        await eventually(refused_over_http, 5, "the revoked app's access token refused by the gateway")
        # The user's other login lives on.
        assert (await api.get("/api/users/me", own.access_token)).status_code == 200
        assert (await own_sock.request({"type": "ping"}, "pong"))["type"] == "pong"
    finally:
        await own_sock.close()
        await sock.close()
        await api.close()


async def test_an_unregistered_redirect_uri_or_client_is_shown_and_never_redirected(stack, apps):
    api = Api(stack.base_url)
    verifier = generate_token(48)
    async with _app(stack, apps.public, redirect_uri="https://evil.example/steal") as evil:
        url, _ = evil.create_authorization_url(f"{stack.base_url}/oauth2/authorize", code_verifier=verifier)
        r = await _browse(evil, url)
        assert r.status_code == 400 and "location" not in r.headers and "evil.example" not in r.text
        assert r.headers["content-type"].startswith("text/html") and "redirect_uri" in r.text
        assert r.headers["x-frame-options"] == "DENY"
    for params in ({"client_id": "no-such-app", "redirect_uri": APP_URI},
                   {"client_id": apps.public, "redirect_uri": APP_URI + "/"},  # exact match only
                   {"client_id": apps.public},
                   {"client_id": PUBLIC_CLIENT, "redirect_uri": APP_URI},  # imray-app has none registered
                   {"client_id": apps.confidential[0], "redirect_uri": APP_URI}):  # another app's URI
        r = await api.http.get("/oauth2/authorize", params={"response_type": "code", "state": "s",
                                                            "code_challenge": "E" * 43,
                                                            "code_challenge_method": "S256", **params})
        assert r.status_code == 400 and "location" not in r.headers, (params, r.text)
        assert r.json()["error"] in ("invalid_request", "unauthorized_client")  # JSON when not asked for HTML
    r = await api.http.get("/oauth2/authorize", params={"response_type": "code", "client_id": apps.public,
                                                        "redirect_uri": [APP_URI, "https://evil.example/"]})
    assert r.status_code == 400 and "location" not in r.headers and r.json()["error"] == "invalid_request"
    # The token endpoint wants the redirect URI of the authorization request, exactly.
    user = await api.register()
    async with _app(stack, apps.public) as app:
        code, _ = await _code(stack, app, user["username"], verifier)
    r = await _token(stack, apps.public, code=code, code_verifier=verifier, redirect_uri=APP_URI + "?x=1")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    await api.close()


@pytest.mark.parametrize(("changes", "error"), [
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),  # RFC 7636's default, plain: refused
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge": "too-short"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),  # the implicit grant stays refused
    ({"scope": "users:admin"}, "invalid_scope"),
])
async def test_pkce_with_s256_is_required_and_the_error_goes_back_with_the_state(stack, apps, changes, error):
    params = {"response_type": "code", "client_id": apps.public, "redirect_uri": APP_URI, "state": "st4te",
              "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
              **changes}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        r = await http.get("/oauth2/authorize?" + urlencode({k: v for k, v in params.items() if v is not None}),
                           headers=BROWSER)
    assert r.status_code == 302, r.text
    sent = _query(r.headers["location"])
    assert r.headers["location"].startswith(APP_URI + "?")
    assert sent["error"] == error and sent["state"] == "st4te" and "code" not in sent


async def test_a_code_is_bound_to_the_client_it_was_issued_to(stack, apps):
    api = Api(stack.base_url)
    user = await api.register()
    verifier = generate_token(48)
    async with _app(stack, apps.public) as app:
        code, _ = await _code(stack, app, user["username"], verifier)
    conf_id, conf_secret = apps.confidential
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        r = await http.post("/oauth2/token", auth=(conf_id, conf_secret), data={
            "grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": APP_URI})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await _token(stack, PUBLIC_CLIENT, code=code, code_verifier=verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # A confidential app redeems its own codes with its secret (Authlib sends it by HTTP Basic), never without.
    async with _app(stack, conf_id, CONF_URI, conf_secret) as crm:
        own_verifier = generate_token(64)
        r, _ = await _authorize(stack, crm, user["username"], own_verifier)
        assert r.status_code == 303 and r.headers["location"].startswith(CONF_URI + "?")
        own_code = _query(r.headers["location"])["code"]
        r = await _token(stack, conf_id, code=own_code, code_verifier=own_verifier, redirect_uri=CONF_URI)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        tokens = await crm.fetch_token(f"{stack.base_url}/oauth2/token", code=own_code, code_verifier=own_verifier)
        assert tokens["user_id"] == user["id"] and tokens["scope"] == "chat"
    # Nor may a public third-party app use the password grant.
    r = await api.http.post("/oauth2/token", data={"grant_type": "password", "client_id": apps.public,
                                                   "username": user["username"], "password": PASSWORD})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    await api.close()


async def test_the_form_needs_its_csrf_token_and_the_browsers_cookie(stack, apps):
    api = Api(stack.base_url)
    user = await api.register()
    verifier = generate_token(48)
    async with _app(stack, apps.public) as app:
        url, _ = app.create_authorization_url(f"{stack.base_url}/oauth2/authorize", code_verifier=verifier)
        page = await _browse(app, url)
        form = {**_hidden(page.text), "username": user["username"], "password": PASSWORD, "decision": "allow"}
        token = form.pop("csrf_token")
        for attempt in (form, {**form, "csrf_token": "x" * 43}, {**form, "csrf_token": token, "state": "other"}):
            r = await _submit(app, attempt, headers=BROWSER)
            assert r.status_code == 403 and "location" not in r.headers, r.text
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as other_browser:  # no cookie
            r = await other_browser.post("/oauth2/authorize", data={**form, "csrf_token": token})
            assert r.status_code == 403 and "location" not in r.headers and r.json()["error"] == "invalid_request"
        # A wrong password shows the page again, with a fresh token that still works.
        r = await _submit(app, {**form, "csrf_token": token, "password": "wrong password"}, headers=BROWSER)
        assert r.status_code == 400 and "wrong username or password" in r.text and "location" not in r.headers
        r = await _submit(app, {**_hidden(r.text), "username": user["username"], "password": PASSWORD,
                                "decision": "deny"})
        assert r.status_code == 303 and _query(r.headers["location"])["error"] == "access_denied"
        r = await _submit(app, {**form, "csrf_token": token})
        assert r.status_code == 303 and "code" in _query(r.headers["location"])
    r = await api.http.post("/oauth2/authorize", content=b"{}", headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500
    await api.close()


async def test_an_expired_code_is_refused(stack, apps, early_code):
    code, verifier, taken = early_code
    wait = taken + stack.settings.authorization_code_ttl_s + 1 - time.monotonic()
    if wait > 0:  # the other tests have usually taken longer than the codes' life already
        await asyncio.sleep(wait)
    r = await _token(stack, apps.public, code=code, code_verifier=verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant" and "expired" in r.json()["error_description"]

