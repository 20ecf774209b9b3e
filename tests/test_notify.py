"""The offline-notification webhook (issue 18, point 8), received by a local HTTP server in the test
process on the port the test deployment's `notify_webhook_url` names (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson
import pytest
from support import Api, Socket, direct, eventually, unique

from imray.domain.notifications import verify

QUIET_S = 1.5  # how long "and nothing more comes" is watched for (longer than the test's retry backoff)


@dataclass
class Call:
    headers: dict[str, str]
    body: dict
    signed: bool  # the signature verified with the deployment's secret
    answered: str  # "ok", "fail" (503) or "reset" (the connection closed unanswered)


@dataclass
class Receiver:
    """Records every call; answers each user's calls as `behaviour` says (default 200)."""

    secret: str
    calls: list[Call] = field(default_factory=list)
    behaviour: dict[int, str] = field(default_factory=dict)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            body = orjson.loads(raw)
            answer = self.behaviour.get(body.get("user_id"), "ok")
            signed = verify(self.secret, headers.get("x-imray-timestamp", ""), headers.get("x-imray-signature", ""),
                            raw, now=time.time())
            self.calls.append(Call(headers, body, signed, answer))
            if answer != "reset":
                status = b"204 No Content" if answer == "ok" else b"503 Service Unavailable"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def of(self, user: int, answered: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.body.get("user_id") == user and answered in (None, c.answered)]


@asynccontextmanager
async def receiver(stack) -> AsyncIterator[Receiver]:
    url = urlsplit(stack.settings.notify_webhook_url)
    got = Receiver(stack.settings.notify_webhook_secret)
    server = await asyncio.start_server(got.handle, url.hostname, url.port, reuse_address=True)
    try:
        yield got
    finally:
        server.close()
        await server.wait_closed()


async def group_of(api: Api, owner, members) -> str:
    r = await api.post("/api/groups", owner.access_token, {"name": "notify", "members": [m.user_id for m in members]})
    assert r.status_code == 201, r.text
    return r.json()["conv"]


async def test_a_burst_notifies_each_offline_member_once_signed_and_never_an_online_one_nor_the_sender(stack):
    api = Api(stack.base_url)
    a, b, c, d = [await api.user() for _ in range(4)]
    conv = await group_of(api, a, [b, c, d])
    sa, sb = [await Socket.open(x.socket_url, x.access_token) for x in (a, b)]
    text = "\U0001f600 Ma\u00f1ana \u6f22\u5b57 " + "x" * 60
    async with receiver(stack) as got:
        acks = [await sa.send_text(conv, f"{text}{i}") for i in range(5)]
        assert [ack["seq"] for ack in acks] == [2, 3, 4, 5, 6]  # seq 1: the group's "created" event
        await sb.wait(lambda fs: len([f for f in fs if f["type"] == "msg"]) == 5)
        await eventually(lambda: _all(got.of(c.user_id), got.of(d.user_id)), 20, "c and d notified")
        await asyncio.sleep(QUIET_S)
        for user in (c, d):
            [call] = got.of(user.user_id)
            notice_id = f"{acks[0]['msg_id']}.{user.user_id}"
            assert call.body == {"type": "offline_message", "id": notice_id, "user_id": user.user_id, "conv": conv,
                                 "seq": 2, "msg_id": acks[0]["msg_id"], "from": a.user_id, "kind": "text",
                                 "ts": acks[0]["ts"], "preview": f"{text}0"[:40] + "\u2026"}
            assert call.signed and call.headers["x-imray-delivery"] == notice_id
            assert call.headers["x-imray-attempt"] == "1" and call.headers["content-type"] == "application/json"
        assert got.of(a.user_id) == [] and got.of(b.user_id) == []
    for sock in (sa, sb):
        await sock.close()
    await api.close()


async def test_a_member_who_blocks_the_sender_is_not_notified_of_their_messages_but_of_others(stack):
    api = Api(stack.base_url)
    a, b, c = [await api.user() for _ in range(3)]
    conv = await group_of(api, a, [b, c])
    r = await api.http.put(f"/api/users/me/blocks/{a.user_id}", headers={"Authorization": f"Bearer {b.access_token}"})
    assert r.status_code == 204, r.text
    sa = await Socket.open(a.socket_url, a.access_token)
    async with receiver(stack) as got:
        assert (await sa.send_text(conv, "b blocks me"))["type"] == "ack"
        await eventually(lambda: _all(got.of(c.user_id)), 20, "c notified")
        await asyncio.sleep(QUIET_S)
        assert got.of(b.user_id) == []
        sc = await Socket.open(c.socket_url, c.access_token)
        ack = await sc.send_text(conv, "from c")
        [call] = await eventually(lambda: _all(got.of(b.user_id)), 20, "b notified of c's message")
        assert call.signed and call.body["msg_id"] == ack["msg_id"] and call.body["from"] == c.user_id
        assert got.of(a.user_id) == []  # online
        await sc.close()
    await sa.close()
    await api.close()


