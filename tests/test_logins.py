"""A user's logins (issue 18, point 6): listed with their device and last use, ended one by one.
Black-box: HTTP and WebSocket."""

from __future__ import annotations

import time

from support import PASSWORD, PUBLIC_CLIENT, Api, Login, Socket, bearer, eventually
from test_accounts import closed_with, refresh, refused


async def login_as(api: Api, username: str, device: str | None = None, agent: str = "imray-tests") -> Login:
    form = {"grant_type": "password", "username": username, "password": PASSWORD, "client_id": PUBLIC_CLIENT}
    if device is not None:
        form["device_name"] = device
    r = await api.http.post("/oauth2/token", data=form, headers={"User-Agent": agent})
    assert r.status_code == 200, r.text
    body = r.json()
    return Login(body["user_id"], username, body["access_token"], body["refresh_token"], body["socket_url"],
                 body["socket_node"], body)


async def logins(api: Api, token: str) -> list[dict]:
    r = await api.get("/api/users/me/logins", token)
    assert r.status_code == 200, r.text
    return r.json()["logins"]


async def test_a_user_lists_their_logins_by_device_with_the_current_one_marked_and_when_each_was_used(stack):
    api = Api(stack.base_url)
    username = (await api.register())["username"]
    before = int(time.time() * 1000)
    phone = await login_as(api, username, device="  Ann's phone \U0001f4f1 ")
    laptop = await login_as(api, username, agent="Mozilla/5.0 (X11; Linux) Firefox/140.0")
    listed = await logins(api, phone.access_token)
    assert [(x["device_name"], x["current"], x["client_id"]) for x in listed] == [  # newest first
        ("Mozilla/5.0 (X11; Linux) Firefox/140.0", False, PUBLIC_CLIENT),
        ("Ann's phone \U0001f4f1", True, PUBLIC_CLIENT)]
    assert all(before - 5000 <= x["created_at"] <= x["last_seen_at"] for x in listed)
    assert set(listed[0]) == {"id", "device_name", "client_id", "created_at", "last_seen_at", "current"}
    assert [x["current"] for x in await logins(api, laptop.access_token)] == [True, False]
    # A refresh continues the login (same id, still listed once) and counts as its use.
    r = await api.http.post("/oauth2/token", data={"grant_type": "refresh_token", "client_id": PUBLIC_CLIENT,
                                                   "refresh_token": laptop.refresh_token})
    assert r.status_code == 200
    renewed = await logins(api, r.json()["access_token"])
    assert [x["id"] for x in renewed] == [x["id"] for x in listed] and renewed[0]["current"]
    assert renewed[0]["last_seen_at"] >= listed[0]["last_seen_at"]
    # A socket open on a login counts as its use too (stamped within seconds, then every minute).
    opened = int(time.time() * 1000)
    sock = await Socket.open(phone.socket_url, phone.access_token)

    async def phone_seen() -> bool:
        mine = [x for x in await logins(api, phone.access_token) if x["current"]]
        return mine[0]["last_seen_at"] >= opened

    await eventually(phone_seen, 15, "the phone's socket stamped its login as seen")
    await sock.close()
    # Nobody else's logins show; a device name too long or with control characters is refused.
    other = await api.user()
    assert [x["current"] for x in await logins(api, other.access_token)] == [True]
    for bad in ("d" * 65, "a\x00b", "tab\there", "\u202eevil"):
        form = {"grant_type": "password", "username": username, "password": PASSWORD, "client_id": PUBLIC_CLIENT,
                "device_name": bad}
        r = await api.http.post("/oauth2/token", data=form)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (bad, r.text)
    assert len(await logins(api, phone.access_token)) == 2  # the refused ones made no login
    assert (await api.http.get("/api/users/me/logins")).status_code == 401
    await api.close()


async def test_ending_one_login_closes_its_sockets_and_leaves_the_others(stack):
    api = Api(stack.base_url)
    username = (await api.register())["username"]
    keep = await login_as(api, username, device="desk")
    lost = await login_as(api, username, device="lost phone")
    kept_sock = await Socket.open(keep.socket_url, keep.access_token)
    lost_sock = await Socket.open(lost.socket_url, lost.access_token)
    listed = {x["device_name"]: x["id"] for x in await logins(api, keep.access_token)}
    stranger = await api.user()
    strangers_login = (await logins(api, stranger.access_token))[0]["id"]

    async def end(token: str, login_id: object) -> int:
        return (await api.http.delete(f"/api/users/me/logins/{login_id}", headers=bearer(token))).status_code

    assert await end(keep.access_token, strangers_login) == 404  # not yours: nothing ended
    assert (await api.get("/api/users/me", stranger.access_token)).status_code == 200
    for bad in (0, -1, 2**63, "abc"):
        assert await end(keep.access_token, bad) == 422, bad
    assert await end(keep.access_token, 2**63 - 1) == 404
    assert await end(keep.access_token, listed["lost phone"]) == 204
    assert await closed_with(lost_sock) == 4001
    await eventually(lambda: refused(api, lost.access_token), 10, "the ended login's token refused")
    assert await refresh(api, lost) == 400
    assert await end(keep.access_token, listed["lost phone"]) == 404  # ended already
    assert [x["device_name"] for x in await logins(api, keep.access_token)] == ["desk"]
    assert (await kept_sock.request({"type": "ping"}, "pong"))["type"] == "pong"
    # Ending the login one is using is allowed: it is logged out.
    assert await end(keep.access_token, listed["desk"]) == 204
    assert await closed_with(kept_sock) == 4001
    await eventually(lambda: refused(api, keep.access_token), 10, "the current login's token refused")
    await api.close()
