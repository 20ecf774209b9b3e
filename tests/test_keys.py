"""Key rotation, RFC 7662 introspection and RFC 8414 metadata, through HTTP and the socket only.

The operator's part is the `imray` command run as a subprocess against the stack's data dir; every
process (gateway replicas, AuthService, socket nodes) reads the keys from that directory's files.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import os
import re
import secrets
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import forge
import httpx
import pytest
from jose import jwt
from support import PASSWORD, PUBLIC_CLIENT, Api, Socket, bearer, eventually

from imray.domain.tokens import SigningKey

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')  # the authorize page's fields
CHECKED_WITHIN_S = 15.0  # every process looks at the keys every 2 s; generous for a loaded 2-core box


def imray(stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`imray ARGS` as an operator runs it on the stack's machine."""
    env = {**os.environ, "IMRAY_DATA_DIR": stack.data_dir}
    return subprocess.run([sys.executable, "-m", "imray.cli", *args], env=env, capture_output=True, text=True,
                          check=check, timeout=120)


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def kid(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


@pytest.fixture(scope="module")
def resource_server(stack) -> tuple[str, str]:
    """A confidential client, as a resource server that introspects tokens would be registered."""
    return new_client(stack, "Resource Server", "introspect")


def new_client(stack, name: str, scope: str) -> tuple[str, str]:
    """(client id, secret) of a confidential client made as an operator makes one: `imray clients create`."""
    out = imray(stack, "clients", "create", name, "--scope", scope).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if line.startswith("client_"))
    return fields["client_id"].strip(), fields["client_secret"].strip()


async def introspect(api: Api, token: str, auth: tuple[str, str]) -> dict:
    r = await api.http.post("/oauth2/introspect", data={"token": token}, headers=basic(*auth))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()


# -- introspection ------------------------------------------------------------------------------------


async def test_introspection_describes_an_active_user_token_to_a_resource_server(stack, resource_server) -> None:
    api = Api(stack.base_url)
    login = await api.user()
    answer = await introspect(api, login.access_token, resource_server)
    assert answer == {"active": True, "scope": "chat", "client_id": PUBLIC_CLIENT, "sub": str(login.user_id),
                      "exp": answer["exp"], "iat": answer["iat"], "iss": stack.base_url, "token_type": "Bearer",
                      "jti": answer["jti"]}
    assert 0 < answer["exp"] - answer["iat"] <= stack.settings.access_token_ttl_s
    # The same through client_secret_post, with RFC 7662's optional hint.
    client_id, secret = resource_server
    r = await api.http.post("/oauth2/introspect", data={"token": login.access_token, "client_id": client_id,
                                                        "client_secret": secret, "token_type_hint": "access_token"})
    assert r.status_code == 200 and r.json()["active"] is True
    await api.close()


async def test_introspection_says_inactive_for_expired_forged_revoked_and_refresh_tokens(
        stack, resource_server) -> None:
    api = Api(stack.base_url)
    login = await api.user()
    token = login.access_token
    for bad in (forge.expired(stack.data_dir, token), forge.signed_with(SigningKey.generate(), token),
                forge.tampered(token, sub="1"), forge.unsigned(token), "not.a.jwt", "x" * 9000,
                login.refresh_token):
        assert await introspect(api, bad, resource_server) == {"active": False}
    # Revoked (the login logged out): inactive, though the token has not expired.
    r = await api.http.post("/oauth2/revoke", data={"token": login.refresh_token, "client_id": PUBLIC_CLIENT})
    assert r.status_code == 200

    async def inactive() -> bool:
        return await introspect(api, token, resource_server) == {"active": False}

    await eventually(inactive, 5, "a revoked login's access token is inactive")
    await api.close()


