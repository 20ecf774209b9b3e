"""Hostile clients against groups and files (issue 16): a block cannot be routed around through a group,
downloads cannot run as pages of the API's origin, and one user cannot fill the storage."""

from __future__ import annotations

import asyncio
import random
import struct
import zlib

from conftest import STACK
from support import Api, Login, Socket, bearer, direct
from test_files import png

QUOTA = 1024 * 1024  # tests/conftest.py's user_storage_quota_bytes
QUIET_S = 1.5  # how long a socket must stay silent to count as "received nothing"


async def block(api: Api, blocker: Login, blocked: Login) -> None:
    r = await api.http.put(f"/api/users/me/blocks/{blocked.user_id}", headers=bearer(blocker.access_token))
    assert r.status_code == 204, r.text


async def new_group(api: Api, owner: Login, *members: Login):
    return await api.post("/api/groups", owner.access_token, {"name": "g", "members": [m.user_id for m in members]})


async def add(api: Api, adder: Login, group_id: int, *users: Login):
    return await api.post(f"/api/groups/{group_id}/members", adder.access_token,
                          {"user_ids": [u.user_id for u in users]})


def refused(r, *who: Login) -> None:
    """A 403 that names exactly the users who could not join."""
    assert r.status_code == 403, r.text
    assert r.json()["detail"].startswith(f"users {sorted(u.user_id for u in who)} cannot join this group"), r.text


async def groups_of(api: Api, user: Login) -> list[str]:
    r = await api.get("/api/conversations", user.access_token)
    assert r.status_code == 200, r.text
    return [c["conv"] for c in r.json() if c["conv"].startswith("g:")]


async def quiet(sock: Socket, from_user: int) -> None:
    """No message from `from_user` reaches `sock` within QUIET_S."""
    await asyncio.sleep(QUIET_S)
    assert not [f for f in sock.of_type("msg") if f.get("from") == from_user], sock.frames


# -- blocks and groups -------------------------------------------------------------------------


async def test_a_blocked_user_cannot_make_a_group_with_the_blocker_in_it(stack):
    api = Api(stack.base_url)
    a, b = await api.user(), await api.user()
    sb = await Socket.open(b.socket_url, b.access_token)
    await block(api, b, a)  # B blocks A

    r = await new_group(api, a, b)  # then A makes a group with B, to write to them there
    refused(r, b)
    await quiet(sb, a.user_id)
    assert await groups_of(api, a) == [] and await groups_of(api, b) == []  # nothing half-made

    refused(await new_group(api, b, a), a)  # the blocker cannot pull in whom they blocked either
    await sb.close()
    await api.close()


async def test_a_blocked_user_cannot_add_the_blocker_to_a_group_nor_have_a_member_do_it(stack):
    api = Api(stack.base_url)
    a, b, c = await api.user(), await api.user(), await api.user()
    r = await new_group(api, a, c)
    assert r.status_code == 201, r.text
    group = r.json()
    await block(api, b, a)

    refused(await add(api, a, group["id"], b), b)  # A adds B
    refused(await add(api, c, group["id"], b), b)  # A's friend C adds B for them
    d = await api.user()
    refused(await add(api, c, group["id"], d, b), b)  # B hidden among others: refused whole
    g = (await api.get(f"/api/groups/{group['id']}", c.access_token)).json()
    assert set(g["members"]) == {a.user_id, c.user_id}

    # A writes in the group: C receives it, B (never let in) does not.
    sa = await Socket.open(a.socket_url, a.access_token)
    sb = await Socket.open(b.socket_url, b.access_token)
    sc = await Socket.open(c.socket_url, c.access_token)
    assert (await sa.send_text(group["conv"], "hello group"))["type"] == "ack"
    await sc.wait(lambda fs: any(f["type"] == "msg" and f["body"] == "hello group" for f in fs))
    await quiet(sb, a.user_id)
    assert (await api.get(f"/api/conversations/{group['conv']}/messages", b.access_token)).status_code == 403
    for sock in (sa, sb, sc):
        await sock.close()
    await api.close()


