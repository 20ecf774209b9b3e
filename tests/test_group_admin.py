"""Group administration (issue 18): roles, settings, mutes, transfer and dissolution over HTTP; every
change as a seq'd `event` in the group's own stream, live on every member's socket and in history, so
a client that folds history's events from seq 1 rebuilds exactly the group GET /api/groups/{id} shows.

Black-box: HTTP and WebSocket only.
"""

from __future__ import annotations

from typing import Any

from support import Api, Login, Socket, bearer

FOLDED = ("name", "description", "owner_id", "members", "add_policy", "muted_all", "dissolved", "admins", "muted")


def fold(history: list[dict]) -> dict[str, Any]:
    """A group's state from its history alone: apply its events in seq order (docs/protocol.md §10)."""
    state: dict[str, Any] = {}
    for msg in history:
        if msg["kind"] != "event":
            continue
        e = msg["event"]
        kind = e["type"]
        if kind == "created":
            state = {"name": e["name"], "description": e["description"], "owner_id": e["owner_id"],
                     "members": list(e["members"]), "add_policy": e["add_policy"], "muted_all": e["muted_all"],
                     "dissolved": False, "admins": set(), "muted": set()}
        elif kind == "joined":
            state["members"] += e["user_ids"]
        elif kind in ("left", "removed"):
            state["members"].remove(e["user_id"])
            state["admins"].discard(e["user_id"])
            state["muted"].discard(e["user_id"])
        elif kind == "role":
            (state["admins"].add if e["role"] == "admin" else state["admins"].discard)(e["user_id"])
        elif kind == "owner":
            old, state["owner_id"] = state["owner_id"], e["user_id"]
            state["admins"].discard(e["user_id"])
            if old in state["members"]:
                state["admins"].add(old)
        elif kind == "updated":
            state.update({k: v for k, v in e.items() if k != "type"})
        elif kind == "muted":
            (state["muted"].add if e["muted"] else state["muted"].discard)(e["user_id"])
        elif kind == "dissolved":
            state["dissolved"] = True
    return {**state, "admins": sorted(state["admins"]), "muted": sorted(state["muted"])}


def events_of(frames: list[dict], conv: str) -> list[dict]:
    return [f for f in frames if f.get("type") == "msg" and f["conv"] == conv and f["kind"] == "event"]


def live_event(conv: str, kind: str, **fields: Any):
    return lambda frames: any(f["event"]["type"] == kind and all(f["event"].get(k) == v for k, v in fields.items())
                              for f in events_of(frames, conv))


class Group:
    """One group seen through the API by its users."""

    def __init__(self, api: Api, gid: int) -> None:
        self.api, self.id, self.conv = api, gid, f"g:{gid}"

    async def get(self, user: Login) -> dict:
        r = await self.api.get(f"/api/groups/{self.id}", user.access_token)
        assert r.status_code == 200, r.text
        return r.json()

    async def patch(self, user: Login, body: dict) -> Any:
        return await self.api.http.patch(f"/api/groups/{self.id}", json=body, headers=bearer(user.access_token))

    async def role(self, user: Login, member: int, role: str) -> Any:
        return await self.api.http.put(f"/api/groups/{self.id}/members/{member}/role", json={"role": role},
                                       headers=bearer(user.access_token))

    async def mute(self, user: Login, member: int, muted: bool) -> Any:
        return await self.api.http.put(f"/api/groups/{self.id}/members/{member}/mute", json={"muted": muted},
                                       headers=bearer(user.access_token))

    async def transfer(self, user: Login, member: int) -> Any:
        return await self.api.post(f"/api/groups/{self.id}/owner", user.access_token, {"user_id": member})

    async def add(self, user: Login, *members: int) -> Any:
        return await self.api.post(f"/api/groups/{self.id}/members", user.access_token, {"user_ids": list(members)})

    async def remove(self, user: Login, member: int) -> int:
        r = await self.api.http.delete(f"/api/groups/{self.id}/members/{member}", headers=bearer(user.access_token))
        return r.status_code

    async def dissolve(self, user: Login) -> int:
        return (await self.api.http.delete(f"/api/groups/{self.id}", headers=bearer(user.access_token))).status_code

    async def events(self, user: Login) -> list[dict]:
        return events_of(await self.api.all_history(user.access_token, self.conv), self.conv)

    async def assert_rebuilt_from_history(self, user: Login) -> dict:
        """History's events fold into exactly the group the API shows."""
        group = await self.get(user)
        history = await self.api.all_history(user.access_token, self.conv)
        assert [m["seq"] for m in history] == list(range(1, len(history) + 1))
        assert history[0]["kind"] == "event" and history[0]["event"]["type"] == "created"
        assert fold(history) == {k: group[k] for k in FOLDED}
        return group


