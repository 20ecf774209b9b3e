"""A user's own account (issue 18, point 2): finding users by username prefix, editing the profile,
changing the password, logging out everywhere and deleting the account. Black-box: HTTP and WebSocket.
"""

from __future__ import annotations

import asyncio
import uuid

from support import PASSWORD, PUBLIC_CLIENT, Api, Login, Socket, bearer, direct, eventually
from test_files import png

NEW_PASSWORD = "a brand new passphrase"


async def closed_with(sock: Socket, timeout: float = 10) -> int:  # noqa: ASYNC109
    """The close code of a socket the server closes (within `timeout` seconds)."""
    await asyncio.wait_for(sock.ws.wait_closed(), timeout)
    assert sock.reader is not None
    await asyncio.gather(sock.reader, return_exceptions=True)
    assert sock.ws.close_code is not None
    return sock.ws.close_code


async def refused(api: Api, token: str) -> bool:
    return (await api.get("/api/users/me", token)).status_code == 401


async def grant(api: Api, username: str, password: str) -> dict:
    r = await api.http.post("/oauth2/token", data={"grant_type": "password", "username": username,
                                                   "password": password, "client_id": PUBLIC_CLIENT})
    return {"status": r.status_code, **r.json()}


async def refresh(api: Api, login: Login) -> int:
    r = await api.http.post("/oauth2/token", data={"grant_type": "refresh_token", "client_id": PUBLIC_CLIENT,
                                                   "refresh_token": login.refresh_token})
    return r.status_code


async def search(api: Api, token: str, **params: object):  # type: ignore[no-untyped-def]
    return await api.get("/api/users", token, **params)


async def delete_account(api: Api, token: str, password: str):  # type: ignore[no-untyped-def]
    return await api.http.request("DELETE", "/api/users/me", json={"password": password}, headers=bearer(token))


async def test_users_are_found_by_username_prefix_whatever_its_case_page_by_page_and_never_all_at_once(stack):
    api = Api(stack.base_url)
    stem = f"s{uuid.uuid4().hex[:8]}"
    names = [f"{stem}_one", f"{stem.upper()}_two", f"{stem}x_three", f"{stem}_four"]
    ids = [(await api.register(name))["id"] for name in names]
    # MariaDB with a case-insensitive collation would call this name taken (409); both are fine,
    # and the search then finds whichever accounts exist.
    twin = await api.http.post("/api/users", json={"username": f"{stem}_ONE", "password": PASSWORD})
    assert twin.status_code in (201, 409), twin.text
    if twin.status_code == 201:
        ids.append(twin.json()["id"])
        names.append(f"{stem}_ONE")
    me = await api.login(names[0])
    r = await search(api, me.access_token, prefix=stem.upper(), limit=2)
    assert r.status_code == 200, r.text
    first = r.json()
    assert [u["id"] for u in first["users"]] == ids[:2] and first["next_after"] == ids[1]
    assert set(first["users"][0]) == {"id", "username", "nickname", "avatar_url"}
    rest = (await search(api, me.access_token, prefix=stem, limit=2, after=first["next_after"])).json()
    last = (await search(api, me.access_token, prefix=stem, limit=2, after=rest["next_after"])).json()
    assert [u["id"] for u in rest["users"] + last["users"]] == ids[2:] and last["next_after"] is None
    # `_` is a character, not LIKE's "any one character": stem + "x_three" does not start with stem + "_".
    under = (await search(api, me.access_token, prefix=f"{stem}_", limit=50)).json()["users"]
    assert [u["id"] for u in under] == [i for i, n in zip(ids, names, strict=True) if "x_three" not in n]
    # No way to list everyone: too short, empty or missing prefixes, wildcards, bad paging.
    for params in ({"prefix": stem[:2]}, {"prefix": ""}, {}, {"prefix": "x" * 33}, {"prefix": "ab\x00"},
                   {"prefix": stem, "limit": 51}, {"prefix": stem, "limit": 0}, {"prefix": stem, "after": -1},
                   {"prefix": stem, "after": 2**63}):
        assert (await search(api, me.access_token, **params)).status_code == 422, params
    for hostile in ("%%%", "___", "!!!", "\\\\\\", "%_%", "\u00e9t\u00e9", "\U0001f600\U0001f600\U0001f600"):
        r = await search(api, me.access_token, prefix=hostile, limit=50)
        assert r.status_code == 200 and r.json() == {"users": [], "next_after": None}, (hostile, r.text)
    assert (await api.http.get("/api/users", params={"prefix": stem})).status_code == 401
    await api.close()


