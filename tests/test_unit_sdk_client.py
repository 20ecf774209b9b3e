"""ImrayClient against a scripted fake imray (a WebSocket server on 127.0.0.1 and a mocked HTTP API, no
Ray): resends with the same id, own messages, gap fill, 4002, wrong_node, silence and garbage, and the
catch-up over the socket (issue 21) with its fallbacks to history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from imray.client import ErrorEvent, ImrayClient, ImrayError, Message, Tokens

USER = 2
CONV = "d:1:2"
Script = Callable[[int, ServerConnection], Awaitable[None]]  # (connection number from 0, connection)


class FakeHttp:
    """The HTTP side: a conversation list, a history to serve, the token endpoint and assign."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.url = ""
        self.refreshes = 0
        self.refuse_refresh = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append(path)
        if path == "/api/conversations":
            last: dict[str, int] = {}
            for m in self.history:
                last[m["conv"]] = max(last.get(m["conv"], 0), m["seq"])
            return httpx.Response(200, json=[{"conv": conv, "last_seq": seq, "cursor": "c"}
                                             for conv, seq in last.items()])
        if path.endswith("/messages"):
            conv, after = path.split("/")[-2], int(request.url.params.get("after_seq", 0))
            return httpx.Response(200, json={"messages": [m for m in self.history
                                                          if m["conv"] == conv and m["seq"] > after]})
        if path == "/oauth2/token":
            if self.refuse_refresh:
                return httpx.Response(400, json={"error": "invalid_grant"})
            self.refreshes += 1
            return httpx.Response(200, json=tokens(f"t{self.refreshes + 1}", self.url).raw)
        if path == "/api/socket/assign":
            return httpx.Response(200, json={"socket_url": self.url, "socket_node": "sn-2",
                                             "access_token": "assigned", "expires_in": 900})
        return httpx.Response(404, json={"detail": "not here"})


def tokens(access: str, url: str) -> Tokens:
    return Tokens.from_response({"user_id": USER, "access_token": access, "refresh_token": f"r-{access}",
                                 "expires_in": 900, "socket_url": url, "socket_node": "sn-1"})


def msg(seq: int, sender: int = 1, conv: str = CONV) -> dict[str, Any]:
    return {"type": "msg", "conv": conv, "seq": seq, "msg_id": f"m{seq}", "from": sender, "kind": "text",
            "body": f"b{seq}", "ts": seq}


async def auth(ws: ServerConnection) -> str:
    """Read the auth frame, answer auth_ok; the token it carried."""
    return str((await auth_frame(ws))["token"])


async def auth_frame(ws: ServerConnection) -> dict[str, Any]:
    """Read the auth frame, answer auth_ok (with batch, as imray does when asked); the frame."""
    frame = json.loads(await ws.recv())
    await ws.send(json.dumps({"type": "auth_ok", "user_id": USER, "node": "sn-1", "session": "0" * 16,
                              "batch": True}))
    return dict(frame)


AUTH_OK = {"type": "auth_ok", "user_id": USER, "node": "sn-1", "session": "0" * 16, "batch": True}


async def answer_resume(ws: ServerConnection, http: FakeHttp, truncate: int | None = None,
                        refuse: tuple[str, ...] = (), fail: str | None = None) -> dict[str, Any]:
    """Read the auth frame and answer it as imray does, the catch-up from the fake's history included:
    with `seen` in it, auth_ok, the missed msg frames and resume_ok in one message; with `resume`,
    auth_ok, then the same for the resume frame that follows (the first line of the next message).
    `fail`: an error frame with no id instead of the catch-up; `truncate` caps each conversation's
    catch-up; `refuse` names conversations refused. Returns the frame that carried `seen`."""
    auth = json.loads(await ws.recv())
    assert auth["type"] == "auth" and ("seen" in auth) != bool(auth.get("resume")), auth
    first = [AUTH_OK]
    if "seen" in auth:
        asked = auth
    else:
        await ws.send(json.dumps(AUTH_OK))
        first, asked = [], json.loads(str(await ws.recv()).split("\n")[0])
        assert asked["type"] == "resume"
    if fail is not None:
        code = "internal" if fail.startswith("catch-up") or "seen" in auth else "bad_request"
        await ws.send("\n".join(json.dumps(f) for f in [*first, {"type": "error", "code": code, "message": fail}]))
        return dict(asked)
    frames: list[dict[str, Any]] = []
    caught: dict[str, int] = {}
    truncated: list[str] = []
    refused = {conv: "forbidden" for conv in refuse if conv in asked["seen"]}
    for conv, after in asked["seen"].items():
        if conv in refused:
            continue
        missed = [m for m in http.history if m["conv"] == conv and m["seq"] > after]
        if truncate is not None and len(missed) > truncate:
            missed, truncated = missed[:truncate], [*truncated, conv]
        frames += missed
        caught[conv] = missed[-1]["seq"] if missed else after
    summary = {"type": "resume_ok", "caught": caught, "truncated": truncated, "refused": refused}
    await ws.send("\n".join(json.dumps(f) for f in [*first, *frames, summary]))
    return dict(asked)