async def new_group(api: Api, owner: Login, *members: Login, name: str = "team") -> Group:
    r = await api.post("/api/groups", owner.access_token, {"name": name, "members": [m.user_id for m in members]})
    assert r.status_code == 201, r.text
    return Group(api, r.json()["id"])


async def test_roles_decide_who_may_rename_kick_mute_and_promote_and_every_change_is_an_event(stack) -> None:
    api = Api(stack.base_url)
    owner, admin, member, other, outsider = [await api.user() for _ in range(5)]
    socks = {u.user_id: await Socket.open(u.socket_url, u.access_token) for u in (owner, admin, member, other)}
    try:
        g = await new_group(api, owner, admin, member, other)
        first = await g.get(member)
        assert first["owner_id"] == owner.user_id and first["admins"] == [] and first["muted"] == []
        assert (first["description"], first["add_policy"], first["muted_all"], first["dissolved"]) == (
            "", "everyone", False, False)

        # Only the owner sets roles; a repeat changes nothing and records nothing.
        assert (await g.role(admin, member.user_id, "admin")).status_code == 403
        assert (await g.role(member, member.user_id, "admin")).status_code == 403
        r = await g.role(owner, admin.user_id, "admin")
        assert r.status_code == 200 and r.json()["admins"] == [admin.user_id]
        count = len(await g.events(owner))
        assert (await g.role(owner, admin.user_id, "admin")).json()["admins"] == [admin.user_id]
        assert len(await g.events(owner)) == count

        # A member kicks, renames and mutes nobody; an admin touches neither the owner nor other admins.
        assert await g.remove(member, other.user_id) == 403
        assert (await g.patch(member, {"name": "mine"})).status_code == 403
        assert (await g.mute(member, other.user_id, True)).status_code == 403
        assert (await g.role(owner, other.user_id, "admin")).status_code == 200
        assert await g.remove(admin, owner.user_id) == 403
        assert await g.remove(admin, other.user_id) == 403
        assert (await g.mute(admin, other.user_id, True)).status_code == 403
        assert (await g.mute(admin, owner.user_id, True)).status_code == 403
        assert (await g.transfer(admin, admin.user_id)).status_code == 403
        assert await g.dissolve(admin) == 403
        assert (await g.role(owner, other.user_id, "member")).json()["admins"] == [admin.user_id]

        # An admin renames and describes; the same values again record no event.
        r = await g.patch(admin, {"name": "Équipe 🚀", "description": "line one\nline two"})
        assert r.status_code == 200 and (r.json()["name"], r.json()["description"]) == (
            "Équipe 🚀", "line one\nline two")
        count = len(await g.events(owner))
        assert (await g.patch(admin, {"name": "Équipe 🚀", "description": "line one\nline two"})).status_code == 200
        assert (await g.patch(admin, {})).status_code == 200
        assert len(await g.events(owner)) == count

        # A muted member's send is refused; unmuting restores it; muting twice records once.
        s_member = socks[member.user_id]
        assert (await g.mute(admin, member.user_id, True)).json()["muted"] == [member.user_id]
        count = len(await g.events(owner))
        assert (await g.mute(admin, member.user_id, True)).status_code == 200
        assert len(await g.events(owner)) == count
        refused = await s_member.send_text(g.conv, "can you hear me?")
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
        assert (await g.mute(admin, member.user_id, False)).json()["muted"] == []
        assert (await s_member.send_text(g.conv, "back"))["type"] == "ack"

        # muted_all: only the owner and admins write.
        assert (await g.patch(admin, {"muted_all": True})).json()["muted_all"] is True
        assert (await s_member.send_text(g.conv, "hello?"))["code"] == "forbidden"
        assert (await socks[admin.user_id].send_text(g.conv, "admins only"))["type"] == "ack"
        assert (await socks[owner.user_id].send_text(g.conv, "owner too"))["type"] == "ack"
        assert (await g.patch(owner, {"muted_all": False})).json()["muted_all"] is False
        assert (await s_member.send_text(g.conv, "free again"))["type"] == "ack"

        # add_policy "admins": members stop adding; admins still add; adding a present member is a no-op.
        assert (await g.patch(admin, {"add_policy": "admins"})).json()["add_policy"] == "admins"
        assert (await g.add(member, outsider.user_id)).status_code == 403
        assert (await g.add(admin, outsider.user_id)).status_code == 200
        count = len(await g.events(owner))
        assert (await g.add(admin, outsider.user_id)).status_code == 200
        assert len(await g.events(owner)) == count

        # A removed member hears it live, then reads nothing more.
        s_out = await Socket.open(outsider.socket_url, outsider.access_token)
        try:
            assert await g.remove(admin, outsider.user_id) == 204
            await s_out.wait(live_event(g.conv, "removed", user_id=outsider.user_id))
            assert (await api.get(f"/api/conversations/{g.conv}/messages", outsider.access_token)).status_code == 403
            assert (await api.get(f"/api/groups/{g.id}", outsider.access_token)).status_code == 403
        finally:
            await s_out.close()

        # Transfer: the old owner becomes an admin.
        r = await g.transfer(owner, member.user_id)
        assert r.status_code == 200
        assert r.json()["owner_id"] == member.user_id and r.json()["admins"] == sorted([owner.user_id, admin.user_id])
        assert (await g.role(owner, other.user_id, "admin")).status_code == 403
        assert (await g.transfer(member, member.user_id)).json()["owner_id"] == member.user_id  # to itself: no-op

        # History folds into the group; every member's socket got every event live, in seq order.
        final = await g.assert_rebuilt_from_history(other)
        assert final["owner_id"] == member.user_id and final["add_policy"] == "admins"
        stored = [(e["seq"], e["event"]) for e in await g.events(other)]
        for sock in socks.values():
            frames = await sock.wait(lambda fs: len(events_of(fs, g.conv)) >= len(stored))
            assert [(e["seq"], e["event"]) for e in events_of(frames, g.conv)] == stored
        kinds = [event["type"] for _, event in stored]
        assert kinds[0] == "created" and {"joined", "removed", "role", "owner", "updated", "muted"} <= set(kinds)
    finally:
        for sock in socks.values():
            await sock.close()
        await api.close()


