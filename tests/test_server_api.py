"""The server API (issue 17): confidential clients' scoped routes, bots, account administration, and
the operators' commands (`imray clients ...`, `imray users ...`) run as an operator runs them.

Black-box: HTTP and WebSocket only (the CLI as subprocesses against the test deployment).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest
from support import PASSWORD, PUBLIC_CLIENT, Api, Socket, bearer, direct, eventually, unique

ADMIN_SCOPE = "users:read users:admin presence:read conversations:admin"


def cli(stack, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full = {**os.environ, "IMRAY_DATA_DIR": stack.data_dir, **(env or {})}
    done = subprocess.run([sys.executable, "-m", "imray.cli", *args], env=full, capture_output=True, text=True,
                          timeout=120)
    if check:
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def created(out: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines()
                                              if line.startswith(("client_", "bot_user_id")))}


@pytest.fixture(scope="module")
def clients(stack) -> dict[str, dict[str, str]]:
    """An admin client, a bot client and a client with one narrow scope, made with `imray clients create`."""
    return {
        "admin": created(cli(stack, "clients", "create", "admin", "--scope", ADMIN_SCOPE).stdout),
        "bot": created(cli(stack, "clients", "create", "--bot", unique("bot"), "--scope", "messages:send").stdout),
        "narrow": created(cli(stack, "clients", "create", "reader", "--scope", "users:read").stdout),
    }


async def client_token(api: Api, client: dict[str, str]) -> str:
    r = await api.http.post("/oauth2/token", data={"grant_type": "client_credentials"},
                            auth=(client["client_id"], client["client_secret"]))
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


async def closed(sock: Socket, timeout: float) -> int:  # noqa: ASYNC109
    await asyncio.wait_for(sock.ws.wait_closed(), timeout)
    assert sock.reader is not None
    await asyncio.gather(sock.reader, return_exceptions=True)
    assert sock.ws.close_code is not None
    return sock.ws.close_code


def refused_for_scope(r, scope: str) -> bool:
    header = r.headers.get("www-authenticate", "")
    return r.status_code == 403 and 'error="insufficient_scope"' in header and f'scope="{scope}"' in header


async def test_server_routes_take_only_client_tokens_that_carry_the_routes_scope(stack, clients):
    api = Api(stack.base_url)
    user = await api.user()
    r = await api.http.get(f"/api/server/users/{user.user_id}")
    assert r.status_code == 401
    r = await api.get(f"/api/server/users/{user.user_id}", "not.a.token")
    assert r.status_code == 401
    r = await api.get(f"/api/server/users/{user.user_id}", user.access_token)  # a user's token: never
    assert refused_for_scope(r, "users:read"), (r.status_code, r.headers, r.text)
    narrow = await client_token(api, clients["narrow"])
    r = await api.get(f"/api/server/users/{user.user_id}", narrow)
    assert r.status_code == 200 and r.json()["username"] == user.username and r.json()["disabled"] is False
    r = await api.http.post(f"/api/server/users/{user.user_id}/disable", headers=bearer(narrow))
    assert refused_for_scope(r, "users:admin")
    r = await api.get(f"/api/server/users/{user.user_id}/presence", narrow)
    assert refused_for_scope(r, "presence:read")
    bot = await client_token(api, clients["bot"])
    r = await api.post("/api/server/groups", bot, {"owner_id": user.user_id, "name": "x"})
    assert refused_for_scope(r, "conversations:admin")
    # A client cannot get a token for more than it was given.
    r = await api.http.post("/oauth2/token", data={"grant_type": "client_credentials", "scope": "users:admin"},
                            auth=(clients["narrow"]["client_id"], clients["narrow"]["client_secret"]))
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    # Odd input: precise 4xx, never 5xx.
    admin = await client_token(api, clients["admin"])
    assert (await api.get("/api/server/users/999999999", admin)).status_code == 404
    assert (await api.get("/api/server/users/0", admin)).status_code == 422
    assert (await api.get("/api/server/users", admin, username="nobody-" + uuid.uuid4().hex[:6])).status_code == 404
    assert (await api.post("/api/server/users", admin, {"username": "a b", "password": PASSWORD})).status_code == 422
    await api.close()


async def test_a_bots_message_arrives_live_and_in_history_from_the_bot_and_a_resend_is_the_same_message(
        stack, clients):
    api = Api(stack.base_url)
    user = await api.user()
    bot_id = int(clients["bot"]["bot_user_id"])
    token = await client_token(api, clients["bot"])
    sock = await Socket.open(user.socket_url, user.access_token)
    conv = direct(bot_id, user.user_id)
    key = uuid.uuid4().hex
    r = await api.post(f"/api/server/conversations/{conv}/messages", token, {"idempotency_key": key, "body": "hi"})
    assert r.status_code == 200, r.text
    sent = r.json()
    assert sent["sender_id"] == bot_id and sent["seq"] == 1 and sent["conv"] == conv
    frames = await sock.wait(lambda fs: any(f["type"] == "msg" and f["msg_id"] == sent["msg_id"] for f in fs))
    live = next(f for f in frames if f["type"] == "msg")
    assert (live["from"], live["body"], live["seq"]) == (bot_id, "hi", 1)
    again = await api.post(f"/api/server/conversations/{conv}/messages", token, {"idempotency_key": key, "body": "hi"})
    assert again.status_code == 200 and again.json() == sent  # the same message, nothing stored twice
    history = await api.history(user.access_token, conv)
    assert [(m["from"], m["body"], m["msg_id"]) for m in history] == [(bot_id, "hi", sent["msg_id"])]
    # The user answers the bot like anyone (a conversation like any other).
    assert (await sock.send_text(conv, "thanks"))["type"] == "ack"
    # Refusals: another pair's conversation, a group the bot is not in, bad ids and keys.
    other = await api.user()
    for target, status in [(direct(user.user_id, other.user_id), 403), ("g:999999999", 404), ("x:1", 400),
                           (f"d:{bot_id}:{bot_id}", 400)]:
        r = await api.post(f"/api/server/conversations/{target}/messages", token,
                           {"idempotency_key": uuid.uuid4().hex, "body": "no"})
        assert r.status_code == status, (target, r.status_code, r.text)
    for body in ({"idempotency_key": "has space", "body": "x"}, {"idempotency_key": "k", "body": ""},
                 {"idempotency_key": "k", "body": "x", "sender": 1}):
        r = await api.post(f"/api/server/conversations/{conv}/messages", token, body)
        assert r.status_code == 422, body
    # The bot's account has no password to log in with, and none can be set.
    admin = await client_token(api, clients["admin"])
    bot_user = (await api.get(f"/api/server/users/{bot_id}", admin)).json()
    assert bot_user["bot"] is True
    r = await api.http.post("/oauth2/token", data={"grant_type": "password", "client_id": PUBLIC_CLIENT,
                                                   "username": bot_user["username"], "password": "!"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await api.http.put(f"/api/server/users/{bot_id}/password", json={"password": PASSWORD}, headers=bearer(admin))
    assert r.status_code == 403
    await sock.close()
    await api.close()


async def test_a_disabled_user_is_cut_off_at_once_and_refused_every_grant_until_enabled(stack, clients):
    api = Api(stack.base_url)
    user = await api.user()
    sock = await Socket.open(user.socket_url, user.access_token)
    admin = await client_token(api, clients["admin"])
    r = await api.http.post(f"/api/server/users/{user.user_id}/disable", headers=bearer(admin))
    assert r.status_code == 200, r.text
    assert r.json()["user"]["disabled"] is True and r.json()["logins_ended"] == 1
    assert await closed(sock, 3.0) == 4001
    await eventually(lambda: _refused(api, user.access_token), 3, "the disabled user's token is refused")
    r = await api.http.post("/oauth2/token", data={"grant_type": "password", "client_id": PUBLIC_CLIENT,
                                                   "username": user.username, "password": PASSWORD})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await api.http.post("/oauth2/token", data={"grant_type": "refresh_token", "client_id": PUBLIC_CLIENT,
                                                   "refresh_token": user.refresh_token})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert (await api.get(f"/api/server/users/{user.user_id}", admin)).json()["disabled"] is True
    r = await api.http.post(f"/api/server/users/{user.user_id}/enable", headers=bearer(admin))
    assert r.status_code == 200 and r.json()["user"]["disabled"] is False
    again = await api.login(user.username)  # enabled: logs in, and chats
    sock = await Socket.open(again.socket_url, again.access_token)
    assert sock.auth is not None and sock.auth["type"] == "auth_ok", sock.auth
    await sock.close()
    await api.close()


async def test_kick_ends_every_login_and_presence_shows_where_a_user_is(stack, clients):
    api = Api(stack.base_url)
    user = await api.user()
    second = await api.login(user.username)
    admin = await client_token(api, clients["admin"])

    async def presence() -> dict:
        r = await api.get(f"/api/server/users/{user.user_id}/presence", admin)
        assert r.status_code == 200, r.text
        return r.json()

    assert await presence() == {"user_id": user.user_id, "online": False, "nodes": []}
    sock = await Socket.open(user.socket_url, user.access_token)
    found = await eventually(lambda: _online(presence), 10, "the user shows as online")
    assert found["nodes"] == [user.socket_node]
    r = await api.http.post(f"/api/server/users/{user.user_id}/kick", headers=bearer(admin))
    assert r.status_code == 200 and r.json()["logins_ended"] == 2
    assert await closed(sock, 3.0) == 4001
    for login in (user, second):  # every gateway replica follows the revocations within a second
        await eventually(lambda t=login.access_token: _refused(api, t), 3, "the kicked login's token is refused")
    await eventually(lambda: _offline(presence), 10, "the user shows as offline")
    assert (await api.login(user.username)).user_id == user.user_id  # not disabled: may log in again
    await api.close()


async def _refused(api: Api, token: str) -> bool:
    return (await api.get("/api/users/me", token)).status_code == 401


async def _online(presence):
    found = await presence()
    return found if found["online"] else None


async def _offline(presence):
    return not (await presence())["online"]


async def test_a_group_made_on_a_users_behalf_follows_the_group_rules_and_the_bot_may_join(stack, clients):
    api = Api(stack.base_url)
    owner, member, blocker = await api.user(), await api.user(), await api.user()
    admin = await client_token(api, clients["admin"])
    bot_id = int(clients["bot"]["bot_user_id"])
    r = await api.http.put(f"/api/users/me/blocks/{owner.user_id}", headers=bearer(blocker.access_token))
    assert r.status_code == 204
    r = await api.post("/api/server/groups", admin, {"owner_id": owner.user_id, "name": "g",
                                                     "members": [member.user_id, blocker.user_id]})
    assert r.status_code == 403, r.text  # blocks apply on a user's behalf too
    r = await api.post("/api/server/groups", admin, {"owner_id": owner.user_id, "name": "g",
                                                     "members": [member.user_id]})
    assert r.status_code == 201, r.text
    group = r.json()
    assert group["owner_id"] == owner.user_id and sorted(group["members"]) == sorted([owner.user_id, member.user_id])
    r = await api.post(f"/api/server/groups/{group['id']}/members", admin,
                       {"as_user": blocker.user_id, "user_ids": [bot_id]})
    assert r.status_code == 403  # an outsider cannot add people, whoever asks for them
    r = await api.post(f"/api/server/groups/{group['id']}/members", admin,
                       {"as_user": member.user_id, "user_ids": [bot_id]})
    assert r.status_code == 200 and bot_id in r.json()["members"]
    sock = await Socket.open(member.socket_url, member.access_token)
    bot = await client_token(api, clients["bot"])
    r = await api.post(f"/api/server/conversations/{group['conv']}/messages", bot,
                       {"idempotency_key": "welcome", "body": "welcome"})
    assert r.status_code == 200, r.text
    await sock.wait(lambda fs: any(f["type"] == "msg" and f["from"] == bot_id for f in fs))
    r = await api.http.delete(f"/api/server/groups/{group['id']}/members/{member.user_id}",
                              params={"as_user": blocker.user_id}, headers=bearer(admin))
    assert r.status_code == 403  # only the owner removes others
    r = await api.http.delete(f"/api/server/groups/{group['id']}/members/{bot_id}",
                              params={"as_user": owner.user_id}, headers=bearer(admin))
    assert r.status_code == 204
    r = await api.post(f"/api/server/conversations/{group['conv']}/messages", bot,
                       {"idempotency_key": "after", "body": "still here?"})
    assert r.status_code == 403
    await sock.close()
    await api.close()


async def test_a_revoked_clients_tokens_stop_working_within_the_check_interval(stack):
    made = created(cli(stack, "clients", "create", "--bot", unique("rev"), "--scope",
                       "messages:send users:read").stdout)
    api = Api(stack.base_url)
    token = await client_token(api, made)
    assert (await api.get(f"/api/server/users/{made['bot_user_id']}", token)).status_code == 200
    cli(stack, "clients", "revoke", made["client_id"])

    async def refused() -> bool:
        return (await api.get(f"/api/server/users/{made['bot_user_id']}", token)).status_code == 401

    await eventually(refused, stack.settings.server_client_check_s + 5, "the revoked client's token is refused")
    r = await api.http.post("/oauth2/token", data={"grant_type": "client_credentials"},
                            auth=(made["client_id"], made["client_secret"]))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    listing = cli(stack, "clients", "list").stdout
    line = next(line for line in listing.splitlines() if line.startswith(made["client_id"]))
    assert "revoked" in line and made["bot_user_id"] in line and "messages:send" in line
    assert made["client_secret"] not in listing
    assert cli(stack, "clients", "revoke", "no-such-client", check=False).returncode == 1
    await api.close()


def test_clients_get_only_known_scopes(stack):
    done = cli(stack, "clients", "create", "x", "--scope", "users:admin everything", check=False)
    assert done.returncode == 2 and "unknown scopes" in done.stderr


async def test_the_users_commands_act_through_the_server_api(stack, clients):
    env = {"IMRAY_ADMIN_CLIENT_ID": clients["admin"]["client_id"],
           "IMRAY_ADMIN_CLIENT_SECRET": clients["admin"]["client_secret"]}
    api = Api(stack.base_url)
    name = unique("op")
    out = cli(stack, "users", "create", name, env=env).stdout
    generated = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("password:"))
    login = await api.login(name, generated)
    sock = await Socket.open(login.socket_url, login.access_token)
    cli(stack, "users", "disable", name, env=env)
    assert await closed(sock, 3.0) == 4001
    r = await api.http.post("/oauth2/token", data={"grant_type": "password", "client_id": PUBLIC_CLIENT,
                                                   "username": name, "password": generated})
    assert r.status_code == 400
    cli(stack, "users", "enable", f"id:{login.user_id}", env=env)
    cli(stack, "users", "reset-password", name, "--password", PASSWORD, env=env)
    r = await api.http.post("/oauth2/token", data={"grant_type": "password", "client_id": PUBLIC_CLIENT,
                                                   "username": name, "password": generated})
    assert r.status_code == 400  # the old password is gone
    again = await api.login(name, PASSWORD)
    cli(stack, "users", "kick", name, env=env)
    await eventually(lambda: _refused(api, again.access_token), 3, "the kicked login's token is refused")
    # Without credentials, or with a client that lacks the scope: refused, nothing done.
    assert cli(stack, "users", "kick", name, check=False).returncode == 1
    narrow = {"IMRAY_ADMIN_CLIENT_ID": clients["narrow"]["client_id"],
              "IMRAY_ADMIN_CLIENT_SECRET": clients["narrow"]["client_secret"]}
    done = cli(stack, "users", "disable", name, env=narrow, check=False)
    assert done.returncode == 1 and "403" in done.stderr
    assert (await api.login(name, PASSWORD)).user_id == login.user_id
    await api.close()
