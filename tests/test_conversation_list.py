"""The conversation list: pinned first, muted shown, paged by last activity; settings only for members."""

from __future__ import annotations

from support import Api, Socket, bearer, direct


async def _settings(api: Api, token: str, conv: str, body: object) -> tuple[int, dict]:
    r = await api.http.put(f"/api/conversations/{conv}/settings", json=body, headers=bearer(token))
    return r.status_code, r.json()


async def _all_pages(api: Api, token: str, limit: int) -> list[dict]:
    items: list[dict] = []
    after: str | None = None
    for _ in range(50):  # bounded: far more pages than the test makes
        params = {"limit": limit} | ({"after": after} if after else {})
        page = (await api.get("/api/conversations", token, **params)).json()
        items += page
        if len(page) < limit:
            return items
        after = page[-1]["cursor"]
    raise AssertionError("the pages never ended")


async def test_pinned_conversations_come_first_and_pages_by_activity_hold_every_conversation_once(stack):
    api = Api(stack.base_url)
    me = await api.user()
    others = [await api.user() for _ in range(5)]
    sock = await Socket.open(me.socket_url, me.access_token)
    convs = [direct(me.user_id, o.user_id) for o in others]
    for conv in convs:  # oldest activity first: convs[-1] is the newest
        assert (await sock.send_text(conv, "hi"))["type"] == "ack"
    group = (await api.post("/api/groups", others[0].access_token, {"name": "g", "members": [me.user_id]})).json()

    listed = (await api.get("/api/conversations", me.access_token)).json()
    assert [c["conv"] for c in listed if c["conv"].startswith("d:")] == convs[::-1]
    assert all(not c["pinned"] and not c["muted"] for c in listed)
    assert {c["conv"] for c in listed} == {*convs, group["conv"]}  # the group has only its "created" event

    # Pin the oldest, then the group: the latest pinned is first; mute one.
    assert await _settings(api, me.access_token, convs[0], {"pinned": True}) == (
        200, {"conv": convs[0], "pinned": True, "muted": False})
    assert (await _settings(api, me.access_token, group["conv"], {"pinned": True}))[0] == 200
    assert await _settings(api, me.access_token, convs[2], {"muted": True}) == (
        200, {"conv": convs[2], "pinned": False, "muted": True})
    order = [group["conv"], convs[0], convs[4], convs[3], convs[2], convs[1]]
    listed = (await api.get("/api/conversations", me.access_token)).json()
    assert [c["conv"] for c in listed] == order
    assert [c["conv"] for c in listed if c["pinned"]] == [group["conv"], convs[0]]
    assert [c["conv"] for c in listed if c["muted"]] == [convs[2]]
    # Pinning again keeps its place; the other side sees none of it.
    assert (await _settings(api, me.access_token, convs[0], {"pinned": True}))[0] == 200
    assert [c["conv"] for c in (await api.get("/api/conversations", me.access_token)).json()] == order
    theirs = (await api.get("/api/conversations", others[0].access_token)).json()
    assert not any(c["pinned"] or c["muted"] for c in theirs)

    # Every page size walks the same list, each conversation once.
    for limit in (1, 2, 4):
        assert [c["conv"] for c in await _all_pages(api, me.access_token, limit)] == order, limit

    # New activity moves an unpinned conversation up, not above the pinned ones; unpin puts it back.
    assert (await sock.send_text(convs[1], "again"))["type"] == "ack"
    assert (await _settings(api, me.access_token, convs[0], {"pinned": False}))[0] == 200
    listed = (await api.get("/api/conversations", me.access_token)).json()
    assert [c["conv"] for c in listed] == [group["conv"], convs[1], convs[4], convs[3], convs[2], convs[0]]
    assert listed[1]["unread"] == 0 and listed[1]["last_message"]["body"] == "again"
    await sock.close()
    await api.close()


async def test_nobody_sets_a_conversation_they_are_not_part_of_and_bad_settings_are_refused(stack):
    api = Api(stack.base_url)
    a, b, stranger = await api.user(), await api.user(), await api.user()
    conv = direct(a.user_id, b.user_id)
    group = (await api.post("/api/groups", a.access_token, {"name": "g", "members": [b.user_id]})).json()
    assert (await _settings(api, stranger.access_token, conv, {"pinned": True}))[0] == 403
    assert (await _settings(api, stranger.access_token, group["conv"], {"muted": True}))[0] == 403
    assert (await _settings(api, a.access_token, "g:999999999", {"muted": True}))[0] == 404
    assert (await _settings(api, a.access_token, direct(a.user_id, 10**17), {"muted": True}))[0] == 404
    for bad_conv in ("d:2:1", "x:1", "g:01", "g:1%00"):
        assert (await _settings(api, a.access_token, bad_conv, {"muted": True}))[0] in (400, 404, 422), bad_conv
    for body in ({"pinned": "yes"}, {"pinned": 1}, {"muted": None, "colour": "red"}, [], "x"):
        assert (await _settings(api, a.access_token, conv, body))[0] == 422, body
    for cursor in ("x", "1.2", "1.2.d:2:1", "-1.0.d:1:2", "1.2.g:1" + "0" * 80, "1.2.d:1:2 "):
        r = await api.get("/api/conversations", a.access_token, after=cursor)
        assert r.status_code == 422, (cursor, r.text)
    assert (await api.get("/api/conversations", a.access_token, limit=0)).status_code == 422
    assert (await api.get("/api/conversations", a.access_token, limit=201)).status_code == 422
    # A member who leaves loses the setting with the conversation.
    assert (await _settings(api, b.access_token, group["conv"], {"pinned": True}))[0] == 200
    r = await api.http.delete(f"/api/groups/{group['id']}/members/{b.user_id}", headers=bearer(b.access_token))
    assert r.status_code == 204
    assert all(c["conv"] != group["conv"] for c in (await api.get("/api/conversations", b.access_token)).json())
    assert (await _settings(api, b.access_token, group["conv"], {"pinned": False}))[0] == 403
    # Leaving unpinned it: back in the group, it is listed unpinned.
    assert (await api.post(f"/api/groups/{group['id']}/members", a.access_token, {"user_ids": [b.user_id]})
            ).status_code == 200
    [back] = [c for c in (await api.get("/api/conversations", b.access_token)).json() if c["conv"] == group["conv"]]
    assert back["pinned"] is False
    await api.close()


async def test_a_user_pins_at_most_the_configured_number_of_conversations(stack):
    api = Api(stack.base_url)
    me = await api.user()
    limit = 10  # Settings.max_pinned_conversations
    others = [await api.register() for _ in range(limit + 1)]
    for other in others[:limit]:
        assert (await _settings(api, me.access_token, direct(me.user_id, other["id"]), {"pinned": True}))[0] == 200
    status, body = await _settings(api, me.access_token, direct(me.user_id, others[-1]["id"]), {"pinned": True})
    assert status == 409 and "at most 10" in body["detail"]
    assert (await _settings(api, me.access_token, direct(me.user_id, others[0]["id"]), {"pinned": False}))[0] == 200
    assert (await _settings(api, me.access_token, direct(me.user_id, others[-1]["id"]), {"pinned": True}))[0] == 200
    listed = (await api.get("/api/conversations", me.access_token)).json()
    assert sum(c["pinned"] for c in listed) == limit and len(listed) == limit + 1
    await api.close()