async def test_a_dissolved_group_refuses_messages_and_changes_but_stays_readable(stack) -> None:
    api = Api(stack.base_url)
    owner, admin, member = [await api.user() for _ in range(3)]
    s_member = await Socket.open(member.socket_url, member.access_token)
    try:
        g = await new_group(api, owner, admin, member)
        assert (await g.role(owner, admin.user_id, "admin")).status_code == 200
        assert (await s_member.send_text(g.conv, "before"))["type"] == "ack"
        assert await g.dissolve(admin) == 403
        assert await g.dissolve(owner) == 204
        await s_member.wait(live_event(g.conv, "dissolved"))
        count = len(await g.events(owner))
        assert await g.dissolve(owner) == 204  # a repeat: nothing more happens
        assert len(await g.events(owner)) == count

        refused = await s_member.send_text(g.conv, "after")
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
        for attempt in (g.patch(owner, {"name": "again"}), g.role(owner, member.user_id, "admin"),
                        g.mute(admin, member.user_id, True), g.transfer(owner, admin.user_id),
                        g.add(owner, (await api.user()).user_id)):
            r = await attempt
            assert r.status_code == 409, r.text
        assert await g.remove(member, member.user_id) == 409
        assert await g.remove(owner, member.user_id) == 409

        group = await g.assert_rebuilt_from_history(member)
        assert group["dissolved"] is True and group["members"] == [owner.user_id, admin.user_id, member.user_id]
        bodies = [m["body"] for m in await api.all_history(member.access_token, g.conv) if m["kind"] == "text"]
        assert bodies == ["before"]
    finally:
        await s_member.close()
        await api.close()


