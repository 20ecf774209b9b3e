"""Accounts and the OAuth2 authorization centre, through the gateway over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time

import forge
import pytest
from conftest import STACK
from jose import jwk, jwt
from support import PASSWORD, PUBLIC_CLIENT, Api, unique

from imray.domain.tokens import SigningKey


async def test_register_validates_and_refuses_duplicates(stack):
    api = Api(stack.base_url)
    name = unique()
    r = await api.http.post("/api/users", json={"username": name, "password": PASSWORD, "nickname": "Ann"})
    assert r.status_code == 201
    body = r.json()
    assert body["username"] == name and body["nickname"] == "Ann" and body["avatar_url"] is None
    assert isinstance(body["id"], int)
    r = await api.http.post("/api/users", json={"username": name, "password": PASSWORD})
    assert r.status_code == 409 and "taken" in r.json()["detail"]
    for bad in ({"username": "ab", "password": PASSWORD}, {"username": "no spaces", "password": PASSWORD},
                {"username": unique(), "password": "short"}, {"username": unique(), "password": "x" * 129},
                {"username": unique(), "password": PASSWORD, "nickname": "n" * 65},
                {"username": 12345, "password": PASSWORD}, {"password": PASSWORD}):
        r = await api.http.post("/api/users", json=bad)
        assert r.status_code == 422, (bad, r.text)
    await api.close()


async def test_password_grant_issues_pinned_rs256_jwt(stack):
    api = Api(stack.base_url)
    user = await api.register()
    login = await api.login(user["username"])
    raw = login.raw
    assert raw["token_type"] == "Bearer" and raw["expires_in"] > 0 and raw["scope"] == "chat"
    assert raw["user_id"] == user["id"]
    assert raw["socket_node"] in {n.node_id for n in stack.nodes}
    assert raw["socket_url"] == next(n.url for n in stack.nodes if n.node_id == raw["socket_node"])
    header = jwt.get_unverified_header(login.access_token)
    assert header["alg"] == "RS256"
    keys = (await api.http.get("/.well-known/jwks.json")).json()["keys"]
    key = next(k for k in keys if k["kid"] == header["kid"])
    claims = jwt.decode(login.access_token, jwk.construct(key), algorithms=["RS256"], issuer=stack.base_url)
    assert claims["sub"] == str(user["id"]) and claims["node"] == raw["socket_node"]
    assert claims["scope"] == "chat" and claims["jti"] and claims["exp"] > claims["iat"]
    me = await api.get("/api/users/me", login.access_token)
    assert me.status_code == 200 and me.json()["id"] == user["id"]
    meta = (await api.http.get("/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == stack.base_url and meta["jwks_uri"].endswith("/.well-known/jwks.json")
    assert meta["token_endpoint"] == f"{stack.base_url}/oauth2/token"
    assert {"password", "refresh_token", "client_credentials"} <= set(meta["grant_types_supported"])
    await api.close()


async def test_password_grant_errors_follow_rfc6749(stack):
    api = Api(stack.base_url)
    user = await api.register()

    async def token(data, **kw):
        return await api.http.post("/oauth2/token", data=data, **kw)

    r = await token({"grant_type": "password", "username": user["username"], "password": "wrong password",
                     "client_id": PUBLIC_CLIENT})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await token({"grant_type": "password", "username": unique(), "password": PASSWORD,
                     "client_id": PUBLIC_CLIENT})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await token({"grant_type": "password", "username": user["username"], "password": PASSWORD,
                     "client_id": "no-such-client"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = await token({"grant_type": "password", "username": user["username"], "client_id": PUBLIC_CLIENT})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await token({"grant_type": "implicit", "client_id": PUBLIC_CLIENT})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = await api.http.post("/oauth2/token", json={"grant_type": "password"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await api.http.get("/oauth2/authorize", params={"response_type": "token", "client_id": PUBLIC_CLIENT})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_response_type"
    await api.close()


async def test_refresh_grant_rotates_and_detects_reuse(stack):
    api = Api(stack.base_url)
    user = await api.register()
    first = await api.login(user["username"])

    async def refresh(token):
        return await api.http.post("/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": token,
                                                          "client_id": PUBLIC_CLIENT})

    r = await refresh(first.refresh_token)
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first.refresh_token and second["access_token"]
    assert second["user_id"] == user["id"] and second["socket_url"]
    r = await refresh(first.refresh_token)  # rotated away: refused...
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await refresh(second["refresh_token"])  # ...and the reuse revoked the whole family
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await refresh("not-a-token")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    await api.close()


@pytest.fixture
def confidential_client(stack) -> tuple[str, str]:
    """(client id, secret) of a client made as an operator makes one: `imray clients create`."""
    env = {**os.environ, "IMRAY_DATA_DIR": stack.data_dir}
    out = subprocess.run([sys.executable, "-m", "imray.cli", "clients", "create", "Report Bot"], env=env,
                         capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if line.startswith("client_"))
    return fields["client_id"].strip(), fields["client_secret"].strip()


async def test_client_credentials_for_confidential_clients(stack, confidential_client):
    client_id, secret = confidential_client
    api = Api(stack.base_url)
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    r = await api.http.post("/oauth2/token", data={"grant_type": "client_credentials"},
                            headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and "refresh_token" not in body and "socket_url" not in body
    claims = jwt.get_unverified_claims(body["access_token"])
    assert claims["sub"] == client_id and "node" not in claims
    r = await api.http.post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                   "client_secret": secret})
    assert r.status_code == 200
    # A client token is no user's: user routes refuse it.
    assert (await api.get("/api/users/me", body["access_token"])).status_code == 403
    bad = base64.b64encode(f"{client_id}:wrong".encode()).decode()
    r = await api.http.post("/oauth2/token", data={"grant_type": "client_credentials"},
                            headers={"Authorization": f"Basic {bad}"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert r.headers["www-authenticate"].startswith("Basic")
    r = await api.http.post("/oauth2/token", data={"grant_type": "client_credentials",
                                                   "client_id": PUBLIC_CLIENT})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    await api.close()


async def test_bearer_required_and_verified_on_http(stack):
    api = Api(stack.base_url)
    login = await api.user()
    assert (await api.http.get("/api/users/me")).status_code == 401
    assert (await api.http.get("/api/conversations")).status_code == 401
    assert (await api.get("/api/users/me", login.access_token + "x")).status_code == 401
    token = login.access_token
    attacks = [forge.tampered(token, sub="1"), forge.unsigned(token), forge.expired(stack.data_dir, token),
               forge.signed_with(SigningKey.generate(), token),
               forge.hmac_with_public_key(token, forge.real_key(stack.data_dir).public_pem)]
    for attack in attacks:
        r = await api.get("/api/users/me", attack)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = await api.http.get("/api/users/me", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    assert (await api.get("/api/users/me", token)).status_code == 200
    await api.close()


async def test_revocation_logs_a_login_out(stack):
    api = Api(stack.base_url)
    user = await api.register()
    login = await api.login(user["username"])
    other = await api.login(user["username"])  # a second login (another device) is not touched
    # The socket node lets the session in first, so it has verified (and remembered) this token.
    assert (await socket_answer(login.socket_url, login.access_token))[1] is None
    r = await api.http.post("/oauth2/revoke", data={"token": login.refresh_token, "client_id": PUBLIC_CLIENT})
    assert r.status_code == 200
    r = await api.http.post("/oauth2/token", data={"grant_type": "refresh_token",
                                                   "refresh_token": login.refresh_token,
                                                   "client_id": PUBLIC_CLIENT})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # Unknown tokens are fine (RFC 7009 §2.2); a missing one is not.
    r = await api.http.post("/oauth2/revoke", data={"token": "nope", "client_id": PUBLIC_CLIENT})
    assert r.status_code == 200
    r = await api.http.post("/oauth2/revoke", data={"client_id": PUBLIC_CLIENT})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    # The access token dies too: at once through Redis; on the embedded stack each process reads
    # revoked logins from the database every second.
    deadline = time.monotonic() + (0 if STACK == "real" else 5)
    while (status := (await api.get("/api/users/me", login.access_token)).status_code) == 200:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert status == 401
    while (answer := await socket_answer(login.socket_url, login.access_token))[1] is None:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    frame, code = answer
    assert code == 4001 and "revoked" in frame["message"], answer
    assert (await api.get("/api/users/me", other.access_token)).status_code == 200
    await api.close()


async def socket_answer(url: str, token: str) -> tuple[dict, int | None]:
    """The socket's answer to an auth frame, and its close code (None: it let the session in)."""
    import orjson
    from websockets.asyncio.client import connect

    async with connect(url) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        frame = orjson.loads(await ws.recv())
        if frame.get("type") == "auth_ok":
            return frame, None
        await ws.wait_closed()
        return frame, ws.close_code
