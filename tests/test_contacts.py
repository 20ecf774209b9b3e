"""Contacts (issue 18): friend requests sent, accepted, declined, cancelled; the contact list; removal;
live `contact` frames to both sides' sessions on any node; blocks, repeats, strangers and floods.

Black-box: HTTP and WebSocket only.
"""

from __future__ import annotations

from support import Api, Socket, bearer, one_per_node

ODD = "héllo 👋🏽 ‮ZWJ👨‍👩‍👧"


def event(name: str, from_id: int, to_id: int):
    return lambda frames: any(f.get("type") == "contact" and f["event"] == name and f["from_id"] == from_id
                              and f["to_id"] == to_id for f in frames)


async def ask(api: Api, token: str, other: int, message: str | None = None) -> tuple[int, dict]:
    body: dict = {"user_id": other}
    if message is not None:
        body["message"] = message
    r = await api.post("/api/contacts/requests", token, body)
    return r.status_code, r.json()


async def contact_ids(api: Api, token: str) -> list[int]:
    r = await api.get("/api/contacts", token)
    assert r.status_code == 200, r.text
    return [c["user_id"] for c in r.json()["contacts"]]


async def test_a_request_and_its_acceptance_reach_both_sides_live_across_nodes(stack) -> None:
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    sa, sa2, sb = [await Socket.open(u.socket_url, u.access_token) for u in (a, a, b)]
    try:
        assert await ask(api, a.access_token, b.user_id, ODD) == (200, {"user_id": b.user_id, "state": "pending"})
        for sock in (sa, sa2, sb):  # both sides, every session (the sender's too: it asked over HTTP)
            frames = await sock.wait(event("requested", a.user_id, b.user_id))
            assert [f["message"] for f in frames if f.get("event") == "requested"] == [ODD]
        received = (await api.get("/api/contacts/requests", b.access_token)).json()
        assert [(r["from_id"], r["message"], r["username"]) for r in received["received"]] == [
            (a.user_id, ODD, a.username)] and received["sent"] == []
        sent = (await api.get("/api/contacts/requests", a.access_token)).json()["sent"]
        assert [(r["to_id"], r["username"]) for r in sent] == [(b.user_id, b.username)]

        r = await api.post(f"/api/contacts/requests/{a.user_id}/accept", b.access_token, None)
        assert r.status_code == 200 and r.json() == {"user_id": a.user_id, "state": "contact"}, r.text
        for sock in (sa, sa2, sb):
            await sock.wait(event("accepted", a.user_id, b.user_id))
        assert await contact_ids(api, a.access_token) == [b.user_id]
        assert await contact_ids(api, b.access_token) == [a.user_id]
        mine = (await api.get("/api/contacts", a.access_token)).json()["contacts"][0]
        assert mine["username"] == b.username and mine["since"] > 0
        assert (await api.get("/api/contacts/requests", b.access_token)).json() == {"received": [], "sent": []}

        # Repeats change nothing and tell nobody again.
        r = await api.post(f"/api/contacts/requests/{a.user_id}/accept", b.access_token, None)
        assert r.status_code == 200 and r.json()["state"] == "contact"
        assert await ask(api, a.access_token, b.user_id) == (200, {"user_id": b.user_id, "state": "contact"})
        assert len([f for f in sb.of_type("contact") if f["event"] == "accepted"]) == 1
    finally:
        for sock in (sa, sa2, sb):
            await sock.close()
        await api.close()


async def test_decline_cancel_and_remove_each_end_it_and_tell_both_sides(stack) -> None:
    api = Api(stack.base_url)
    a, b = await api.user(), await api.user()
    sa, sb = await Socket.open(a.socket_url, a.access_token), await Socket.open(b.socket_url, b.access_token)
    try:
        assert (await ask(api, a.access_token, b.user_id))[0] == 200
        decline = f"/api/contacts/requests/{a.user_id}/decline"
        assert (await api.post(decline, b.access_token, None)).status_code == 204
        await sa.wait(event("declined", a.user_id, b.user_id))
        assert (await api.post(decline, b.access_token, None)).status_code == 404  # nothing left to decline

        assert (await ask(api, a.access_token, b.user_id))[0] == 200  # declined: they may ask again
        cancel = f"/api/contacts/requests/{b.user_id}"
        assert (await api.http.delete(cancel, headers=bearer(a.access_token))).status_code == 204
        await sb.wait(event("cancelled", a.user_id, b.user_id))
        assert (await api.http.delete(cancel, headers=bearer(a.access_token))).status_code == 404
        r = await api.post(f"/api/contacts/requests/{a.user_id}/accept", b.access_token, None)
        assert r.status_code == 404  # a cancelled request cannot be accepted

        # Asking someone who asked first accepts their request.
        assert (await ask(api, b.access_token, a.user_id))[1]["state"] == "pending"
        assert await ask(api, a.access_token, b.user_id) == (200, {"user_id": b.user_id, "state": "contact"})
        await sa.wait(event("accepted", b.user_id, a.user_id))
        assert (await api.http.delete(f"/api/contacts/{a.user_id}", headers=bearer(b.access_token))).status_code == 204
        await sa.wait(event("removed", b.user_id, a.user_id))
        assert await contact_ids(api, a.access_token) == [] and await contact_ids(api, b.access_token) == []
        assert (await api.http.delete(f"/api/contacts/{a.user_id}", headers=bearer(b.access_token))).status_code == 404
    finally:
        await sa.close()
        await sb.close()
        await api.close()