async def test_nobody_can_put_the_blocked_user_where_the_blocker_is(stack):
    api = Api(stack.base_url)
    a, b, c = await api.user(), await api.user(), await api.user()
    r = await new_group(api, c, b)  # B is in C's group
    assert r.status_code == 201, r.text
    group = r.json()
    await block(api, b, a)
    refused(await add(api, c, group["id"], a), a)  # A brought in next to B
    refused(await new_group(api, c, a, b), a, b)  # or a new group with both
    assert await groups_of(api, a) == []
    await api.close()


async def test_a_block_keeps_both_out_of_each_others_groups_until_it_is_lifted(stack):
    api = Api(stack.base_url)
    a, b, c = await api.user(), await api.user(), await api.user()
    r = await new_group(api, c, a, b)  # they shared a group before the block
    assert r.status_code == 201, r.text
    gid = r.json()["id"]
    await block(api, b, a)
    g = (await api.get(f"/api/groups/{gid}", c.access_token)).json()
    assert set(g["members"]) == {c.user_id, a.user_id, b.user_id}  # a block removes nobody
    r = await api.http.delete(f"/api/groups/{gid}/members/{b.user_id}", headers=bearer(b.access_token))
    assert r.status_code == 204  # the blocker leaves
    refused(await add(api, a, gid, b), b)  # and is not pulled back in
    refused(await add(api, c, gid, b), b)
    r = await api.http.delete(f"/api/users/me/blocks/{a.user_id}", headers=bearer(b.access_token))
    assert r.status_code == 204
    r = await add(api, c, gid, b)  # unblocked: the rule is the block, nothing else
    assert r.status_code == 200 and b.user_id in r.json()["members"], r.text
    await api.close()


async def test_a_block_hides_the_blocked_users_messages_in_a_group_they_already_shared(stack):
    """B blocks A after both joined C's group: A stays, but reaches B no more — live, in history and in
    the conversation list B gets A's messages hidden (place kept, content gone), and no typing of A's."""
    api = Api(stack.base_url)
    a, b, c = await api.user(), await api.user(), await api.user()
    r = await new_group(api, c, a, b)
    assert r.status_code == 201, r.text
    conv = r.json()["conv"]
    sa, sb, sc = [await Socket.open(u.socket_url, u.access_token) for u in (a, b, c)]
    try:
        assert (await sa.send_text(conv, "before the block"))["type"] == "ack"
        await sb.wait(lambda fs: any(f.get("body") == "before the block" for f in fs))
        await block(api, b, a)
        await sa.send_json({"type": "typing", "conv": conv})
        secret = await sa.send_text(conv, "secret for b")
        assert secret["type"] == "ack", secret  # A still writes to the group
        assert (await sc.send_text(conv, "from c"))["type"] == "ack"
        await sc.wait(lambda fs: any(f.get("body") == "secret for b" for f in fs))  # C reads A as before
        frames = await sb.wait(lambda fs: any(f.get("body") == "from c" for f in fs))
        live = [f for f in frames if f["type"] == "msg" and f["conv"] == conv]
        assert [m["seq"] for m in live] == [2, 3, 4]  # gap-free (seq 1: the "created" event, before the sockets)
        assert live[1] == {"type": "msg", "conv": conv, "seq": 3, "msg_id": secret["msg_id"], "from": a.user_id,
                           "kind": "text", "body": "", "ts": secret["ts"], "hidden": True}
        await asyncio.sleep(QUIET_S)
        assert not [f for f in sb.frames if f["type"] == "typing" and f["user_id"] == a.user_id], sb.frames
        assert "secret for b" not in str(sb.frames)

        assert (await sa.send_text(conv, "last word"))["type"] == "ack"
        for page in (await api.all_history(b.access_token, conv),
                     await api.history(b.access_token, conv, before_seq=6)):
            assert [m["seq"] for m in page] == [1, 2, 3, 4, 5]
            # History shows the reader's block as it stands: A's earlier message is hidden too (and the
            # group's "created" event, made by C, is there for everyone).
            assert [m.get("hidden", False) for m in page] == [False, True, True, False, True]
            assert [m["body"] for m in page] == ["", "", "", "from c", ""]
            assert page[0]["event"]["type"] == "created"
        listed = {i["conv"]: i for i in (await api.get("/api/conversations", b.access_token)).json()}
        assert listed[conv]["last_message"]["hidden"] is True and listed[conv]["last_message"]["body"] == ""
        assert [m["body"] for m in await api.all_history(c.access_token, conv) if m["kind"] == "text"][1:] == [
            "secret for b", "from c", "last word"]

        r = await api.http.delete(f"/api/users/me/blocks/{a.user_id}", headers=bearer(b.access_token))
        assert r.status_code == 204
        assert [m["body"] for m in await api.all_history(b.access_token, conv) if m["kind"] == "text"] == [
            "before the block", "secret for b", "from c", "last word"]
        assert (await sa.send_text(conv, "unblocked"))["type"] == "ack"
        await sb.wait(lambda fs: any(f.get("body") == "unblocked" for f in fs))
    finally:
        for s in (sa, sb, sc):
            await s.close()
        await api.close()