async def test_a_member_who_muted_the_conversation_is_not_notified_until_they_unmute_it(stack):
    api = Api(stack.base_url)
    a, b, c = [await api.user() for _ in range(3)]
    conv = await group_of(api, a, [b, c])
    r = await api.http.put(f"/api/conversations/{conv}/settings", json={"muted": True},
                           headers={"Authorization": f"Bearer {b.access_token}"})
    assert r.status_code == 200 and r.json()["muted"] is True, r.text
    sa = await Socket.open(a.socket_url, a.access_token)
    async with receiver(stack) as got:
        assert (await sa.send_text(conv, "while b has it muted"))["type"] == "ack"
        await eventually(lambda: _all(got.of(c.user_id)), 20, "c notified")
        await asyncio.sleep(QUIET_S)
        assert got.of(b.user_id) == []
        r = await api.http.put(f"/api/conversations/{conv}/settings", json={"muted": False},
                               headers={"Authorization": f"Bearer {b.access_token}"})
        assert r.status_code == 200 and r.json()["muted"] is False, r.text
        ack = await sa.send_text(conv, "unmuted now")
        [call] = await eventually(lambda: _all(got.of(b.user_id)), 20, "b notified once unmuted")
        assert call.signed and call.body["msg_id"] == ack["msg_id"]
    await sa.close()
    await api.close()


async def test_a_receiver_that_drops_the_connection_gets_the_notice_again_once_it_answers(stack):
    api = Api(stack.base_url)
    a, b = [await api.user() for _ in range(2)]
    sa = await Socket.open(a.socket_url, a.access_token)
    async with receiver(stack) as got:
        got.behaviour[b.user_id] = "reset"
        ack = await sa.send_text(direct(a.user_id, b.user_id), "are you there?")
        assert ack["type"] == "ack"
        await eventually(lambda: _all(got.of(b.user_id, "reset")), 20, "a first attempt")
        got.behaviour[b.user_id] = "ok"
        [call] = await eventually(lambda: _all(got.of(b.user_id, "ok")), 20, "the notice retried and taken")
        assert call.signed and call.body["msg_id"] == ack["msg_id"]
        assert int(call.headers["x-imray-attempt"]) >= 2
        assert {c.headers["x-imray-delivery"] for c in got.of(b.user_id)} == {f"{ack['msg_id']}.{b.user_id}"}
        await asyncio.sleep(QUIET_S)
        assert len(got.of(b.user_id, "ok")) == 1
    await sa.close()
    await api.close()


async def test_a_receiver_that_always_fails_is_tried_a_bounded_number_of_times_and_chat_goes_on(stack):
    attempts = stack.settings.notify_attempts
    api = Api(stack.base_url)
    a, b, c = [await api.user() for _ in range(3)]
    sa, sc = [await Socket.open(x.socket_url, x.access_token) for x in (a, c)]
    async with receiver(stack) as got:
        got.behaviour[b.user_id] = "fail"
        ack = await sa.send_text(direct(a.user_id, b.user_id), "ring ring")
        assert ack["type"] == "ack"
        # Meanwhile messages are acked and delivered as ever.
        for i in range(3):
            sent = await sa.send_text(direct(a.user_id, c.user_id), f"still here {i}")
            assert sent["type"] == "ack" and sent["seq"] == i + 1
        await sc.wait(lambda fs: len([f for f in fs if f["type"] == "msg"]) == 3)
        await eventually(lambda: _all(len(got.of(b.user_id)) == attempts), 20, f"{attempts} attempts")
        await asyncio.sleep(QUIET_S)
        calls = got.of(b.user_id)
        assert [int(call.headers["x-imray-attempt"]) for call in calls] == list(range(1, attempts + 1))
        assert all(call.signed for call in calls)
        assert got.of(c.user_id) == []  # online
        # A later message in the same window is not notified (the failed one took the window).
        await sa.send_text(direct(a.user_id, b.user_id), "ring again")
        await asyncio.sleep(QUIET_S)
        assert len(got.of(b.user_id)) == attempts
    for sock in (sa, sc):
        await sock.close()
    await api.close()


@pytest.fixture
def bot(stack) -> dict[str, str]:
    """A bot client, made with `imray clients create --bot` as an operator does."""
    out = subprocess.run([sys.executable, "-m", "imray.cli", "clients", "create", "--bot", unique("bot"),
                          "--scope", "messages:send"], env={**os.environ, "IMRAY_DATA_DIR": stack.data_dir},
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


async def test_a_bots_message_notifies_the_offline_recipient_and_never_the_bot_that_sent_it(stack, bot):
    # The bot has no session anywhere: only being the sender keeps it from being notified.
    made, bot_id = bot, int(bot["bot_user_id"])
    api = Api(stack.base_url)
    r = await api.http.post("/oauth2/token", data={"grant_type": "client_credentials"},
                            auth=(made["client_id"], made["client_secret"]))
    assert r.status_code == 200, r.text
    user = await api.user()
    async with receiver(stack) as got:
        r = await api.post(f"/api/server/conversations/{direct(bot_id, user.user_id)}/messages",
                           r.json()["access_token"], {"idempotency_key": unique("k"), "body": "your parcel"})
        assert r.status_code == 200, r.text
        [call] = await eventually(lambda: _all(got.of(user.user_id)), 20, "the recipient notified")
        assert call.signed and call.body["from"] == bot_id and call.body["msg_id"] == r.json()["msg_id"]
        assert call.body["preview"] == "your parcel"
        await asyncio.sleep(QUIET_S)
        assert got.of(bot_id) == []
    await api.close()


async def _all(*found):
    """`eventually` polls a coroutine: the first argument, once every argument is truthy."""
    return found[0] if all(found) else None