async def test_introspection_refuses_callers_that_are_not_confidential_clients(stack, resource_server) -> None:
    api = Api(stack.base_url)
    login = await api.user()
    client_id, secret = resource_server
    form = {"token": login.access_token}
    for data, headers in [
        (form, {}),  # nobody
        ({**form, "client_id": PUBLIC_CLIENT}, {}),  # the public app has no secret to prove
        (form, basic(client_id, "wrong")),
        ({**form, "client_id": client_id, "client_secret": "wrong"}, {}),
        ({**form, "client_id": "nobody", "client_secret": secret}, {}),
        (form, {"Authorization": "Basic !!!"}),
    ]:
        r = await api.http.post("/oauth2/introspect", data=data, headers=headers)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", (data, headers, r.text)
        assert "www-authenticate" in r.headers and "active" not in r.json()
    # A confidential client without the introspect scope learns nothing.
    r = await api.http.post("/oauth2/introspect", data=form, headers=basic(*new_client(stack, "Bot", "users:read")))
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope" and "active" not in r.json()
    # A user's bearer token is no client authentication either.
    r = await api.http.post("/oauth2/introspect", data=form, headers=bearer(login.access_token))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # Odd requests: no token, two client authentications, JSON instead of a form.
    r = await api.http.post("/oauth2/introspect", data={}, headers=basic(client_id, secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await api.http.post("/oauth2/introspect", data={**form, "client_secret": secret},
                            headers=basic(client_id, secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await api.http.post("/oauth2/introspect", json=form, headers=basic(client_id, secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    await api.close()


# -- metadata: everything it lists works --------------------------------------------------------------


async def test_every_entry_of_the_metadata_works(stack, resource_server) -> None:
    """Reads the RFC 8414 document and exercises each endpoint, grant, response type, PKCE method and
    client authentication method it lists: an entry this test does not know fails it, so the
    document cannot claim more than the service does."""
    api = Api(stack.base_url)
    base = stack.base_url
    r = await api.http.get("/.well-known/oauth-authorization-server")
    assert r.status_code == 200
    meta: dict = r.json()
    client_id, secret = resource_server
    login = await api.user()
    known = {"issuer", "token_endpoint", "revocation_endpoint", "introspection_endpoint", "jwks_uri",
             "grant_types_supported", "response_types_supported", "token_endpoint_auth_methods_supported",
             "revocation_endpoint_auth_methods_supported", "introspection_endpoint_auth_methods_supported",
             "scopes_supported", "service_documentation", "authorization_endpoint",
             "code_challenge_methods_supported"}
    assert set(meta) <= known, f"listed but never checked: {set(meta) - known}"
    assert meta["issuer"] == base and jwt.get_unverified_claims(login.access_token)["iss"] == base
    for name in ("token_endpoint", "revocation_endpoint", "introspection_endpoint", "jwks_uri"):
        assert meta[name].startswith(base + "/"), name
    path = {name: meta[name][len(base):] for name in meta if name.endswith(("_endpoint", "_uri"))}

    async def token(data: dict, headers: dict | None = None) -> httpx.Response:
        return await api.http.post(path["token_endpoint"], data=data, headers=headers or {})

    # Grants.
    grants = {
        "password": lambda: token({"grant_type": "password", "username": login.username,
                                   "password": PASSWORD, "client_id": PUBLIC_CLIENT}),
        "refresh_token": lambda: token({"grant_type": "refresh_token", "refresh_token": login.refresh_token,
                                        "client_id": PUBLIC_CLIENT}),
        "client_credentials": lambda: token({"grant_type": "client_credentials"}, basic(client_id, secret)),
        "authorization_code": lambda: code_flow(stack, meta, login.username),
    }
    for grant in meta["grant_types_supported"]:
        assert grant in grants, f"grant {grant!r} is listed but not checked here"
        r = await grants[grant]()
        assert r.status_code == 200 and r.json()["access_token"], (grant, r.text)
    # Client authentication at the token endpoint, each method alone.
    token_auth = {
        "client_secret_basic": lambda s: token({"grant_type": "client_credentials"}, basic(client_id, s)),
        "client_secret_post": lambda s: token({"grant_type": "client_credentials", "client_id": client_id,
                                               "client_secret": s}),
    }
    for method in meta["token_endpoint_auth_methods_supported"]:
        if method == "none":  # a public client: its id alone (the password grant above)
            assert "password" in meta["grant_types_supported"]
            continue
        assert method in token_auth, f"token endpoint auth method {method!r} is not checked here"
        assert (await token_auth[method](secret)).status_code == 200, method
        assert (await token_auth[method]("wrong")).status_code == 401, method  # the method is really checked
    # Revocation, by each method it lists (an unknown token is no error, RFC 7009 §2.2).
    for method in meta["revocation_endpoint_auth_methods_supported"]:
        fresh = await api.login(login.username)
        data = {"token": fresh.refresh_token}
        if method == "none":
            r = await api.http.post(path["revocation_endpoint"], data={**data, "client_id": PUBLIC_CLIENT})
            assert r.status_code == 200
            r = await token({"grant_type": "refresh_token", "refresh_token": fresh.refresh_token,
                             "client_id": PUBLIC_CLIENT})
            assert r.status_code == 400, "the revoked refresh token still works"
            continue
        assert method in ("client_secret_basic", "client_secret_post"), f"revocation auth {method!r} unchecked"
        for s, status in ((secret, 200), ("wrong", 401)):
            auth = ({"headers": basic(client_id, s)} if method == "client_secret_basic"
                    else {"data": {**data, "client_id": client_id, "client_secret": s}})
            r = await api.http.post(path["revocation_endpoint"], **({"data": data} | auth))
            assert r.status_code == status, (method, r.text)
    # Introspection, by each method it lists.
    for method in meta["introspection_endpoint_auth_methods_supported"]:
        assert method in ("client_secret_basic", "client_secret_post"), f"introspection auth {method!r} unchecked"
        fresh = await api.login(login.username)
        data = {"token": fresh.access_token}
        auth = ({"headers": basic(client_id, secret)} if method == "client_secret_basic"
                else {"data": {**data, "client_id": client_id, "client_secret": secret}})
        r = await api.http.post(path["introspection_endpoint"], **({"data": data} | auth))
        assert r.status_code == 200 and r.json()["active"] is True, (method, r.text)
    # The JWKS has the key of a token just issued.
    keys = (await api.http.get(path["jwks_uri"])).json()["keys"]
    assert kid((await api.login(login.username)).access_token) in {k["kid"] for k in keys}
    # Scopes: "chat" is what users' tokens carry; any other listed one a client can be given and ask for.
    assert "chat" in meta["scopes_supported"]
    others = [scope for scope in meta["scopes_supported"] if scope != "chat"]
    if others:
        every = new_client(stack, "Every scope", " ".join(others))
        for scope in others:
            r = await token({"grant_type": "client_credentials", "scope": scope}, basic(*every))
            assert r.status_code == 200 and r.json()["scope"] == scope, (scope, r.text)
    # Browser flows: listed only if the authorization endpoint serves them.
    if meta["response_types_supported"]:
        assert meta["response_types_supported"] == ["code"]
        assert meta["code_challenge_methods_supported"] == ["S256"]
        assert "authorization_code" in meta["grant_types_supported"]
        assert meta["authorization_endpoint"].startswith(base + "/")
    else:
        assert "authorization_endpoint" not in meta and "code_challenge_methods_supported" not in meta
        assert "authorization_code" not in meta["grant_types_supported"]
    assert (await api.http.get(meta["service_documentation"][len(base):])).status_code == 200
    await api.close()


async def code_flow(stack, meta: dict, username: str) -> httpx.Response:
    """The authorization code grant with PKCE S256, as a browser and a public app drive it: the page,
    the signed-in consent, the redirect with the code, the code redeemed with its verifier."""
    redirect_uri = "http://127.0.0.1:9/metadata/callback"
    out = imray(stack, "clients", "create", "Metadata App", "--public", "--redirect-uri", redirect_uri).stdout
    app = dict(line.split(":", 1) for line in out.splitlines() if line.startswith("client_"))["client_id"].strip()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(meta["authorization_endpoint"], headers={"Accept": "text/html"}, params={
            "response_type": "code", "client_id": app, "redirect_uri": redirect_uri, "scope": "chat",
            "state": "s1", "code_challenge": challenge, "code_challenge_method": "S256"})
        assert page.status_code == 200, page.text
        hidden = {html.unescape(k): html.unescape(v) for k, v in HIDDEN.findall(page.text)}
        r = await browser.post(meta["authorization_endpoint"], headers={"Accept": "text/html"}, data={
            **hidden, "username": username, "password": PASSWORD, "decision": "allow"})
        assert r.status_code in (302, 303), r.text
        query = parse_qs(urlsplit(r.headers["location"]).query)
        assert query["state"] == ["s1"], query
        return await browser.post(meta["token_endpoint"], data={
            "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": redirect_uri,
            "client_id": app, "code_verifier": verifier})


# -- rotation end to end ------------------------------------------------------------------------------


async def works_on_http(api: Api, token: str) -> bool:
    return (await api.get("/api/users/me", token)).status_code == 200


async def works_on_socket(url: str, token: str) -> bool:
    sock = await Socket.open(url, token)
    try:
        return bool(sock.auth and sock.auth["type"] == "auth_ok")
    finally:
        await sock.close()


async def jwks_kids(api: Api) -> set[str]:
    return {k["kid"] for k in (await api.http.get("/.well-known/jwks.json")).json()["keys"]}


async def all_of(check, times: int = 6) -> bool:
    """`check()` holds several times in a row (requests spread over both gateway replicas)."""
    for _ in range(times):
        if not await check():
            return False
    return True


@pytest.mark.runs_last  # retiring the key every earlier token was signed with would refuse them all
async def test_rotate_then_retire_a_signing_key_without_a_restart(stack, resource_server) -> None:
    api = Api(stack.base_url)
    old = await api.user()
    old_kid = kid(old.access_token)
    assert old_kid in await jwks_kids(api)

    out = imray(stack, "keys", "rotate").stdout
    new_kid = out.split()[1]
    assert new_kid != old_kid and "active" in out
    listed = imray(stack, "keys", "list").stdout
    assert old_kid in listed and f"{new_kid}  active" in listed

    async def signed_with_new_key():
        login = await api.login(old.username)
        return login if kid(login.access_token) == new_kid else None

    new = await eventually(signed_with_new_key, CHECKED_WITHIN_S, "new logins are signed with the new key")
    await eventually(lambda: all_of(lambda: _has(api, {old_kid, new_kid})), CHECKED_WITHIN_S,
                     "the JWKS publishes both keys")
    # Both tokens work, on HTTP (both gateway replicas) and on their socket nodes.
    for login in (old, new):
        assert await all_of(lambda login=login: works_on_http(api, login.access_token)), login.access_token
        assert await works_on_socket(login.socket_url, login.access_token)

    # The active key cannot be retired; a key that does not exist neither.
    refused = imray(stack, "keys", "retire", new_kid, check=False)
    assert refused.returncode == 1 and "active" in refused.stderr
    assert imray(stack, "keys", "retire", "0000000000000000", check=False).returncode == 1

    # Sockets open with either token when the old key is retired: the old one's is closed, 4001.
    old_sock = await Socket.open(old.socket_url, old.access_token)
    new_sock = await Socket.open(new.socket_url, new.access_token)
    assert old_sock.auth["type"] == new_sock.auth["type"] == "auth_ok"
    imray(stack, "keys", "retire", old_kid)
    await eventually(lambda: all_of(lambda: _refused_on_http(api, old.access_token)), CHECKED_WITHIN_S,
                     "the retired key's token is refused by every gateway replica")
    await old_sock.wait(lambda fs: any(f.get("code") == "unauthorized" for f in fs), CHECKED_WITHIN_S)
    await asyncio.wait_for(old_sock.ws.wait_closed(), 10)
    assert old_sock.ws.close_code == 4001
    assert (await new_sock.request({"type": "ping"}, "pong"))["type"] == "pong"
    await old_sock.close()
    await new_sock.close()
    assert not await works_on_socket(old.socket_url, old.access_token)
    socket_refusal = await Socket.open(old.socket_url, old.access_token)
    assert socket_refusal.auth is not None and socket_refusal.auth["code"] == "unauthorized"
    await socket_refusal.close()
    # The authorization server agrees (introspection, in AuthService's process).
    async def old_inactive() -> bool:
        return await introspect(api, old.access_token, resource_server) == {"active": False}

    await eventually(old_inactive, CHECKED_WITHIN_S, "introspection calls the retired key's token inactive")
    assert (await introspect(api, new.access_token, resource_server))["active"] is True
    assert await jwks_kids(api) == {new_kid} and await all_of(lambda: _has(api, {new_kid}, exact=True))
    # The new key's tokens go on working, and new logins too.
    assert await all_of(lambda: works_on_http(api, new.access_token))
    assert await works_on_socket(new.socket_url, new.access_token)
    again = await api.login(old.username)
    assert kid(again.access_token) == new_kid and await works_on_socket(again.socket_url, again.access_token)
    await api.close()


async def _has(api: Api, kids: set[str], exact: bool = False) -> bool:
    found = await jwks_kids(api)
    return found == kids if exact else kids <= found


async def _refused_on_http(api: Api, token: str) -> bool:
    r = await api.get("/api/users/me", token)
    return r.status_code == 401
