"""Real-time chat across socket nodes: delivery, ordering, durability, idempotency, receipts."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import ray
from support import Api, Socket, direct, in_chat_pair, one_per_node

from imray.adapters.named_actors import RayNamedActors


async def test_direct_chat_both_ways_across_nodes(stack):
    async def scenario(api, a, b, sa, sb, conv):
        assert a.socket_node != b.socket_node

        ack = await sa.send_text(conv, "hello from A")
        assert ack["type"] == "ack" and ack["conv"] == conv and ack["seq"] == 1
        assert set(ack) == {"type", "id", "msg_id", "conv", "seq", "ts"}
        got = (await sb.wait(lambda fs: any(f["type"] == "msg" for f in fs)))
        msg = next(f for f in got if f["type"] == "msg")
        assert msg == {"type": "msg", "conv": conv, "seq": 1, "msg_id": ack["msg_id"], "from": a.user_id,
                       "kind": "text", "body": "hello from A", "ts": ack["ts"]}

        ack2 = await sb.send_text(conv, "hi A, B here")
        assert ack2["seq"] == 2
        got = await sa.wait(lambda fs: any(f["type"] == "msg" for f in fs))
        assert [f["body"] for f in got if f["type"] == "msg"] == ["hi A, B here"]
        # The sending session never gets its own message back.
        assert not [f for f in sa.frames if f["type"] == "msg" and f["from"] == a.user_id]

    await in_chat_pair(stack.base_url, scenario)


async def test_every_session_of_every_member_gets_it(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    a2 = await api.login(a.username)  # a second login of A, on whichever node the policy picks
    sessions = [await Socket.open(x.socket_url, x.access_token) for x in (a, a2, b)]
    sa, sa2, sb = sessions
    conv = direct(a.user_id, b.user_id)
    ack = await sa.send_text(conv, "to all")
    for other in (sa2, sb):
        frames = await other.wait(lambda fs: any(f["type"] == "msg" for f in fs))
        assert [f["seq"] for f in frames if f["type"] == "msg"] == [ack["seq"]]
    await asyncio.sleep(0.3)
    assert not sa.of_type("msg")
    for s in sessions:
        await s.close()
    await api.close()


async def test_five_senders_into_one_group_total_order(stack):
    senders_n, per_sender = 5, 200
    total = senders_n * per_sender

    api = Api(stack.base_url)
    senders = [await api.user() for _ in range(senders_n)]
    readers = [await api.user() for _ in range(3)]
    members = senders + readers
    assert len({m.socket_node for m in members}) == 2  # spread over both socket nodes
    r = await api.post("/api/groups", senders[0].access_token,
                       {"name": "load", "members": [m.user_id for m in members[1:]]})
    assert r.status_code == 201, r.text
    conv = r.json()["conv"]
    first = 2  # seq 1 is the group's "created" event (committed before the sockets open)
    socks = [await Socket.open(m.socket_url, m.access_token) for m in members]

    async def send_all(sock: Socket, who: int) -> None:
        ids = [f"s{who}-{i}" for i in range(per_sender)]
        for client_id in ids:
            await sock.send_json({"type": "send", "id": client_id, "conv": conv, "kind": "text",
                                  "body": f"m{who}-{client_id}"})
        await sock.wait(lambda fs: sum(1 for f in fs if f["type"] == "ack") >= per_sender, timeout=120)

    await asyncio.gather(*(send_all(s, i) for i, s in enumerate(socks[:senders_n])))
    for i, sock in enumerate(socks):
        own = per_sender if i < senders_n else 0
        await sock.wait(lambda fs, own=own: sum(1 for f in fs if f["type"] == "msg") >= total - own,
                        timeout=120)
    await asyncio.sleep(0.5)  # anything extra (a duplicate) would arrive now
    for i, sock in enumerate(socks):
        msgs = [f["seq"] for f in sock.frames if f["type"] == "msg"]
        acks = [f["seq"] for f in sock.frames if f["type"] == "ack"]
        errors = [f for f in sock.frames if f["type"] == "error"]
        assert not errors, errors[:3]
        assert msgs == sorted(msgs), f"session {i}: deliveries out of seq order"
        assert len(msgs) == len(set(msgs)), f"session {i}: duplicate deliveries"
        assert sorted(msgs + acks) == list(range(first, total + first)), f"session {i}: not exactly {total} seqs"
    history = await api.all_history(members[-1].access_token, conv)
    assert [m["seq"] for m in history] == list(range(1, total + first))
    assert history[0]["kind"] == "event" and history[0]["event"]["type"] == "created"
    # Per sender, the order it sent in is the order of seq.
    for who in range(senders_n):
        mine = [m["body"] for m in history if m["from"] == senders[who].user_id and m["kind"] == "text"]
        assert mine == [f"m{who}-s{who}-{i}" for i in range(per_sender)]
    for s in socks:
        await s.close()
    await api.close()


async def test_resend_same_client_id_is_idempotent(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    sa = await Socket.open(a.socket_url, a.access_token)
    conv = direct(a.user_id, b.user_id)
    client_id = uuid.uuid4().hex
    first = await sa.send_text(conv, "once", client_id)
    again = await sa.send_text(conv, "once", client_id)
    assert first["type"] == "ack" and again == first
    await sa.close()
    # A new session (and a new login) resending it still gets the same ack.
    a2 = await api.login(a.username)
    sa2 = await Socket.open(a2.socket_url, a2.access_token)
    assert await sa2.send_text(conv, "once", client_id) == first
    history = await api.history(b.access_token, conv, after_seq=0)
    assert [m["body"] for m in history] == ["once"]
    await sa2.close()
    await api.close()


async def test_offline_user_catches_up_from_history(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    sa = await Socket.open(a.socket_url, a.access_token)
    conv = direct(a.user_id, b.user_id)
    acks = [await sa.send_text(conv, f"while you were out {i}") for i in range(30)]
    assert [x["seq"] for x in acks] == list(range(1, 31))
    b2 = await api.login(b.username)  # B comes back
    got = await api.history(b2.access_token, conv, after_seq=0)
    assert [m["seq"] for m in got] == list(range(1, 31))
    assert [m["msg_id"] for m in got] == [x["msg_id"] for x in acks]
    assert [m["seq"] for m in await api.history(b2.access_token, conv, after_seq=25)] == [26, 27, 28, 29, 30]
    page = await api.history(b2.access_token, conv, before_seq=31, limit=10)
    assert [m["seq"] for m in page] == list(range(21, 31))
    page = await api.history(b2.access_token, conv, before_seq=21, limit=10)
    assert [m["seq"] for m in page] == list(range(11, 21))
    assert await api.history(b2.access_token, conv, after_seq=30) == []
    convs = (await api.get("/api/conversations", b2.access_token)).json()
    entry = next(c for c in convs if c["conv"] == conv)
    assert entry["last_seq"] == 30 and entry["read_seq"] == 0 and entry["unread"] == 30
    assert entry["last_message"]["seq"] == 30
    await sa.close()
    await api.close()


async def test_read_cursor_receipts_and_typing(stack):
    async def scenario(api, a, b, sa, sb, conv):
        for i in range(3):
            await sa.send_text(conv, f"m{i}")
        await sb.wait(lambda fs: len([f for f in fs if f["type"] == "msg"]) == 3)
        await sb.send_json({"type": "read", "conv": conv, "seq": 2})
        receipt = (await sa.wait(lambda fs: any(f["type"] == "receipt" for f in fs)))
        assert next(f for f in receipt if f["type"] == "receipt") == {
            "type": "receipt", "conv": conv, "user_id": b.user_id, "seq": 2}
        convs = (await api.get("/api/conversations", b.access_token)).json()
        entry = next(c for c in convs if c["conv"] == conv)
        assert entry["read_seq"] == 2 and entry["unread"] == 1
        # Own messages are never unread for their sender.
        assert next(c for c in (await api.get("/api/conversations", a.access_token)).json()
                    if c["conv"] == conv)["unread"] == 0
        await sb.send_json({"type": "read", "conv": conv, "seq": 1})  # cursors never move back...
        await sb.send_json({"type": "read", "conv": conv, "seq": 3})
        await sa.wait(lambda fs: len([f for f in fs if f["type"] == "receipt"]) == 2)
        assert [f["seq"] for f in sa.of_type("receipt")] == [2, 3]  # ...and a no-move tells nobody
        convs = (await api.get("/api/conversations", b.access_token)).json()
        assert next(c for c in convs if c["conv"] == conv)["read_seq"] == 3
        await sa.send_json({"type": "typing", "conv": conv})
        typing = await sb.wait(lambda fs: any(f["type"] == "typing" for f in fs))
        assert next(f for f in typing if f["type"] == "typing") == {"type": "typing", "conv": conv,
                                                                    "user_id": a.user_id}
        history = await api.history(a.access_token, conv, after_seq=0)
        assert len(history) == 3  # typing is never stored

    await in_chat_pair(stack.base_url, scenario)


async def test_a_blocked_user_cannot_write(stack):
    async def scenario(api, a, b, sa, sb, conv):
        assert (await sa.send_text(conv, "hi"))["type"] == "ack"
        as_b = {"Authorization": f"Bearer {b.access_token}"}
        r = await api.http.put(f"/api/users/me/blocks/{a.user_id}", headers=as_b)
        assert r.status_code == 204
        assert (await api.get("/api/users/me/blocks", b.access_token)).json() == {"user_ids": [a.user_id]}
        err = await sa.send_text(conv, "are you there?")
        assert err["type"] == "error" and err["code"] == "forbidden"
        # B can still write to A, and both still read their history.
        assert (await sb.send_text(conv, "not now"))["type"] == "ack"
        assert [m["body"] for m in await api.history(a.access_token, conv, after_seq=0)] == ["hi", "not now"]
        r = await api.http.delete(f"/api/users/me/blocks/{a.user_id}", headers=as_b)
        assert r.status_code == 204
        assert (await sa.send_text(conv, "friends again"))["type"] == "ack"
        r = await api.http.put(f"/api/users/me/blocks/{b.user_id}", headers=as_b)
        assert r.status_code == 400  # not oneself
        r = await api.http.put("/api/users/me/blocks/999999999", headers=as_b)
        assert r.status_code == 404

    await in_chat_pair(stack.base_url, scenario)


async def test_a_client_that_stops_reading_is_cut_loose_and_loses_nothing(stack):
    """Frames to a session that does not read pile up only to socket_send_queue (100 in the tests):
    then the node closes it. Its user's other session and history still get every message."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def scenario(api, a, b, sa, sb, conv):
        before = node_connections(stack, b.socket_node)
        stuck = await connect(b.socket_url, compression=None, max_queue=1, ping_interval=None)
        await stuck.send(f'{{"type":"auth","token":"{b.access_token}"}}')
        assert '"auth_ok"' in await stuck.recv()  # and it does not read again for a while
        assert node_connections(stack, b.socket_node) == before + 1
        body, sent = "x" * 3900, 0
        # Paced below the per-session send rate (socket_sends_per_s; its 2 s burst absorbs jitter): a
        # sender faster than that gets rate_limited frames instead of acks, which is not this test.
        pace_s = 100 / (0.75 * stack.settings.socket_sends_per_s)
        while node_connections(stack, b.socket_node) > before and sent < 8000:  # ~4 KB frames fill the buffers
            started = time.monotonic()
            for _ in range(100):
                await sa.send_json({"type": "send", "id": f"s{sent}", "conv": conv, "kind": "text", "body": body})
                sent += 1
            await sa.wait(lambda fs, n=sent: len([f for f in fs if f["type"] == "ack"]) == n, timeout=60)
            await asyncio.sleep(max(0.0, pace_s - (time.monotonic() - started)))
        for _ in range(60):  # the node offers a close for 2 s, then drops the connection
            if node_connections(stack, b.socket_node) == before:
                break
            await asyncio.sleep(0.25)
        assert node_connections(stack, b.socket_node) == before, f"still connected after {sent} messages"
        got = 0
        with pytest.raises(ConnectionClosed):  # what reached its buffers, then the end
            while True:
                await asyncio.wait_for(stuck.recv(), 10)
                got += 1
        assert 0 < got < sent
        await sb.wait(lambda fs: len([f for f in fs if f["type"] == "msg"]) == sent, timeout=60)
        assert [f["seq"] for f in sb.frames if f["type"] == "msg"] == list(range(1, sent + 1))
        assert len(await api.all_history(b.access_token, conv)) == sent
        ack = await sa.send_text(conv, "still fine")  # the node goes on serving everyone else
        assert ack["seq"] == sent + 1

    await in_chat_pair(stack.base_url, scenario)


def node_connections(stack, node_id: str) -> int:
    """The socket node's own count of open sessions (asked through Ray, as `imray status` does)."""
    supervisor = RayNamedActors(stack.settings.namespace, stack.settings.shard_count).supervisor()
    return next(n.connections for n in ray.get(supervisor.node_stats.remote()) if n.node_id == node_id)
