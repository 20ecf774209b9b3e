"""No poison input: integers out of range, client ids the database calls equal, rows written behind
the shard's back. Each gets a precise answer, and nothing it does outlives it."""

from __future__ import annotations

import asyncio
import time
import uuid

import sqlalchemy
from support import Api, Socket, chat_pair, direct, one_per_node

from imray.domain.conversations import shard_of
from imray.storage.schema import messages

HUGE = "99999999999999999999"  # beyond 64 bits
PAST_BIGINT = str(2**63)  # one past the largest signed 64-bit integer


async def test_integers_beyond_64_bits_in_paths_queries_and_bodies_are_4xx(stack):
    api = Api(stack.base_url)
    login = await api.user()
    token = {"Authorization": f"Bearer {login.access_token}"}
    conv = direct(login.user_id, login.user_id + 1)
    calls = [
        ("GET", f"/api/conversations/{conv}/messages?after_seq={HUGE}", None),
        ("GET", f"/api/conversations/{conv}/messages?before_seq={HUGE}", None),
        ("GET", f"/api/conversations/{conv}/messages?after_seq={PAST_BIGINT}", None),
        ("GET", f"/api/conversations/{conv}/messages?after_seq=1&before_seq={PAST_BIGINT}", None),
        ("GET", f"/api/users/{HUGE}", None),
        ("GET", f"/api/users/{PAST_BIGINT}", None),
        ("GET", f"/api/users/{HUGE}/avatar", None),
        ("PUT", f"/api/users/me/blocks/{HUGE}", None),
        ("DELETE", f"/api/users/me/blocks/{HUGE}", None),
        ("GET", f"/api/groups/{HUGE}", None),
        ("POST", f"/api/groups/{HUGE}/members", {"user_ids": [login.user_id]}),
        ("DELETE", f"/api/groups/{HUGE}/members/{HUGE}", None),
        ("POST", "/api/groups", {"name": "big", "members": [int(HUGE)]}),
        ("POST", "/api/groups", {"name": "big", "members": [2**63]}),
    ]
    seen = []
    for method, path, body in calls:
        r = await api.http.request(method, path, json=body, headers=token)
        seen.append((method, path, r.status_code))
    assert all(400 <= status < 500 for _, _, status in seen), [s for s in seen if not 400 <= s[2] < 500]
    # The largest value a route takes is still served.
    r = await api.get(f"/api/conversations/{conv}/messages", login.access_token, after_seq=2**62)
    assert r.status_code in (200, 404), r.text
    await api.close()


async def test_a_read_frame_past_the_largest_seq_is_a_bad_request_and_the_session_goes_on(stack):
    async with chat_pair(stack.base_url) as pair:
        await pair.sa.send_text(pair.conv, "hello")
        for seq in (2**62 + 1, 2**64, int(HUGE)):
            before = len(pair.sa.frames)
            await pair.sa.send_raw(f'{{"type":"read","conv":"{pair.conv}","seq":{seq}}}')
            frames = await pair.sa.wait(lambda fs, before=before: any(f["type"] == "error" for f in fs[before:]))
            assert next(f for f in frames[before:] if f["type"] == "error")["code"] == "bad_request"
        # The largest seq allowed is clamped to the conversation's end: a receipt for seq 1.
        await pair.sa.send_json({"type": "read", "conv": pair.conv, "seq": 2**62})
        receipt = await pair.sb.wait(lambda fs: any(f["type"] == "receipt" for f in fs))
        assert [f["seq"] for f in receipt if f["type"] == "receipt"] == [1]
        assert (await pair.sa.request({"type": "ping"}, "pong")) == {"type": "pong"}


