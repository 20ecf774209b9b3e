"""Bad input gets a precise error and loses nothing; the session stays usable."""

from __future__ import annotations

import uuid

import orjson
from support import PASSWORD, Api, Socket, direct, in_chat_pair, one_per_node, unique


async def test_bad_frames_get_error_frames_and_the_session_survives(stack):
    limit = stack.settings.socket_max_frame_bytes

    async def scenario(api, a, b, sa, sb, conv):
        await sa.send_text(conv, "before")

        def send(**fields):
            return {"type": "send", "id": uuid.uuid4().hex, "conv": conv, "kind": "text", "body": "x", **fields}

        cases = [
            ("{not json", "bad_request", None),
            ("[1, 2, 3]", "bad_request", None),
            ('{"type": "shout", "conv": "x"}', "bad_request", None),
            ('{"conv": "x"}', "bad_request", None),
            (orjson.dumps({"type": "send", "id": "m1", "conv": conv}).decode(), "bad_request", "m1"),  # no body
            (orjson.dumps({"type": "send", "id": "m2", "kind": "text", "body": "x"}).decode(), "bad_request", "m2"),
            (orjson.dumps(send(id="m3", body=42)).decode(), "bad_request", "m3"),
            (orjson.dumps(send(id="m4", kind="video")).decode(), "bad_request", "m4"),
            (orjson.dumps({"type": "read", "conv": conv, "seq": "7"}).decode(), "bad_request", None),
            (orjson.dumps({"type": "read", "conv": conv, "seq": -1}).decode(), "bad_request", None),
            (orjson.dumps(send(id="x" * 65)).decode(), "bad_request", None),
            (orjson.dumps(send(id="m5", body=" ")).decode(), "bad_request", "m5"),
            (orjson.dumps(send(id="m6", conv="d:2:1")).decode(), "bad_request", "m6"),
            (orjson.dumps(send(id="m7", conv="room:7")).decode(), "bad_request", "m7"),
            (orjson.dumps(send(id="m8", conv="g:abc")).decode(), "bad_request", "m8"),
            (orjson.dumps(send(id="m9", body="y" * (stack.settings.max_text_length + 1))).decode(), "too_large",
             "m9"),
            (orjson.dumps(send(id="m10", body="z" * (limit + 10))).decode(), "too_large", None),
            (orjson.dumps({"type": "auth", "token": a.access_token}).decode(), "bad_request", None),
        ]
        for raw, code, client_id in cases:
            before = len(sa.frames)
            await sa.send_raw(raw)
            frames = await sa.wait(lambda fs, before=before: any(f["type"] == "error" for f in fs[before:]))
            error = next(f for f in frames[before:] if f["type"] == "error")
            assert error["code"] == code, (raw[:80], error)
            assert error["message"], raw[:80]
            if client_id is not None:
                assert error.get("id") == client_id, (raw[:80], error)
        await sa.send_raw(b"\x00binary")
        frames = await sa.wait(lambda fs: fs[-1]["type"] == "error" and "binary" in fs[-1]["message"])
        # Still the same live session: ping and a real message work.
        assert (await sa.request({"type": "ping"}, "pong")) == {"type": "pong"}
        after = await sa.send_text(conv, "after")
        assert after["type"] == "ack" and after["seq"] == 2  # nothing in between was stored
        history = await api.history(b.access_token, conv, after_seq=0)
        assert [m["body"] for m in history] == ["before", "after"]
        got = await sb.wait(lambda fs: len([f for f in fs if f["type"] == "msg"]) == 2)
        assert [f["body"] for f in got if f["type"] == "msg"] == ["before", "after"]

    await in_chat_pair(stack.base_url, scenario)


async def test_nobody_reads_or_writes_a_conversation_they_are_not_in(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    outsider = await api.user()
    conv = direct(a.user_id, b.user_id)
    sa = await Socket.open(a.socket_url, a.access_token)
    await sa.send_text(conv, "private")
    so = await Socket.open(outsider.socket_url, outsider.access_token)
    err = await so.send_text(conv, "let me in")
    assert err["type"] == "error" and err["code"] == "forbidden"
    r = await api.get(f"/api/conversations/{conv}/messages", outsider.access_token)
    assert r.status_code == 403
    await so.send_json({"type": "read", "conv": conv, "seq": 1})
    err = await so.wait(lambda fs: any(f["type"] == "error" for f in fs[1:]))
    assert [f["code"] for f in err if f["type"] == "error"][-1] == "forbidden"

    group = (await api.post("/api/groups", a.access_token, {"name": "inner", "members": [b.user_id]})).json()
    err = await so.send_text(group["conv"], "hi group")
    assert err["code"] == "forbidden"
    assert (await api.get(f"/api/conversations/{group['conv']}/messages", outsider.access_token)
            ).status_code == 403
    assert (await api.get(f"/api/groups/{group['id']}", outsider.access_token)).status_code == 403
    # Unknown conversations: not_found on the socket, 404 over HTTP.
    err = await so.send_text("g:999999999", "anyone?")
    assert err["code"] == "not_found"
    assert (await api.get("/api/conversations/g:999999999/messages", outsider.access_token)).status_code == 404
    err = await so.send_text(direct(outsider.user_id, 999999999), "ghost")
    assert err["code"] == "not_found"
    # Nothing of it was stored; the outsider's session still works.
    assert [m["body"] for m in await api.history(a.access_token, conv, after_seq=0)] == ["private"]
    assert (await so.request({"type": "ping"}, "pong")) == {"type": "pong"}
    await sa.close()
    await so.close()
    await api.close()


async def test_bad_http_requests_are_4xx(stack):
    api = Api(stack.base_url)
    login = await api.user()
    auth = {"Authorization": f"Bearer {login.access_token}", "Content-Type": "application/json"}
    r = await api.http.post("/api/groups", content=b"{broken", headers=auth)
    assert r.status_code == 422
    r = await api.http.post("/api/groups", json={"name": "", "members": []}, headers=auth)
    assert r.status_code == 422
    r = await api.http.post("/api/groups", json={"name": "g", "members": ["7"]}, headers=auth)
    assert r.status_code == 422
    r = await api.http.post("/api/groups", json={"name": "g", "members": [999999999]}, headers=auth)
    assert r.status_code == 422 and "999999999" in r.json()["detail"]
    big = b'{"name": "' + b"x" * (stack.settings.max_body_bytes + 1) + b'"}'
    r = await api.http.post("/api/groups", content=big, headers=auth)
    assert r.status_code == 413
    r = await api.get("/api/conversations/not-a-conv/messages", login.access_token)
    assert r.status_code == 400 and "conversation id" in r.json()["detail"]
    r = await api.get("/api/conversations/d:1:2/messages", login.access_token, limit=201)
    assert r.status_code == 422
    r = await api.get("/api/conversations/d:1:2/messages", login.access_token, after_seq="x")
    assert r.status_code == 422
    r = await api.get("/api/groups/abc", login.access_token)
    assert r.status_code == 422
    r = await api.http.post("/api/users", content=b"\xff\xfe", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    for nickname in ("bell\u0007", "evil\u202eredro", "nul\u0000"):  # the same rule as a later edit
        r = await api.http.post("/api/users", json={"username": unique(), "password": PASSWORD, "nickname": nickname})
        assert r.status_code == 422 and "nickname may not contain" in r.json()["detail"], r.text
    await api.close()