async def test_bad_requests_are_refused_precisely_and_change_nothing(stack) -> None:
    api = Api(stack.base_url)
    a, b = await api.user(), await api.user()
    try:
        assert (await ask(api, a.access_token, a.user_id))[0] == 400  # oneself
        assert (await ask(api, a.access_token, 2**62))[0] == 404  # nobody
        assert (await ask(api, a.access_token, 2**63))[0] == 422  # beyond any id
        assert (await ask(api, a.access_token, b.user_id, "x" * (stack.settings.contact_message_chars + 1)))[0] == 422
        assert (await ask(api, a.access_token, b.user_id, "nul\x00"))[0] == 422
        r = await api.http.post("/api/contacts/requests", content=b'{"user_id": %d, "message": "\\ud800"}' % b.user_id,
                                headers={**bearer(a.access_token), "content-type": "application/json"})
        assert r.status_code == 422, r.text  # a lone surrogate
        r = await api.post("/api/contacts/requests", a.access_token, {"user_id": b.user_id, "extra": 1})
        assert r.status_code == 422
        r = await api.post("/api/contacts/requests", a.access_token, {"user_id": "1"})
        assert r.status_code == 422
        for path in (f"/api/contacts/requests/{b.user_id}/accept", f"/api/contacts/requests/{b.user_id}/decline"):
            assert (await api.post(path, a.access_token, None)).status_code == 404  # no such request
        assert (await api.post(f"/api/contacts/requests/{2**63}/accept", a.access_token, None)).status_code == 422
        assert (await api.http.get("/api/contacts")).status_code == 401
        assert (await api.get("/api/contacts/requests", a.access_token)).json() == {"received": [], "sent": []}
        assert (await api.get("/api/contacts/requests", b.access_token)).json() == {"received": [], "sent": []}
        # A repeat keeps the first request (and its message).
        assert (await ask(api, a.access_token, b.user_id, "first"))[1]["state"] == "pending"
        assert (await ask(api, a.access_token, b.user_id, "second"))[1]["state"] == "pending"
        received = (await api.get("/api/contacts/requests", b.access_token)).json()["received"]
        assert [r["message"] for r in received] == ["first"]
    finally:
        await api.close()


async def test_blocks_refuse_requests_both_ways_and_a_block_ends_contact_and_requests(stack) -> None:
    api = Api(stack.base_url)
    a, b, c = await api.user(), await api.user(), await api.user()
    sa = await Socket.open(a.socket_url, a.access_token)
    try:
        block = await api.http.put(f"/api/users/me/blocks/{a.user_id}", headers=bearer(b.access_token))
        assert block.status_code == 204
        assert (await ask(api, a.access_token, b.user_id))[0] == 403  # the blocked user cannot knock
        assert (await ask(api, b.access_token, a.user_id))[0] == 403  # whoever blocks must unblock first
        await api.http.delete(f"/api/users/me/blocks/{a.user_id}", headers=bearer(b.access_token))
        assert (await ask(api, a.access_token, b.user_id))[0] == 200

        # Contacts with c, and a request pending from a to b: b's block ends the request, c's the contact.
        assert (await ask(api, c.access_token, a.user_id))[0] == 200
        assert (await ask(api, a.access_token, c.user_id))[1]["state"] == "contact"
        await api.http.put(f"/api/users/me/blocks/{a.user_id}", headers=bearer(b.access_token))
        await sa.wait(event("declined", a.user_id, b.user_id))
        await api.http.put(f"/api/users/me/blocks/{a.user_id}", headers=bearer(c.access_token))
        await sa.wait(event("removed", c.user_id, a.user_id))
        assert await contact_ids(api, a.access_token) == [] and await contact_ids(api, c.access_token) == []
        assert (await api.get("/api/contacts/requests", a.access_token)).json() == {"received": [], "sent": []}
        # Unblocking does not bring the contact back.
        await api.http.delete(f"/api/users/me/blocks/{a.user_id}", headers=bearer(c.access_token))
        assert await contact_ids(api, c.access_token) == []
    finally:
        await sa.close()
        await api.close()


async def test_a_flood_of_requests_is_rate_limited(stack) -> None:
    api = Api(stack.base_url)
    a, b = await api.user(), await api.user()
    try:
        # Each gateway replica counts alone without Redis, and a window may turn over mid-flood:
        # 4 limits' worth is enough to meet the 429 in every case.
        limit = stack.settings.contact_requests_per_minute
        codes: list[int] = []
        while 429 not in codes and len(codes) < 4 * limit + 2:
            codes.append((await ask(api, a.access_token, b.user_id))[0])
        assert codes[-1] == 429 and set(codes) == {200, 429} and len(codes) > limit, codes
        received = (await api.get("/api/contacts/requests", b.access_token)).json()["received"]
        assert len(received) == 1
    finally:
        await api.close()