async def test_an_owner_who_leaves_hands_the_group_to_the_longest_standing_admin(stack) -> None:
    api = Api(stack.base_url)
    owner, early, admin = [await api.user() for _ in range(3)]
    s_early = await Socket.open(early.socket_url, early.access_token)
    try:
        g = await new_group(api, owner, early)
        assert (await g.add(early, admin.user_id)).status_code == 200
        assert (await g.role(owner, admin.user_id, "admin")).status_code == 200
        assert (await g.mute(owner, admin.user_id, True)).status_code == 200  # the owner mutes even an admin
        assert await g.remove(owner, owner.user_id) == 204
        await s_early.wait(live_event(g.conv, "owner", user_id=admin.user_id))
        group = await g.assert_rebuilt_from_history(early)
        assert group["owner_id"] == admin.user_id and group["members"] == [early.user_id, admin.user_id]
        assert group["admins"] == [] and group["muted"] == []  # an owner is never muted
        kinds = [e["event"]["type"] for e in await g.events(early)]
        assert kinds[-3:] == ["left", "muted", "owner"]
    finally:
        await s_early.close()
        await api.close()


async def test_strangers_huge_ids_odd_unicode_and_bad_bodies_get_precise_errors(stack) -> None:
    api = Api(stack.base_url)
    owner, member, stranger = [await api.user() for _ in range(3)]
    try:
        g = await new_group(api, owner, member)
        assert (await g.patch(stranger, {"name": "x"})).status_code == 403
        assert (await g.role(stranger, member.user_id, "admin")).status_code == 403
        assert (await g.mute(stranger, member.user_id, True)).status_code == 403
        assert (await g.transfer(stranger, stranger.user_id)).status_code == 403
        assert await g.dissolve(stranger) == 403
        assert (await g.role(owner, stranger.user_id, "admin")).status_code == 404
        assert (await g.mute(owner, stranger.user_id, True)).status_code == 404
        assert (await g.transfer(owner, stranger.user_id)).status_code == 404
        assert (await g.role(owner, owner.user_id, "member")).status_code == 422

        missing = Group(api, 2**63 - 1)
        assert (await missing.patch(owner, {"name": "x"})).status_code == 404
        assert await missing.dissolve(owner) == 404
        assert (await missing.role(owner, member.user_id, "admin")).status_code == 404
        huge = Group(api, 2**64)
        assert (await huge.patch(owner, {"name": "x"})).status_code == 422
        assert await huge.dissolve(owner) == 422
        assert (await g.mute(owner, 2**64, True)).status_code == 422

        for body in ({"name": ""}, {"name": "x" * 65}, {"name": "evil\u202eexe.txt"}, {"name": "tab\there"},
                     {"description": "x" * 513}, {"description": "\u2067hidden"}, {"description": "nul\x00"},
                     {"add_policy": "nobody"}, {"muted_all": "yes"}, {"owner_id": stranger.user_id}):
            r = await g.patch(owner, body)
            assert r.status_code == 422, (body, r.text)
        for body in ({"role": "owner"}, {"role": ""}, {}):
            r = await api.http.put(f"/api/groups/{g.id}/members/{member.user_id}/role", json=body,
                                   headers=bearer(owner.access_token))
            assert r.status_code == 422, (body, r.text)
        r = await api.http.put(f"/api/groups/{g.id}/members/{member.user_id}/mute", json={"muted": 1},
                               headers=bearer(owner.access_token))
        assert r.status_code == 422
        assert (await api.post("/api/groups", owner.access_token, {"name": "a\u202eb"})).status_code == 422

        group = await g.assert_rebuilt_from_history(member)  # nothing refused left a trace
        assert group["name"] == "team" and len(await g.events(member)) == 1
    finally:
        await api.close()