# -- files -------------------------------------------------------------------------------------

PAGE = b"<!doctype html><html><body><script>fetch('/api/users/me')</script></body></html>\n"


async def upload(api: Api, user: Login, name: str, data: bytes):
    return await api.http.post("/api/files", files={"file": (name, data, "text/html")},
                               headers=bearer(user.access_token))


async def download(api: Api, user: Login, file_id: str):
    """The response that carries the bytes (the object store's, after the redirect, on the real stack),
    and the first one (the API's own)."""
    first = await api.http.get(f"/api/files/{file_id}", headers=bearer(user.access_token))
    if STACK == "real":
        assert first.status_code == 307, first.text
        return await api.http.get(first.headers["location"]), first
    assert first.status_code == 200, first.text
    return first, first


async def test_a_downloaded_page_is_an_attachment_that_cannot_run(stack):
    api = Api(stack.base_url)
    a = await api.user()
    r = await upload(api, a, "invite.html", PAGE)
    assert r.status_code == 201 and r.json()["content_type"] == "text/plain", r.text
    got, first = await download(api, a, r.json()["file_id"])
    assert got.status_code == 200 and got.content == PAGE
    assert got.headers["content-type"].startswith("text/plain")
    assert got.headers.get("content-disposition", "").startswith('attachment; filename="invite.html"'), got.headers
    # The API's own answer (the bytes, or the redirect) is never sniffed and sandboxed as a page.
    assert first.headers.get("x-content-type-options") == "nosniff", first.headers
    assert first.headers.get("content-security-policy") == "sandbox; default-src 'none'", first.headers
    await api.close()


async def test_a_downloaded_image_may_show_inline(stack):
    api = Api(stack.base_url)
    a = await api.user()
    r = await api.http.post("/api/files", files={"file": ("cat.png", png(seed=5), "image/png")},
                            headers=bearer(a.access_token))
    assert r.status_code == 201, r.text
    got, first = await download(api, a, r.json()["file_id"])
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert got.headers.get("content-disposition", "").startswith('inline; filename="cat.png"'), got.headers
    assert first.headers.get("x-content-type-options") == "nosniff"
    await api.close()