@asynccontextmanager
async def fake_imray(script: Script, **options: Any) -> AsyncIterator[tuple[ImrayClient, FakeHttp, list[Any]]]:
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        number, connections = connections, connections + 1
        try:
            await script(number, ws)
        except ConnectionClosed:
            pass

    http = FakeHttp()
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"
        http.url = url
        client = ImrayClient("http://imray.test", tokens("t1", url), gap_wait=0.2, backoff_base=0.05,
                             backoff_cap=0.2, **options)
        client.api.http = httpx.AsyncClient(base_url="http://imray.test", transport=httpx.MockTransport(http.handle))
        events: list[Any] = []
        for kind in ("message", "error", "state"):
            client.on(kind, events.append)
        try:
            yield client, http, events
        finally:
            await client.close()


def delivered(events: list[Any]) -> list[tuple[int, int]]:
    return [(e.seq, e.from_) for e in events if isinstance(e, Message)]


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while True:
            if check():
                return
            await asyncio.sleep(0.02)


async def test_a_send_unacked_when_the_socket_drops_is_resent_with_the_same_id_and_becomes_an_own_message():
    seen_ids: list[str] = []

    async def script(number: int, ws: ServerConnection) -> None:
        await auth(ws)
        send = json.loads(await ws.recv())
        seen_ids.append(send["id"])
        if number == 0:
            await ws.close(1011)  # stored, say, but the ack never made it
            return
        await ws.send(json.dumps({"type": "ack", "id": send["id"], "conv": CONV, "seq": 1, "msg_id": "m1",
                                  "ts": 5}))
        await ws.wait_closed()

    async with fake_imray(script) as (client, _, events):
        await client.connect(seen={})
        ack = await asyncio.wait_for(client.send(CONV, "hi"), 5)
        assert (ack.seq, ack.msg_id) == (1, "m1")
        assert len(seen_ids) == 2 and seen_ids[0] == seen_ids[1]
        await until(lambda: delivered(events) == [(1, USER)])
        assert [e.state for e in events if e.type == "state"] == ["connecting", "connected", "reconnecting",
                                                                   "connected"]


async def test_a_gap_live_frames_leave_open_is_filled_from_history_then_the_held_frames_follow():
    async def script(number: int, ws: ServerConnection) -> None:
        await auth(ws)
        for seq in (1, 3, 4):
            await ws.send(json.dumps(msg(seq)))
        await ws.wait_closed()

    async with fake_imray(script) as (client, http, events):
        await client.connect(seen={})
        http.history = [msg(1), msg(2), msg(3), msg(4)]  # written after the catch-up: only the gap fill reads it
        await until(lambda: [s for s, _ in delivered(events)] == [1, 2, 3, 4])
        assert client.seen == {CONV: 4}


