"""Read sync (issue 18, point 6): a read on one of a user's sessions reaches the user's other sessions,
as a `receipt` with their own user_id, so every device's unread count converges."""

from __future__ import annotations

import asyncio

from support import Api, Socket, direct, one_per_node


def receipts(sock: Socket) -> list[dict]:
    return sock.of_type("receipt")


async def unread_of(api: Api, token: str, conv: str) -> dict:
    r = await api.get("/api/conversations", token)
    assert r.status_code == 200, r.text
    return next(c for c in r.json() if c["conv"] == conv)


async def test_a_read_on_one_device_reaches_the_other_device_and_the_other_member_and_clears_unread(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    b2 = await api.login(b.username)  # B's second device, on whichever node the policy picks
    sa, sb, sb2 = [await Socket.open(x.socket_url, x.access_token) for x in (a, b, b2)]
    conv = direct(a.user_id, b.user_id)
    for i in range(3):
        await sa.send_text(conv, f"m{i}")
    for sock in (sb, sb2):
        await sock.wait(lambda fs: len([f for f in fs if f["type"] == "msg"]) == 3)
    assert (await unread_of(api, b2.access_token, conv))["unread"] == 3

    await sb.send_json({"type": "read", "conv": conv, "seq": 3})
    sync = {"type": "receipt", "conv": conv, "user_id": b.user_id, "seq": 3}
    await sb2.wait(lambda fs: sync in fs)
    await sa.wait(lambda fs: sync in fs)  # the core contract: the other member gets the receipt
    entry = await unread_of(api, b2.access_token, conv)
    assert entry["read_seq"] == 3 and entry["unread"] == 0

    # A repeat (or a lower seq) does not move the cursor: nobody is told, the reading device never is.
    await sb2.send_json({"type": "read", "conv": conv, "seq": 2})
    await sb2.send_json({"type": "read", "conv": conv, "seq": 3})
    await sa.send_text(conv, "m3")  # a marker: what the reads could have caused came before it
    for sock in (sb, sb2):
        await sock.wait(lambda fs: any(f["type"] == "msg" and f["seq"] == 4 for f in fs))
    assert receipts(sb) == [] and receipts(sb2) == [sync] and receipts(sa) == [sync]
    for sock in (sa, sb, sb2):
        await sock.close()
    await api.close()


async def test_a_group_read_syncs_every_other_session_of_the_reader_even_one_on_the_same_login(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    c = await api.user()
    r = await api.post("/api/groups", a.access_token, {"name": "read sync \u00e9\u6f22\U0001f600",
                                                      "members": [b.user_id, c.user_id]})
    assert r.status_code == 201, r.text
    conv = r.json()["conv"]
    a2 = await api.login(a.username)
    sa = await Socket.open(a.socket_url, a.access_token)
    sa_same_login = await Socket.open(a.socket_url, a.access_token)  # one login, two sockets
    sa2, sb, sc = [await Socket.open(x.socket_url, x.access_token) for x in (a2, b, c)]
    ack = await sb.send_text(conv, "hello group")
    # Far past the end: clamped to the conversation's last seq, for everyone alike.
    await sa.send_json({"type": "read", "conv": conv, "seq": 2**62})
    sync = {"type": "receipt", "conv": conv, "user_id": a.user_id, "seq": ack["seq"]}
    for sock in (sa_same_login, sa2, sb, sc):
        await sock.wait(lambda fs: sync in fs)
    for login in (a, a2):
        assert (await unread_of(api, login.access_token, conv))["unread"] == 0
    assert (await unread_of(api, c.access_token, conv))["unread"] == 1
    await asyncio.sleep(0.3)
    assert receipts(sa) == []
    for sock in (sa, sa_same_login, sa2, sb, sc):
        await sock.close()
    await api.close()


async def test_a_read_of_a_strangers_conversation_is_forbidden_and_syncs_nothing(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    stranger = await api.user()
    a2 = await api.login(a.username)
    sa, sa2, sb = [await Socket.open(x.socket_url, x.access_token) for x in (a, a2, b)]
    ss = await Socket.open(stranger.socket_url, stranger.access_token)
    conv = direct(a.user_id, b.user_id)
    await sa.send_text(conv, "private")
    for conv_id in (conv, f"d:{a.user_id}:{2**62}", "g:999999999"):
        error = await ss.request({"type": "read", "conv": conv_id, "seq": 1}, "error")
        assert error["code"] in ("forbidden", "not_found", "bad_request"), error
    await sb.send_json({"type": "read", "conv": conv, "seq": 1})  # a marker: B's read reaches A's sessions
    for sock in (sa, sa2):
        await sock.wait(lambda fs: any(f["type"] == "receipt" for f in fs))
        assert [f["user_id"] for f in receipts(sock)] == [b.user_id]
    assert receipts(ss) == []
    for sock in (sa, sa2, sb, ss):
        await sock.close()
    await api.close()
