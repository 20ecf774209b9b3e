"""Presence of contacts (issue 18): contacts see each other go online and offline (live frames, across
socket nodes), query it with last-seen; strangers never learn it; a privacy setting hides it.

Black-box: HTTP and WebSocket only.
"""

from __future__ import annotations

from support import Api, Login, Socket, eventually, one_per_node


def presence_of(user: int):
    return lambda frame: frame.get("type") == "presence" and frame["user_id"] == user


async def befriend(api: Api, a: Login, b: Login) -> None:
    r = await api.post("/api/contacts/requests", a.access_token, {"user_id": b.user_id})
    assert r.status_code == 200, r.text
    r = await api.post(f"/api/contacts/requests/{a.user_id}/accept", b.access_token, None)
    assert r.status_code == 200, r.text


async def query(api: Api, login: Login) -> dict[int, dict]:
    r = await api.get("/api/contacts/presence", login.access_token)
    assert r.status_code == 200, r.text
    return {p["user_id"]: p for p in r.json()["contacts"]}


async def test_contacts_see_each_other_go_online_and_offline_across_nodes_with_last_seen(stack) -> None:
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    await befriend(api, a, b)
    assert (await query(api, b))[a.user_id] == {"user_id": a.user_id, "online": False, "last_seen": None}
    sb = await Socket.open(b.socket_url, b.access_token)
    try:
        sa = await Socket.open(a.socket_url, a.access_token)
        await sb.wait(lambda fs: any(presence_of(a.user_id)(f) and f["online"] for f in fs))
        assert (await query(api, b))[a.user_id] == {"user_id": a.user_id, "online": True, "last_seen": None}
        sa2 = await Socket.open(a.socket_url, a.access_token)  # a second session: a was online already
        await sa.close()  # one of two closed: a is still online
        await sa2.close()
        frames = await sb.wait(lambda fs: any(presence_of(a.user_id)(f) and not f["online"] for f in fs))
        mine = [f for f in frames if presence_of(a.user_id)(f)]
        assert [f["online"] for f in mine] == [True, False]  # one online, one offline: no flicker
        assert mine[1]["last_seen"] > 0
        seen = await query(api, b)
        assert seen[a.user_id] == {"user_id": a.user_id, "online": False, "last_seen": mine[1]["last_seen"]}
    finally:
        await sb.close()
        await api.close()


async def test_strangers_never_learn_presence_and_the_privacy_setting_hides_it(stack) -> None:
    api = Api(stack.base_url)
    a, b, stranger = await api.user(), await api.user(), await api.user()
    await befriend(api, a, b)
    sb = await Socket.open(b.socket_url, b.access_token)
    sc = await Socket.open(stranger.socket_url, stranger.access_token)
    try:
        sa = await Socket.open(a.socket_url, a.access_token)
        await sb.wait(lambda fs: any(presence_of(a.user_id)(f) for f in fs))
        assert await query(api, stranger) == {}
        assert (await api.get("/api/users/me/privacy", a.access_token)).json() == {"show_presence": True}

        r = await api.http.put("/api/users/me/privacy", json={"show_presence": False},
                               headers={"Authorization": f"Bearer {a.access_token}"})
        assert r.status_code == 200 and r.json() == {"show_presence": False}, r.text
        hidden = await sb.wait(lambda fs: sum(1 for f in fs if presence_of(a.user_id)(f)) == 2)
        assert [f for f in hidden if presence_of(a.user_id)(f)][-1] == {
            "type": "presence", "user_id": a.user_id, "online": False}  # no last_seen either
        assert (await query(api, b))[a.user_id] == {"user_id": a.user_id, "online": False, "last_seen": None}
        await sa.close()  # hidden: nothing said when a leaves or comes back
        sa = await Socket.open(a.socket_url, a.access_token)
        assert (await query(api, b))[a.user_id] == {"user_id": a.user_id, "online": False, "last_seen": None}

        r = await api.http.put("/api/users/me/privacy", json={"show_presence": True},
                               headers={"Authorization": f"Bearer {a.access_token}"})
        assert r.status_code == 200
        shown = await sb.wait(lambda fs: sum(1 for f in fs if presence_of(a.user_id)(f)) >= 3)
        assert [f["online"] for f in shown if presence_of(a.user_id)(f)] == [True, False, True]
        await eventually(lambda: _online(api, b, a.user_id), 10, "a shown online again")
        for bad in ({"show_presence": "no"}, {"show_presence": None}, {}, {"show_presence": True, "x": 1}):
            r = await api.http.put("/api/users/me/privacy", json=bad,
                                   headers={"Authorization": f"Bearer {a.access_token}"})
            assert r.status_code == 422, bad
        await sa.close()
        assert not any(f.get("type") == "presence" for f in sc.frames)  # the stranger heard nothing
    finally:
        await sb.close()
        await sc.close()
        await api.close()


async def _online(api: Api, viewer: Login, user: int) -> bool:
    return bool((await query(api, viewer))[user]["online"])