async def test_an_expired_token_close_renews_the_token_and_connects_again_with_the_new_one():
    tokens_seen: list[str] = []

    async def script(number: int, ws: ServerConnection) -> None:
        tokens_seen.append(await auth(ws))
        if number == 0:
            await ws.send(json.dumps({"type": "error", "code": "token_expired", "message": "token expired"}))
            await ws.close(4002)
            return
        await ws.wait_closed()

    async with fake_imray(script) as (client, http, events):
        await client.connect(seen={})
        await until(lambda: len(tokens_seen) == 2 and client.state == "connected")
        assert tokens_seen == ["t1", "t2"] and http.refreshes == 1
        assert client.refresh_token == "r-t2"
        assert not [e for e in events if isinstance(e, ErrorEvent)]  # handled, not the app's business


async def test_wrong_node_without_a_url_gets_a_fresh_pin_from_assign():
    async def script(number: int, ws: ServerConnection) -> None:
        frame = json.loads(await ws.recv())
        if frame["token"] == "t1":
            await ws.send(json.dumps({"type": "error", "code": "wrong_node", "socket_url": None,
                                      "message": "your node is gone: POST /api/socket/assign"}))
            await ws.close(4003)
            return
        await ws.send(json.dumps({"type": "auth_ok", "user_id": USER, "node": "sn-2", "session": "1" * 16}))
        await ws.wait_closed()

    async with fake_imray(script) as (client, http, _):
        await client.connect(seen={})
        assert "/api/socket/assign" in http.calls
        assert (client.access_token, client.socket_node) == ("assigned", "sn-2")


async def test_a_server_that_stops_answering_pings_is_left_for_a_new_connection():
    async def script(number: int, ws: ServerConnection) -> None:
        await auth(ws)
        async for raw in ws:
            if number > 0 and json.loads(raw)["type"] == "ping":
                await ws.send('{"type":"pong"}')  # the second connection answers; the first stays silent

    async with fake_imray(script, ping_interval=0.2) as (client, _, events):
        await client.connect(seen={})
        await until(lambda: [e.state for e in events if e.type == "state"].count("connected") == 2)
        await asyncio.sleep(0.6)  # a few pings answered: the connection is kept
        assert [e.state for e in events if e.type == "state"].count("connected") == 2


async def test_a_server_answering_garbage_gives_an_error_event_and_connect_times_out_instead_of_hanging():
    async def script(number: int, ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send("<html>certainly not imray</html>")
        await ws.wait_closed()

    async with fake_imray(script) as (client, _, events):
        with pytest.raises(ImrayError) as failed:
            await client.connect(seen={}, timeout=1.0)
        assert failed.value.code == "timeout" and client.state == "closed"
        assert any(isinstance(e, ErrorEvent) and e.code == "bad_frame" for e in events)


async def test_a_refused_send_fails_with_its_error_code_and_a_send_after_close_is_refused():
    async def script(number: int, ws: ServerConnection) -> None:
        await auth(ws)
        send = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "error", "id": send["id"], "code": "forbidden", "message": "blocked"}))
        await ws.wait_closed()

    async with fake_imray(script) as (client, _, _):
        await client.connect(seen={})
        with pytest.raises(ImrayError) as refused:
            await asyncio.wait_for(client.send(CONV, "hi"), 5)
        assert (refused.value.code, refused.value.message) == ("forbidden", "blocked")
        await client.close()
        with pytest.raises(ImrayError) as closed:
            await client.send(CONV, "again")
        assert closed.value.code == "closed"


async def test_a_move_frame_takes_the_client_to_the_named_node_with_the_token_it_carries():
    tokens_seen: list[str] = []
    url = ""

    async def script(number: int, ws: ServerConnection) -> None:
        tokens_seen.append(await auth(ws))
        if number == 0:
            await ws.send(json.dumps({"type": "move", "socket_url": url, "socket_node": "sn-3",
                                      "access_token": "moved", "expires_in": 600}))
        await ws.wait_closed()

    async with fake_imray(script) as (client, http, events):
        url = http.url
        await client.connect(seen={})
        await until(lambda: len(tokens_seen) == 2 and client.state == "connected")
        assert tokens_seen == ["t1", "moved"] and client.socket_node == "sn-3"
        await asyncio.sleep(0.1)  # the old socket closed after the new one was in: never "reconnecting"
        assert [e.state for e in events if e.type == "state"] == ["connecting", "connected"]