async def test_client_ids_differing_only_in_trailing_spaces_or_case_are_different_messages(stack):
    async with chat_pair(stack.base_url) as pair:
        base = uuid.uuid4().hex[:8]
        ids = [f"p{base}", f"p{base} ", f"P{base}", f"p{base}  ", f"p{base}\u00e9", f"p{base}e"]
        acks = [await pair.sa.send_text(pair.conv, f"body {i}", client_id) for i, client_id in enumerate(ids)]
        assert [a["type"] for a in acks] == ["ack"] * len(ids), acks
        assert [a["seq"] for a in acks] == list(range(1, len(ids) + 1))
        # A resend of each is recognised as itself, not as the id the database might call equal.
        again = [await pair.sa.send_text(pair.conv, "again", client_id) for client_id in reversed(ids)]
        assert [a["seq"] for a in again] == list(range(len(ids), 0, -1)), again
        history = await pair.api.history(pair.b.access_token, pair.conv, after_seq=0)
        assert [m["body"] for m in history] == [f"body {i}" for i in range(len(ids))]


def _write_behind_the_shard(url: str, conv: str, seq: int, sender: int) -> None:
    """A message row with `seq` written straight into the database, as a second deployment (or a
    commit whose answer was lost) would have: the shard that owns `conv` has not seen it."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.insert(messages).values(
                msg_id=f"{int(time.time() * 1000):012x}{uuid.uuid4().hex[:16]}", conv=conv, seq=seq,
                sender_id=sender, client_id=f"behind-{uuid.uuid4().hex}", kind="text", body="written behind",
                ts=int(time.time() * 1000)))
    finally:
        engine.dispose()


async def test_after_a_seq_conflict_the_shard_reads_the_truth_and_later_sends_go_on(stack):
    async with chat_pair(stack.base_url) as pair:
        first = await pair.sa.send_text(pair.conv, "one")
        assert first["seq"] == 1
        await asyncio.to_thread(_write_behind_the_shard, stack.settings.db_url, pair.conv, 2, pair.a.user_id)
        second = await pair.sa.send_text(pair.conv, "two")
        assert second["type"] == "ack" and second["seq"] == 3, second
        third = await pair.sb.send_text(pair.conv, "three")
        assert third["type"] == "ack" and third["seq"] == 4, third
        history = await pair.api.history(pair.a.access_token, pair.conv, after_seq=0)
        assert [(m["seq"], m["body"]) for m in history] == [(1, "one"), (2, "written behind"), (3, "two"),
                                                          (4, "three")]


async def test_a_conflicting_row_does_not_fail_the_other_sends_of_its_commit_turn(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    shards = stack.settings.shard_count
    conv = direct(a.user_id, b.user_id)
    # Partners whose conversations with `a` the same shard owns: their sends share its commit turns.
    partners = []
    while len(partners) < 3:
        other = await api.user()
        if shard_of(direct(a.user_id, other.user_id), shards) == shard_of(conv, shards):
            partners.append(other)
    sa = await Socket.open(a.socket_url, a.access_token)
    try:
        assert (await sa.send_text(conv, "one"))["seq"] == 1
        await asyncio.to_thread(_write_behind_the_shard, stack.settings.db_url, conv, 2, b.user_id)
        # One burst: the conflicting send and the others leave in the same few batches.
        frames = [{"type": "send", "id": f"c{uuid.uuid4().hex}", "conv": conv, "body": "conflicts"}]
        for p in partners:
            frames += [{"type": "send", "id": f"o{uuid.uuid4().hex}", "conv": direct(a.user_id, p.user_id),
                        "body": f"to {p.user_id} #{i}"} for i in range(5)]
        await asyncio.gather(*(sa.send_json(f) for f in frames))
        wanted = {f["id"] for f in frames}
        got = await sa.wait(lambda fs: wanted <= {f.get("id") for f in fs if f["type"] in ("ack", "error")})
        answers = {f["id"]: f for f in got if f.get("id") in wanted}
        assert all(f["type"] == "ack" for f in answers.values()), [f for f in answers.values() if f["type"] != "ack"]
        assert answers[frames[0]["id"]]["seq"] == 3
    finally:
        await sa.close()
        await api.close()