async def test_the_search_has_a_budget_of_its_own_per_user(stack):
    api = Api(stack.base_url)
    a, b = await api.user(), await api.user()
    budget = stack.settings.user_searches_per_minute
    statuses = []
    # Counted per gateway replica without Redis, in one-minute windows: a bound that covers both.
    for _ in range(4 * budget + 8):
        statuses.append((await search(api, a.access_token, prefix=a.username[:5])).status_code)
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200} and len(statuses) > budget, statuses
    assert (await api.get("/api/users/me", a.access_token)).status_code == 200  # the general budget is not spent
    assert (await search(api, b.access_token, prefix=b.username[:5])).status_code == 200  # nor anyone else's
    await api.close()


async def test_a_user_edits_their_nickname_and_odd_ones_are_refused(stack):
    api = Api(stack.base_url)
    a, b = await api.user(), await api.user()

    async def edit(body: object):  # type: ignore[no-untyped-def]
        return await api.http.patch("/api/users/me", json=body, headers=bearer(a.access_token))

    r = await edit({"nickname": "  Ann \U0001f469\u200d\U0001f467 \u0639\u0631\u0628\u064a  "})
    assert r.status_code == 200, r.text
    nickname = "Ann \U0001f469\u200d\U0001f467 \u0639\u0631\u0628\u064a"
    assert r.json() == {"id": a.user_id, "username": a.username, "nickname": nickname, "avatar_url": None}
    assert (await api.get("/api/users/me", a.access_token)).json()["nickname"] == nickname
    assert (await api.get(f"/api/users/{a.user_id}", b.access_token)).json()["nickname"] == nickname
    for bad in ({"nickname": "n" * 65}, {"nickname": "a\x00b"}, {"nickname": "a\nb"}, {"nickname": "\u202eevil"},
                {"nickname": None}, {"nickname": 5}, {}, {"nickname": "x", "username": "other"}, ["x"]):
        assert (await edit(bad)).status_code == 422, bad
    assert (await api.get("/api/users/me", a.access_token)).json()["nickname"] == nickname  # nothing changed
    assert (await edit({"nickname": "   "})).json()["nickname"] == a.username  # blank: the username, as at sign-up
    r = await api.http.patch("/api/users/me", json={"nickname": "x"})
    assert r.status_code == 401
    await api.close()


async def test_changing_the_password_needs_the_current_one_ends_every_other_login_and_keeps_this_one(stack):
    api = Api(stack.base_url)
    here = await api.user()
    other = await api.login(here.username)
    sock = await Socket.open(other.socket_url, other.access_token)
    kept = await Socket.open(here.socket_url, here.access_token)
    assert sock.auth and sock.auth["type"] == "auth_ok"

    async def change(current: str, new: str):  # type: ignore[no-untyped-def]
        return await api.http.put("/api/users/me/password", json={"current_password": current, "new_password": new},
                                  headers=bearer(here.access_token))

    assert (await change("not the password", NEW_PASSWORD)).status_code == 403
    assert (await change(PASSWORD, "short")).status_code == 422
    assert (await change(PASSWORD, "n" * 129)).status_code == 422
    r = await change(PASSWORD, NEW_PASSWORD)
    assert r.status_code == 200 and r.json() == {"logins_ended": 1}, r.text
    assert await closed_with(sock) == 4001
    assert sock.of_type("error")[-1]["code"] == "unauthorized"
    await eventually(lambda: refused(api, other.access_token), 10, "the other login's token refused")
    assert await refresh(api, other) == 400
    # This login goes on: its token, its socket, its refresh token.
    assert (await api.get("/api/users/me", here.access_token)).status_code == 200
    assert (await kept.request({"type": "ping"}, "pong"))["type"] == "pong"
    assert await refresh(api, here) == 200
    assert (await grant(api, here.username, PASSWORD))["status"] == 400
    assert (await grant(api, here.username, NEW_PASSWORD))["status"] == 200
    await kept.close()
    await api.close()


async def test_wrong_current_passwords_count_as_failed_logins_and_get_throttled(stack):
    api = Api(stack.base_url)
    a = await api.user()
    limit = stack.settings.login_failures_per_account
    body = {"current_password": "guess guess guess", "new_password": NEW_PASSWORD}
    for _ in range(limit):
        r = await api.http.put("/api/users/me/password", json=body, headers=bearer(a.access_token))
        assert r.status_code == 403, r.text
    body["current_password"] = PASSWORD  # right, but the account is throttled: it waits too
    r = await api.http.put("/api/users/me/password", json=body, headers=bearer(a.access_token))
    assert r.status_code == 429 and "too many failed logins" in r.json()["detail"], r.text
    assert (await delete_account(api, a.access_token, PASSWORD)).status_code == 429
    assert (await grant(api, a.username, PASSWORD))["error"] == "slow_down"  # the same count as logins
    assert (await api.get("/api/users/me", a.access_token)).status_code == 200  # still logged in
    await api.close()


