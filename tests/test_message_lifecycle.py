"""The message lifecycle (issue 18, docs/protocol.md §9): recall, edit, reactions and delete-for-me over
HTTP; replies and mentions through the socket's send frame; each change a seq'd event live and in
history; unread counts and "mentioned" in the conversation list after recalls and deletes.

Black-box: HTTP and WebSocket only.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from support import Api, Login, Socket, bearer, chat_pair, eventually

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # one emoji of 7 code points (ZWJ)
FLAG = "\U0001f1ef\U0001f1f5"  # two regional indicators
KEYCAP = "1\ufe0f\u20e3"
# "👍"/"👎" and "🍣"/"🍺" are equal under MariaDB's default collations: each must count on its own.
LOOK_ALIKES = ["👍", "👎", "🍣", "🍺"]
MORE = ["😀", "😃", "😄", "😁", "😆", "😅", "🤣", "😂", "🙂", "🙃", "😉", "😊", "😇", "🥰"]
MAX_SEQ = 2**53


def msg_path(conv: str, seq: int, tail: str = "") -> str:
    return f"/api/conversations/{conv}/messages/{seq}{tail}"


async def call(api: Api, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    r = await api.http.request(method, path, json=body, headers=bearer(token))
    return r.status_code, (r.json() if r.content else None)


async def recall(api: Api, user: Login, conv: str, seq: int, key: str | None = None) -> tuple[int, Any]:
    return await call(api, user.access_token, "POST", msg_path(conv, seq, "/recall"),
                      None if key is None else {"id": key})


async def react(api: Api, user: Login, conv: str, seq: int, emoji: str, method: str = "PUT",
                key: str | None = None) -> tuple[int, Any]:
    body = {"emoji": emoji} | ({} if key is None else {"id": key})
    return await call(api, user.access_token, method, msg_path(conv, seq, "/reactions"), body)


def event_frame(kind: str, target: int):
    """A predicate: a live `msg` of kind event recording `kind` on message `target`."""
    return lambda frames: any(f.get("type") == "msg" and f.get("kind") == "event" and f["event"]["type"] == kind
                              and f["event"]["seq"] == target for f in frames)


async def message(api: Api, user: Login, conv: str, seq: int) -> dict:
    page = await api.history(user.access_token, conv, after_seq=seq - 1, limit=1)
    assert page and page[0]["seq"] == seq, page
    return page[0]


async def listed(api: Api, user: Login, conv: str) -> dict:
    r = await api.get("/api/conversations", user.access_token)
    assert r.status_code == 200, r.text
    return next(c for c in r.json() if c["conv"] == conv)


async def group_of(api: Api, owner: Login, *members: Login) -> str:
    body = {"name": "lifecycle", "members": [m.user_id for m in members]}
    r = await api.post("/api/groups", owner.access_token, body)
    assert r.status_code == 201, r.text
    return r.json()["conv"]


async def test_the_sender_recalls_within_the_window_live_and_in_history_and_nobody_else_can(stack) -> None:
    async with chat_pair(stack.base_url) as p:
        stranger = await p.api.user()
        sent = await p.sa.send_text(p.conv, "a secret said too soon")
        seq = sent["seq"]
        await p.sb.wait(lambda fs: any(f.get("type") == "msg" and f["seq"] == seq for f in fs))
        assert (await listed(p.api, p.b, p.conv))["unread"] == 1

        # Someone else's message: not the other side's, not a stranger's to recall.
        assert (await recall(p.api, p.b, p.conv, seq))[0] == 403
        assert (await recall(p.api, stranger, p.conv, seq))[0] == 403

        status, answer = await recall(p.api, p.a, p.conv, seq, "recall-1")
        assert status == 200, answer
        assert answer["changed"] is True and answer["id"] == "recall-1" and answer["target"] == seq
        assert answer["conv"] == p.conv and answer["seq"] > seq and answer["msg_id"] and answer["ts"] > 0
        for sock in (p.sa, p.sb):  # both sides, live
            frames = await sock.wait(event_frame("recall", seq))
            live = next(f for f in frames if f.get("kind") == "event" and f["event"]["seq"] == seq)
            assert live["seq"] == answer["seq"] and live["from"] == p.a.user_id and live["body"] == ""
        for user in (p.a, p.b):
            target = await message(p.api, user, p.conv, seq)
            assert target["recalled"] is True and target["body"] == "" and target["kind"] == "text"
            assert (await message(p.api, user, p.conv, answer["seq"]))["event"] == {"type": "recall", "seq": seq}
        # The recalled message and its event leave b's unread count at once.
        assert (await listed(p.api, p.b, p.conv))["unread"] == 0
        assert (await listed(p.api, p.b, p.conv))["last_message"]["recalled"] is True

        # The same id again: the same answer, nothing new; another id: nothing left to recall.
        assert await recall(p.api, p.a, p.conv, seq, "recall-1") == (200, answer)
        again = (await recall(p.api, p.a, p.conv, seq))[1]
        assert again["changed"] is False and again["seq"] == 0
        assert [m["seq"] for m in await p.api.all_history(p.a.access_token, p.conv)] == [seq, answer["seq"]]

        # Seqs that are no message, and seqs no message can have.
        assert (await recall(p.api, p.a, p.conv, answer["seq"] + 50))[0] == 404
        assert (await recall(p.api, p.a, p.conv, answer["seq"]))[0] == 404  # an event is no message to recall
        assert (await recall(p.api, p.a, p.conv, MAX_SEQ))[0] == 404
        for bad in (0, -1, MAX_SEQ + 1, 2**64):
            assert (await recall(p.api, p.a, p.conv, bad))[0] == 422, bad
        assert (await recall(p.api, p.a, "d:2:1", seq))[0] == 400  # not a canonical conversation id
        for key in ("", "k" * 65):
            assert (await recall(p.api, p.a, p.conv, seq, key))[0] == 422
        r = await p.api.http.post(msg_path(p.conv, seq, "/recall"), content=b'{"id": "\\ud800"}',
                                  headers=bearer(p.a.access_token) | {"content-type": "application/json"})
        assert r.status_code == 422, r.text


async def test_a_group_admin_recalls_anyones_message_and_a_plain_member_cannot(stack) -> None:
    api = Api(stack.base_url)
    owner, admin, member, outsider = [await api.user() for _ in range(4)]
    conv = await group_of(api, owner, admin, member)
    r = await api.http.put(f"/api/groups/{conv.removeprefix('g:')}/members/{admin.user_id}/role",
                           json={"role": "admin"}, headers=bearer(owner.access_token))
    assert r.status_code == 200, r.text
    sm, sa = await Socket.open(member.socket_url, member.access_token), await Socket.open(admin.socket_url,
                                                                                          admin.access_token)
    try:
        by_member = [(await sm.send_text(conv, f"member {i}"))["seq"] for i in range(2)]
        by_admin = (await sa.send_text(conv, "admin"))["seq"]
        assert (await recall(api, member, conv, by_admin))[0] == 403
        assert (await recall(api, outsider, conv, by_member[1]))[0] == 403
        assert (await recall(api, outsider, "g:999999999999", 1))[0] == 404
        for who, seq in ((admin, by_member[0]), (owner, by_admin)):
            status, answer = await recall(api, who, conv, seq)
            assert status == 200 and answer["changed"] is True, answer
            await sm.wait(event_frame("recall", seq))
            assert (await message(api, member, conv, seq))["recalled"] is True
        assert "recalled" not in await message(api, member, conv, by_member[1])
    finally:
        await sm.close()
        await sa.close()
        await api.close()


async def test_the_sender_edits_a_text_everyone_sees_it_edited_and_nobody_else_may(stack) -> None:
    async with chat_pair(stack.base_url) as p:
        seq = (await p.sa.send_text(p.conv, "teh first draft"))["seq"]
        path = msg_path(p.conv, seq)
        assert (await call(p.api, p.b.access_token, "PUT", path, {"body": "mine now"}))[0] == 403
        status, answer = await call(p.api, p.a.access_token, "PUT", path, {"id": "edit-1", "body": "the first draft ✍️"})
        assert status == 200 and answer["changed"] is True and answer["target"] == seq, answer
        for sock in (p.sa, p.sb):
            frames = await sock.wait(event_frame("edit", seq))
            live = next(f for f in frames if f.get("kind") == "event" and f["event"]["type"] == "edit")
            assert live["event"] == {"type": "edit", "seq": seq, "body": "the first draft ✍️"}
        for user in (p.a, p.b):
            edited = await message(p.api, user, p.conv, seq)
            assert edited["body"] == "the first draft ✍️" and edited["edited"] >= edited["ts"]
        # A repeat with the same id: the same answer; the same text again: no change, no event.
        assert await call(p.api, p.a.access_token, "PUT", path, {"id": "edit-1", "body": "something else"}) == (
            200, answer)
        same = (await call(p.api, p.a.access_token, "PUT", path, {"body": "the first draft ✍️"}))[1]
        assert same["changed"] is False and same["seq"] == 0
        # The body is a text message's: not blank, not longer than max_text_length, a JSON string.
        assert (await call(p.api, p.a.access_token, "PUT", path, {"body": " \n "}))[0] == 400
        assert (await call(p.api, p.a.access_token, "PUT", path, {"body": "x" * 4001}))[0] == 413
        for bad in ({"body": 5}, {}, {"body": "ok", "kind": "image"}, ["body"]):
            assert (await call(p.api, p.a.access_token, "PUT", path, bad))[0] == 422, bad
        assert [m["seq"] for m in await p.api.all_history(p.b.access_token, p.conv)] == [seq, answer["seq"]]


async def test_reactions_count_per_emoji_exactly_repeats_change_nothing_and_a_21st_is_refused(stack) -> None:
    async with chat_pair(stack.base_url) as p:
        seq = (await p.sa.send_text(p.conv, "react to me"))["seq"]
        for emoji in [*LOOK_ALIKES, FAMILY, FLAG, KEYCAP]:
            status, answer = await react(p.api, p.b, p.conv, seq, emoji)
            assert status == 200 and answer["changed"] is True, (emoji, answer)
        await p.sa.wait(event_frame("react", seq))
        status, first = await react(p.api, p.a, p.conv, seq, "👍", key="thumbs")
        assert status == 200 and first["changed"] is True
        assert await react(p.api, p.a, p.conv, seq, "👍", key="thumbs") == (200, first)  # the same id
        repeat = (await react(p.api, p.a, p.conv, seq, "👍"))[1]  # a new id, the same reaction
        assert repeat["changed"] is False and repeat["seq"] == 0
        counts = {"👍": 2, "👎": 1, "🍣": 1, "🍺": 1, FAMILY: 1, FLAG: 1, KEYCAP: 1}
        assert (await message(p.api, p.b, p.conv, seq))["reactions"] == counts

        # Unreact: one fewer; of a reaction not there: no change; the last one gone: the key goes.
        status, answer = await react(p.api, p.b, p.conv, seq, "👍", "DELETE")
        assert status == 200 and answer["changed"] is True
        await p.sa.wait(event_frame("unreact", seq))
        assert (await react(p.api, p.b, p.conv, seq, "👍", "DELETE"))[1]["changed"] is False
        assert (await react(p.api, p.b, p.conv, seq, "😇", "DELETE"))[1]["changed"] is False
        assert (await react(p.api, p.b, p.conv, seq, "🍺", "DELETE"))[1]["changed"] is True
        counts = {"👍": 1, "👎": 1, "🍣": 1, FAMILY: 1, FLAG: 1, KEYCAP: 1}
        assert (await message(p.api, p.a, p.conv, seq))["reactions"] == counts

        # At most 20 different emoji on a message; more of one already there is fine.
        for emoji in MORE[:20 - len(counts)]:
            assert (await react(p.api, p.a, p.conv, seq, emoji))[0] == 200, emoji
        assert (await react(p.api, p.a, p.conv, seq, "🍺"))[0] == 400
        assert (await react(p.api, p.b, p.conv, seq, MORE[0]))[1]["changed"] is True
        assert len((await message(p.api, p.a, p.conv, seq))["reactions"]) == 20

        for bad in ("", " ", "👍 ", "\u202e👍", "a\u200fb", "\x07", "x" * 17):
            assert (await react(p.api, p.a, p.conv, seq, bad))[0] == 422, repr(bad)
        stranger = await p.api.user()
        assert (await react(p.api, stranger, p.conv, seq, "👍"))[0] == 403
        assert (await react(p.api, p.a, p.conv, seq + 500, "👍"))[0] == 404
        # Across a block the blocked side changes nothing, as it sends nothing; unblocked, it may again.
        blocks = f"/api/users/me/blocks/{p.b.user_id}"
        assert (await p.api.http.put(blocks, headers=bearer(p.a.access_token))).status_code == 204
        assert (await react(p.api, p.b, p.conv, seq, "🍺", "DELETE"))[0] == 403
        assert (await p.api.http.delete(blocks, headers=bearer(p.a.access_token))).status_code == 204
        assert (await react(p.api, p.b, p.conv, seq, "👍", "DELETE"))[0] == 200


async def test_delete_for_me_leaves_a_placeholder_in_my_history_only_and_tells_my_other_sessions(stack) -> None:
    async with chat_pair(stack.base_url) as p:
        a2 = await Socket.open(p.a.socket_url, p.a.access_token)  # a second device of a
        try:
            first = (await p.sb.send_text(p.conv, "first"))["seq"]
            second = (await p.sb.send_text(p.conv, "second, regretted by a"))["seq"]
            await p.sa.wait(lambda fs: any(f.get("type") == "msg" and f["seq"] == second for f in fs))
            assert (await listed(p.api, p.a, p.conv))["unread"] == 2

            r = await p.api.http.delete(msg_path(p.conv, second), headers=bearer(p.a.access_token))
            assert r.status_code == 204, r.text
            deleted = {"type": "deleted", "conv": p.conv, "seq": second}
            for sock in (p.sa, a2):
                await sock.wait(lambda fs: deleted in fs)
            page = await p.api.all_history(p.a.access_token, p.conv)
            assert page[1] == {"type": "msg", "conv": p.conv, "seq": second, "msg_id": page[1]["msg_id"],
                               "from": p.b.user_id, "kind": "text", "body": "", "ts": page[1]["ts"], "deleted": True}
            assert page[0]["body"] == "first" and "deleted" not in page[0]
            assert (await p.api.history(p.a.access_token, p.conv, before_seq=second + 1))[1]["deleted"] is True
            theirs = await p.api.all_history(p.b.access_token, p.conv)
            assert theirs[1]["body"] == "second, regretted by a" and "deleted" not in theirs[1]
            item = await listed(p.api, p.a, p.conv)
            assert item["unread"] == 1 and item["last_message"]["seq"] == first

            # A repeat is 204 and tells nobody again; b heard nothing of it.
            r = await p.api.http.delete(msg_path(p.conv, second), headers=bearer(p.a.access_token))
            assert r.status_code == 204
            await p.sb.send_text(p.conv, "after")
            await p.sa.wait(lambda fs: any(f.get("body") == "after" for f in fs))
            assert p.sa.frames.count(deleted) == 1 and not p.sb.of_type("deleted")

            stranger = await p.api.user()
            for who, seq, status in ((stranger, first, 403), (p.a, second + 100, 404), (p.a, MAX_SEQ, 404),
                                     (p.a, MAX_SEQ + 1, 422), (p.a, 0, 422)):
                r = await p.api.http.delete(msg_path(p.conv, seq), headers=bearer(who.access_token))
                assert r.status_code == status, (seq, r.text)
            recalled = (await recall(p.api, p.b, p.conv, first))[1]
            r = await p.api.http.delete(msg_path(p.conv, recalled["seq"]), headers=bearer(p.a.access_token))
            assert r.status_code == 400  # an event stays in every history
        finally:
            await a2.close()


async def test_replies_and_mentions_travel_in_the_send_frame_and_mentioned_lasts_until_read_or_recall(stack) -> None:
    api = Api(stack.base_url)
    owner, named, other = [await api.user() for _ in range(3)]
    conv = await group_of(api, owner, named, other)
    so, sn = await Socket.open(owner.socket_url, owner.access_token), await Socket.open(named.socket_url,
                                                                                       named.access_token)
    try:
        asked = (await so.send_text(conv, "who's in?"))["seq"]
        key = uuid.uuid4().hex
        await so.send_json({"type": "send", "id": key, "conv": conv, "kind": "text", "body": "you, @named",
                            "reply_to": asked, "mentions": [named.user_id, named.user_id]})
        ack = next(f for f in await so.wait(lambda fs: any(f.get("id") == key for f in fs)) if f.get("id") == key)
        assert ack["type"] == "ack", ack
        frames = await sn.wait(lambda fs: any(f.get("type") == "msg" and f["seq"] == ack["seq"] for f in fs))
        live = next(f for f in frames if f.get("type") == "msg" and f["seq"] == ack["seq"])
        assert live["reply_to"] == asked and live["mentions"] == [named.user_id]
        stored = await message(api, other, conv, ack["seq"])
        assert stored["reply_to"] == asked and stored["mentions"] == [named.user_id]
        assert "reply_to" not in await message(api, other, conv, asked)

        mine, theirs = await listed(api, named, conv), await listed(api, other, conv)
        assert mine["mentioned"] is True and theirs["mentioned"] is False
        assert (await listed(api, owner, conv))["mentioned"] is False  # never one's own mention
        await sn.send_json({"type": "read", "conv": conv, "seq": ack["seq"]})

        async def read() -> bool:
            return (await listed(api, named, conv))["mentioned"] is False
        await eventually(read, 20, "a read clears mentioned")
        assert (await listed(api, named, conv))["unread"] == 0

        # A mention recalled before it is read: not mentioned, not unread.
        again = await so.send_text(conv, "placeholder")  # an unread one that stays
        key = uuid.uuid4().hex
        await so.send_json({"type": "send", "id": key, "conv": conv, "body": "psst @named",
                            "mentions": [named.user_id]})
        ack = next(f for f in await so.wait(lambda fs: any(f.get("id") == key for f in fs)) if f.get("id") == key)
        item = await listed(api, named, conv)
        assert (item["unread"], item["mentioned"]) == (2, True)
        assert (await recall(api, owner, conv, ack["seq"]))[0] == 200
        item = await listed(api, named, conv)
        assert (item["unread"], item["mentioned"]) == (1, False) and again["seq"] < ack["seq"]
        assert item["last_message"]["seq"] == ack["seq"] and item["last_message"]["recalled"] is True
    finally:
        await so.close()
        await sn.close()
        await api.close()


async def test_changes_over_the_budget_are_refused_with_429(stack) -> None:
    api = Api(stack.base_url)
    a, b = await api.user(), await api.user()
    sock = await Socket.open(b.socket_url, b.access_token)
    try:
        conv = f"d:{min(a.user_id, b.user_id)}:{max(a.user_id, b.user_id)}"
        seq = (await sock.send_text(conv, "delete me, again and again"))["seq"]
        path = msg_path(conv, seq)
        # Deletes-for-me and reactions share one budget (120 a minute). The embedded stack counts per
        # gateway replica (2), so go on until a reaction too is refused: at most a few windows' worth.
        statuses: list[int] = []
        reacted: list[int] = []
        for _ in range(60):
            batch = await asyncio.gather(*(api.http.delete(path, headers=bearer(a.access_token)) for _ in range(10)))
            statuses += [r.status_code for r in batch]
            reacted.append((await react(api, a, conv, seq, "👍"))[0])
            if reacted[-1] == 429 and 429 in statuses:
                break
        assert set(statuses) == {204, 429} and set(reacted) <= {200, 429} and reacted[-1] == 429, (
            sorted(set(statuses)), reacted)
        assert (await api.get("/api/conversations", a.access_token)).status_code == 200  # reads go on
    finally:
        await sock.close()
        await api.close()
