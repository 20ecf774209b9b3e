"""Groups over HTTP and their membership rules, seen from the socket too."""

from __future__ import annotations

from support import Api, Socket


async def test_group_lifecycle_and_rules(stack):
    api = Api(stack.base_url)
    owner, m1, m2, newcomer, outsider = [await api.user() for _ in range(5)]
    r = await api.post("/api/groups", owner.access_token, {"name": "team", "members": [m1.user_id, m2.user_id]})
    assert r.status_code == 201
    group = r.json()
    assert set(group) == {"id", "conv", "name", "owner_id", "members",  # PROTOCOL §3, then issue 18's
                          "description", "add_policy", "muted_all", "dissolved", "admins", "muted"}
    assert group["conv"] == f"g:{group['id']}" and group["owner_id"] == owner.user_id
    assert group["members"] == [owner.user_id, m1.user_id, m2.user_id]
    gid, conv = group["id"], group["conv"]

    # Outsiders cannot add; members can.
    r = await api.post(f"/api/groups/{gid}/members", outsider.access_token, {"user_ids": [outsider.user_id]})
    assert r.status_code == 403
    r = await api.post(f"/api/groups/{gid}/members", m1.access_token, {"user_ids": [newcomer.user_id]})
    assert r.status_code == 200 and newcomer.user_id in r.json()["members"]
    s_new = await Socket.open(newcomer.socket_url, newcomer.access_token)
    assert (await s_new.send_text(conv, "I just joined"))["type"] == "ack"

    # A member cannot remove others; it can remove itself; the owner removes anyone.
    r = await api.http.delete(f"/api/groups/{gid}/members/{m2.user_id}",
                              headers={"Authorization": f"Bearer {m1.access_token}"})
    assert r.status_code == 403
    r = await api.http.delete(f"/api/groups/{gid}/members/{m1.user_id}",
                              headers={"Authorization": f"Bearer {m1.access_token}"})
    assert r.status_code == 204
    r = await api.http.delete(f"/api/groups/{gid}/members/{newcomer.user_id}",
                              headers={"Authorization": f"Bearer {owner.access_token}"})
    assert r.status_code == 204
    # Removed at once: the shard sees the change before the next message.
    err = await s_new.send_text(conv, "still here?")
    assert err["type"] == "error" and err["code"] == "forbidden"
    assert (await api.get(f"/api/conversations/{conv}/messages", newcomer.access_token)).status_code == 403
    r = await api.http.delete(f"/api/groups/{gid}/members/{newcomer.user_id}",
                              headers={"Authorization": f"Bearer {owner.access_token}"})
    assert r.status_code == 404

    # The owner leaving hands the group to the longest-standing member.
    r = await api.http.delete(f"/api/groups/{gid}/members/{owner.user_id}",
                              headers={"Authorization": f"Bearer {owner.access_token}"})
    assert r.status_code == 204
    g = (await api.get(f"/api/groups/{gid}", m2.access_token)).json()
    assert g["owner_id"] == m2.user_id and g["members"] == [m2.user_id]

    convs = (await api.get("/api/conversations", m2.access_token)).json()
    entry = next(c for c in convs if c["conv"] == conv)
    # seq 1 "created", 2 joined, 3 the message, 4 left, 5 removed, 6 the owner left, 7 the new owner:
    # events count in last_seq, not in unread nor as the last message.
    assert entry["last_seq"] == 7 and entry["unread"] == 1
    assert entry["last_message"]["body"] == "I just joined"
    assert all(c["conv"] != conv for c in (await api.get("/api/conversations", m1.access_token)).json())
    assert (await api.post("/api/groups/999999/members", m2.access_token, {"user_ids": [m1.user_id]})
            ).status_code == 404
    await s_new.close()
    await api.close()