async def test_uploads_past_a_users_quota_get_413_and_are_not_kept(stack):
    api = Api(stack.base_url)
    a, b = await api.user(), await api.user()
    quarter = b"q" * (QUOTA // 4)  # a quarter of the quota (under max_upload_bytes)
    ids = []
    for i in range(4):  # exactly the quota
        r = await upload(api, a, f"part{i}.txt", quarter)
        assert r.status_code == 201, r.text
        ids.append(r.json()["file_id"])
    r = await upload(api, a, "one-more.txt", b"x")
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == (f"storage quota exceeded: your uploads may take {QUOTA} bytes in all, "
                                  f"{QUOTA} are taken and this upload has 1")
    avatar = await api.http.put("/api/users/me/avatar", content=png(), headers={**bearer(a.access_token),
                                                                               "Content-Type": "image/png"})
    assert avatar.status_code == 413 and avatar.json()["detail"].startswith("storage quota exceeded")
    assert (await api.get("/api/users/me", a.access_token)).json()["avatar_url"] is None
    got, _ = await download(api, a, ids[0])  # what was stored stays readable
    assert got.status_code == 200 and got.content == quarter
    assert (await upload(api, b, "other.txt", quarter)).status_code == 201  # per user, not global
    assert stack.settings.user_storage_quota_bytes == QUOTA
    await api.close()


async def test_concurrent_uploads_cannot_overshoot_the_quota_together(stack):
    api = Api(stack.base_url)
    a = await api.user()
    fifth = b"f" * (QUOTA // 5)
    results = await asyncio.gather(*[upload(api, a, f"c{i}.txt", fifth) for i in range(8)])
    codes = sorted(r.status_code for r in results)
    assert codes == [201] * 5 + [413] * 3, [r.text for r in results]
    await api.close()


async def test_deleting_an_upload_gives_its_room_back_and_only_its_owner_may(stack):
    api = Api(stack.base_url)
    a, b = await api.user(), await api.user()
    quarter = b"h" * (QUOTA // 4)  # max_upload_bytes
    ids = []
    for i in range(4):
        r = await upload(api, a, f"quarter{i}.txt", quarter)
        assert r.status_code == 201, r.text
        ids.append(r.json()["file_id"])
    assert (await upload(api, a, "over.txt", b"x")).status_code == 413
    sock = await Socket.open(a.socket_url, a.access_token)
    try:  # shared with b, so b may read it until it is deleted
        sent = await sock.request({"type": "send", "id": "f1", "conv": direct(a.user_id, b.user_id), "kind": "file",
                                   "file_id": ids[0], "body": ""}, "ack")
        assert sent["seq"] == 1, sent
    finally:
        await sock.close()
    assert (await download(api, b, ids[0]))[0].status_code == 200
    r = await api.http.delete(f"/api/files/{ids[0]}", headers=bearer(b.access_token))
    assert r.status_code == 403, r.text  # a reader is not the owner
    for ask in (f"/api/files/{'z' * 24}", f"/api/files/{'z' * 300}"):
        assert (await api.http.delete(ask, headers=bearer(a.access_token))).status_code == 404
    assert (await api.http.delete(f"/api/files/{ids[0]}")).status_code == 401
    r = await api.http.delete(f"/api/files/{ids[0]}", headers=bearer(a.access_token))
    assert r.status_code == 204, r.text
    assert (await api.http.delete(f"/api/files/{ids[0]}", headers=bearer(a.access_token))).status_code == 404
    for reader in (a, b):
        r = await api.http.get(f"/api/files/{ids[0]}", headers=bearer(reader.access_token))
        assert r.status_code == 404, r.text
    assert [m.get("file_id") for m in await api.all_history(b.access_token, direct(a.user_id, b.user_id))] == [ids[0]]
    assert (await upload(api, a, "fits-again.txt", quarter)).status_code == 201  # the room came back
    await api.close()


def big_png(seed: int) -> bytes:
    """A valid PNG of ~60 KB (under tests/conftest.py's 64 KiB avatar limit) that does not compress."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    width, height = 100, 200
    rows = random.Random(seed).randbytes(width * 3 * height)
    raw = b"".join(b"\x00" + rows[y * width * 3:(y + 1) * width * 3] for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


async def test_a_new_avatar_frees_the_room_of_the_one_it_replaces(stack):
    api = Api(stack.base_url)
    a = await api.user()
    times = QUOTA // len(big_png(0)) + 3  # more avatars than the quota holds, had each stayed
    for i in range(times):
        r = await api.http.put("/api/users/me/avatar", content=big_png(i),
                               headers={**bearer(a.access_token), "Content-Type": "image/png"})
        assert r.status_code == 200, (i, r.text)
    r = await api.http.get(f"/api/users/{a.user_id}/avatar", headers=bearer(a.access_token))
    assert r.status_code in (200, 307), r.text
    await api.close()