async def test_logging_out_everywhere_ends_every_login_and_closes_their_sockets(stack):
    api = Api(stack.base_url)
    first = await api.user()
    second = await api.login(first.username)
    socks = [await Socket.open(x.socket_url, x.access_token) for x in (first, second)]
    r = await api.http.delete("/api/users/me/logins", headers=bearer(first.access_token))
    assert r.status_code == 200 and r.json() == {"logins_ended": 2}, r.text
    assert [await closed_with(s) for s in socks] == [4001, 4001]
    for login in (first, second):
        await eventually(lambda login=login: refused(api, login.access_token), 10, "a login's token refused")
        assert await refresh(api, login) == 400
    again = await api.login(first.username)  # logged out, not locked out
    r = await api.http.delete("/api/users/me/logins", headers=bearer(again.access_token))
    assert r.json() == {"logins_ended": 1}
    await api.close()


async def test_a_deleted_account_frees_its_name_ends_its_logins_and_its_messages_stay_from_a_deleted_user(stack):
    api = Api(stack.base_url)
    ann, bob, cy = await api.user(), await api.user(), await api.user()
    r = await api.http.put("/api/users/me/avatar", content=png(seed=5),
                           headers={**bearer(ann.access_token), "Content-Type": "image/png"})
    avatar = r.json()["avatar_url"]
    members = [bob.user_id, cy.user_id]
    group = (await api.post("/api/groups", ann.access_token, {"name": "g", "members": members})).json()
    r = await api.http.put(f"/api/users/me/blocks/{ann.user_id}", headers=bearer(cy.access_token))
    assert r.status_code == 204
    sa = await Socket.open(ann.socket_url, ann.access_token)
    conv = direct(ann.user_id, bob.user_id)
    for target, text in ((conv, "hello bob"), (group["conv"], "hello group")):
        assert (await sa.send_text(target, text))["type"] == "ack"
    # The password is needed; a wrong one changes nothing.
    assert (await delete_account(api, ann.access_token, "not the password")).status_code == 403
    assert (await api.get("/api/users/me", ann.access_token)).json()["username"] == ann.username
    r = await delete_account(api, ann.access_token, PASSWORD)
    assert r.status_code == 204, r.text
    assert await closed_with(sa) == 4001
    await eventually(lambda: refused(api, ann.access_token), 10, "the deleted account's token refused")
    assert await refresh(api, ann) == 400
    assert (await grant(api, ann.username, PASSWORD))["status"] == 400
    # The messages stay, from the deleted user's id, in both conversations' history.
    for target, text in ((conv, "hello bob"), (group["conv"], "hello group")):
        history = await api.history(bob.access_token, target)  # (the group's events aside)
        assert [(m["from"], m["body"]) for m in history if m["kind"] != "event"] == [(ann.user_id, text)]
    gone = (await api.get(f"/api/users/{ann.user_id}", bob.access_token)).json()
    assert gone == {"id": ann.user_id, "username": f"deleted:{ann.user_id}", "nickname": "Deleted user",
                    "avatar_url": None}
    assert (await api.get(avatar.split("?")[0], bob.access_token)).status_code == 404
    # Out of the group (its ownership passed on), out of blocks; no new direct messages to it.
    after = (await api.get(f"/api/groups/{group['id']}", bob.access_token)).json()
    assert after["members"] == [bob.user_id, cy.user_id] and after["owner_id"] == bob.user_id
    assert (await api.get("/api/users/me/blocks", cy.access_token)).json() == {"user_ids": []}
    sb = await Socket.open(bob.socket_url, bob.access_token)
    assert (await sb.send_text(conv, "are you there?"))["code"] == "not_found"
    assert (await sb.send_text(group["conv"], "still here"))["type"] == "ack"
    # Nobody finds it; its name is free for a new account (a new id).
    found = (await search(api, bob.access_token, prefix=ann.username, limit=50)).json()["users"]
    assert found == []
    assert (await api.register(ann.username))["id"] != ann.user_id
    assert (await grant(api, ann.username, PASSWORD))["user_id"] != ann.user_id
    await sb.close()
    await api.close()