async def test_a_revoked_login_closes_the_client_with_an_error_event_and_no_retry():
    connections = 0

    async def script(number: int, ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await auth(ws)
        await ws.send(json.dumps({"type": "error", "code": "unauthorized", "message": "this login was revoked"}))
        await ws.close(4001)

    async with fake_imray(script) as (client, http, events):
        http.refuse_refresh = True
        await client.connect(seen={})
        await until(lambda: any(e.type == "state" and e.state == "closed" for e in events))
        assert [(e.code, e.message) for e in events if isinstance(e, ErrorEvent)] == [
            ("unauthorized", "this login was revoked")]
        await asyncio.sleep(0.3)
        assert connections == 1


OTHER, THIRD = "g:7", "g:8"


def missed_while_away(http: FakeHttp) -> None:
    """Three conversations the client has up to seq 1, with 2 and 3 missed in each."""
    http.history = [msg(seq, conv=conv) for conv in (CONV, OTHER, THIRD) for seq in (1, 2, 3)]


async def test_a_reconnect_names_each_known_conversation_with_its_seen_seq_in_the_auth_frame():
    resumes: list[dict[str, Any]] = []

    async def script(number: int, ws: ServerConnection) -> None:
        resumes.append(await answer_resume(ws, http))
        if number == 0:
            await ws.send(json.dumps(msg(2)))
            await ws.close(1011)
            return
        await ws.wait_closed()

    async with fake_imray(script) as (client, http, _):
        await client.connect(seen={CONV: 1, OTHER: 5})
        await until(lambda: len(resumes) == 2)
        assert resumes[0] == {"type": "auth", "token": "t1", "batch": True, "seen": {OTHER: 5, CONV: 1}}
        assert [list(r["seen"].items()) for r in resumes] == [[(OTHER, 5), (CONV, 1)], [(CONV, 2), (OTHER, 5)]]


async def test_too_many_conversations_for_the_auth_frame_go_in_a_resume_frame_at_most_1000_the_most_recent():
    resumes: list[dict[str, Any]] = []

    async def script(number: int, ws: ServerConnection) -> None:
        resumes.append(await answer_resume(ws, http))
        await ws.wait_closed()

    async with fake_imray(script) as (client, http, _):
        await client.connect(seen={f"g:{n}": n for n in range(1, 1201)})  # the last given counts as newest
        await until(lambda: len(resumes) == 1)
        assert resumes[0]["type"] == "resume"  # 1,000 of them would not fit in the 4 KiB before auth_ok
        assert sorted(resumes[0]["seen"]) == sorted(f"g:{n}" for n in range(201, 1201))


async def test_without_a_known_conversation_auth_asks_no_resume_and_the_list_finds_the_new_ones():
    frames: list[dict[str, Any]] = []

    async def script(number: int, ws: ServerConnection) -> None:
        frames.append(await auth_frame(ws))
        await ws.wait_closed()

    async with fake_imray(script) as (client, http, events):
        http.history = [msg(1), msg(2)]
        await client.connect(seen={})
        await until(lambda: [s for s, _ in delivered(events)] == [1, 2])
        assert frames == [{"type": "auth", "token": "t1", "batch": True}]


async def test_messages_missed_while_away_come_over_the_socket_once_in_order_with_no_history_read():
    async def script(number: int, ws: ServerConnection) -> None:
        if number == 0:
            await auth_frame(ws)
            await ws.close(1011)
            return
        await answer_resume(ws, http)
        for seq in (3, 4):  # live: 3 again (the catch-up carried it), then a new one
            await ws.send(json.dumps(msg(seq)))
        await ws.wait_closed()

    async with fake_imray(script) as (client, http, events):
        http.history = [msg(1)]
        await client.connect(seen={CONV: 1})
        http.history = [msg(1), msg(2), msg(3)]
        http.calls.clear()
        await until(lambda: [s for s, _ in delivered(events)] == [2, 3, 4])
        await asyncio.sleep(0.3)
        assert [s for s, _ in delivered(events)] == [2, 3, 4]
        assert not [c for c in http.calls if c.endswith("/messages")]


async def test_a_truncated_catch_up_goes_on_through_history_from_where_the_socket_stopped():
    async def script(number: int, ws: ServerConnection) -> None:
        await answer_resume(ws, http, truncate=2)
        await ws.wait_closed()

    async with fake_imray(script) as (client, http, events):
        http.history = [msg(seq) for seq in range(1, 8)]
        await client.connect(seen={CONV: 1})
        await until(lambda: [s for s, _ in delivered(events)] == [2, 3, 4, 5, 6, 7])
        assert [c for c in http.calls if c.endswith("/messages")] == [f"/api/conversations/{CONV}/messages"]


async def test_a_conversation_the_resume_refuses_is_left_out_of_the_next_resume():
    resumes: list[dict[str, Any]] = []

    async def script(number: int, ws: ServerConnection) -> None:
        resumes.append(await answer_resume(ws, http, refuse=(OTHER,)))
        if number == 0:
            await ws.close(1011)
            return
        await ws.wait_closed()

    async with fake_imray(script) as (client, http, events):
        await client.connect(seen={CONV: 0, OTHER: 3})
        await until(lambda: len(resumes) == 2)
        assert [r["seen"] for r in resumes] == [{OTHER: 3, CONV: 0}, {CONV: 0}]
        assert not [e for e in events if isinstance(e, ErrorEvent)]


async def test_a_server_that_closes_an_auth_frame_with_seen_as_too_big_gets_a_resume_frame_next_time():
    asked: list[dict[str, Any]] = []

    async def script(number: int, ws: ServerConnection) -> None:
        if number == 0:  # a server whose operator lowered the cap before auth_ok
            asked.append(json.loads(await ws.recv()))
            await ws.close(1009)
            return
        asked.append(await answer_resume(ws, http))
        await ws.wait_closed()

    async with fake_imray(script) as (client, http, events):
        http.history = [msg(1), msg(2)]
        await client.connect(seen={CONV: 1})
        await until(lambda: [s for s, _ in delivered(events)] == [2])
        assert [(a["type"], a.get("seen")) for a in asked] == [("auth", {CONV: 1}), ("resume", {CONV: 1})]


@pytest.mark.parametrize("failure", ["no resume frame in time: read what you missed from history",
                                     "catch-up failed: read what you missed from history"])
async def test_when_the_catch_up_over_the_socket_fails_every_conversation_is_caught_up_from_history(failure):
    async def script(number: int, ws: ServerConnection) -> None:
        await answer_resume(ws, http, fail=failure)
        await ws.wait_closed()

    async with fake_imray(script) as (client, http, events):
        missed_while_away(http)
        await client.connect(seen={CONV: 1, OTHER: 1, THIRD: 1})
        await until(lambda: len(delivered(events)) == 6)
        assert sorted((e.conv, e.seq) for e in events if isinstance(e, Message)) == [
            (conv, seq) for conv in sorted((CONV, OTHER, THIRD)) for seq in (2, 3)]
        assert not [e for e in events if isinstance(e, ErrorEvent)]  # the SDK's business, not the app's


async def test_a_reconnect_costs_one_http_request_instead_of_one_per_conversation_that_moved():
    resume_works = True

    async def script(number: int, ws: ServerConnection) -> None:
        if resume_works:
            await answer_resume(ws, http)
        else:  # what a reconnect cost before issue 21: the catch-up through history
            await answer_resume(ws, http, fail="catch-up failed: read what you missed from history")
        if number == 0:
            missed_while_away(http)
            http.calls.clear()
            await ws.close(1011)
            return
        await ws.wait_closed()

    for resume_works in (True, False):
        async with fake_imray(script) as (client, http, events):
            http.history = [msg(1, conv=conv) for conv in (CONV, OTHER, THIRD)]
            await client.connect(seen={CONV: 1, OTHER: 1, THIRD: 1})
            await until(lambda: len(delivered(events)) == 6)
            await asyncio.sleep(0.1)
            requests = len(http.calls)
            print(f"HTTP requests of a reconnect, 3 conversations moved, resume {'on' if resume_works else 'off'}:"
                  f" {requests} ({', '.join(http.calls)})")
            assert requests == (1 if resume_works else 4)
