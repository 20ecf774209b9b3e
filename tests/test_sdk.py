"""The Python SDK (imray.client) against the live stack: what an application built on ImrayClient sees
across nodes, reconnects, a killed socket node, token renewal, revocation and a wrong pin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from faults import kill_socket_node
from support import Api, Login, direct, eventually, one_per_node

from imray.client import ErrorEvent, Frame, ImrayClient, ImrayError, Message, StateChange

QUICK = {"gap_wait": 0.3, "backoff_base": 0.1, "backoff_cap": 1.0}  # timings for a test, not for the world


class App:
    """What an application on the SDK keeps: every event, in the order delivered."""

    def __init__(self, client: ImrayClient) -> None:
        self.client = client
        self.events: list[object] = []
        for kind in ("message", "state", "error", "frame"):
            client.on(kind, self.events.append)

    def messages(self, conv: str) -> list[Message]:
        return [e for e in self.events if isinstance(e, Message) and e.conv == conv]

    def seqs(self, conv: str) -> list[int]:
        return [m.seq for m in self.messages(conv)]

    def states(self) -> list[str]:
        return [e.state for e in self.events if isinstance(e, StateChange)]

    async def until_seq(self, conv: str, seq: int, timeout: float = 30) -> None:  # noqa: ASYNC109
        async def there() -> bool:
            return bool(self.seqs(conv)) and self.seqs(conv)[-1] >= seq

        await eventually(there, timeout, f"{conv} delivered up to seq {seq} (have {self.seqs(conv)[-5:]})")


@asynccontextmanager
async def apps(api: Api, *logins: Login, **options: object) -> AsyncIterator[list[App]]:
    """Connected SDK clients for `logins`, closed afterwards."""
    made = [App(ImrayClient.from_tokens(api.base_url, login.raw, **{**QUICK, **options})) for login in logins]
    try:
        for app in made:
            await app.client.connect()
        yield made
    finally:
        for app in made:
            await app.client.close()


@pytest.fixture
async def api(stack) -> AsyncIterator[Api]:
    client = Api(stack.base_url)
    try:
        yield client
    finally:
        await client.close()


async def test_two_clients_on_different_nodes_each_see_every_message_once_in_seq_order_own_included(api: Api):
    a, b = await one_per_node(api)
    conv = direct(a.user_id, b.user_id)
    async with apps(api, a, b) as (app_a, app_b):
        acks = await asyncio.gather(*(app.client.send(conv, f"{name}{i}") for i in range(8)
                                      for name, app in (("a", app_a), ("b", app_b))))
        last = max(ack.seq for ack in acks)
        assert sorted(ack.seq for ack in acks) == list(range(1, 17))
        for app in (app_a, app_b):
            await app.until_seq(conv, last)
            assert app.seqs(conv) == list(range(1, last + 1))
        history = await api.all_history(a.access_token, conv)
        for app in (app_a, app_b):
            assert [(m.seq, m.msg_id, m.from_, m.body) for m in app.messages(conv)] == [
                (h["seq"], h["msg_id"], h["from"], h["body"]) for h in history]
        assert app_a.states() == ["connecting", "connected"]


async def test_a_client_back_from_offline_gets_exactly_what_it_missed_once_in_order_over_the_socket(api: Api):
    a, b = await one_per_node(api)
    conv = direct(a.user_id, b.user_id)
    async with apps(api, a) as (app_a,):
        async with apps(api, b) as (app_b,):
            await app_a.client.send(conv, "before")
            await app_b.until_seq(conv, 1)
            seen = app_b.client.seen
        missed = [await app_a.client.send(conv, f"missed {i}") for i in range(5)]
        back = App(ImrayClient.from_tokens(api.base_url, b.raw, **QUICK))
        history_reads: list[int] = []  # after_seq of each history request

        async def record(request: httpx.Request) -> None:
            if request.url.path.endswith("/messages"):
                history_reads.append(int(request.url.params.get("after_seq", 0)))

        back.client.api.http.event_hooks["request"].append(record)
        try:
            await back.client.connect(seen=seen)
            marker = await app_a.client.send(conv, "after")  # live, once the catch-up is under way
            await back.until_seq(conv, marker.seq)
            assert [(m.seq, m.body) for m in back.messages(conv)] == [
                *((ack.seq, f"missed {i}") for i, ack in enumerate(missed)), (marker.seq, "after")]
            # What it missed came over the socket (issue 21): history, if read at all (a safety net for
            # the live marker racing the conversation list), is read only after it.
            assert all(after >= missed[-1].seq for after in history_reads), history_reads
        finally:
            await back.client.close()


@pytest.mark.runs_last  # it kills a socket node of the shared stack
async def test_a_socket_node_killed_mid_conversation_leaves_each_stream_whole_with_every_acked_send(stack, api: Api):
    a, b = await one_per_node(api)
    conv = direct(a.user_id, b.user_id)
    async with apps(api, a, b) as (app_a, app_b):
        acked: list[int] = []
        stop = asyncio.Event()

        async def keep_sending(app: App, name: str) -> None:
            i = 0
            while not stop.is_set():
                ack = await asyncio.wait_for(app.client.send(conv, f"{name}{i}"), 60)
                acked.append(ack.seq)
                i += 1
                await asyncio.sleep(0.05)

        senders = [asyncio.create_task(keep_sending(app, name)) for name, app in (("a", app_a), ("b", app_b))]
        try:
            await eventually(lambda: _now(len(acked) >= 10), 20, "10 sends acked before the kill")
            await kill_socket_node(stack, a.socket_node)
            at_return = len(acked)
            await eventually(lambda: _now(len(acked) >= at_return + 10), 40, "sends acked after the node returned")
        finally:
            stop.set()
            await asyncio.gather(*senders)
        last = max(acked)
        assert sorted(acked) == list(range(1, last + 1))  # one seq per send: nothing stored twice
        for app in (app_a, app_b):
            await app.until_seq(conv, last, timeout=40)
            assert app.seqs(conv) == list(range(1, last + 1)), app.seqs(conv)
        assert "reconnecting" in app_a.states() and app_a.client.state == "connected"


async def _now(value: bool) -> bool:
    return value


async def test_the_access_token_is_renewed_on_the_open_socket_before_it_expires(api: Api):
    user = await api.user()
    async with apps(api, user, renew_at=0.002) as (app,):  # 900 s tokens: renewed every ~2 s
        first_refresh_token = app.client.refresh_token

        async def renewed_twice() -> bool:
            return sum(isinstance(e, Frame) and e.frame.get("type") == "refresh_ok" for e in app.events) >= 2

        await eventually(renewed_twice, 20, "two refresh_ok frames")
        assert app.client.refresh_token != first_refresh_token
        assert app.states() == ["connecting", "connected"]  # the socket stayed open throughout
        ack = await app.client.send(direct(user.user_id, (await api.user()).user_id), "still here")
        assert ack.seq == 1


async def test_a_revoked_login_ends_closed_with_an_error_event_instead_of_retrying(api: Api):
    user = await api.user()
    async with apps(api, user) as (app,):
        await api.revoke(user.refresh_token)

        async def closed() -> bool:
            return "closed" in app.states()  # the event, after the error event

        await eventually(closed, 15, "the client closed after its login was revoked")
        assert [e.code for e in app.events if isinstance(e, ErrorEvent)] == ["unauthorized"]
        assert app.states()[-1] == "closed"
        with pytest.raises(ImrayError) as refused:
            await app.client.send(direct(user.user_id, user.user_id + 1), "after revoke")
        assert refused.value.code == "closed"


async def test_a_client_with_a_bad_token_fails_to_connect_with_a_precise_error(api: Api):
    user = await api.user()
    bogus = {**user.raw, "access_token": "not-a-token", "refresh_token": "not-a-refresh-token"}
    client = ImrayClient.from_tokens(api.base_url, bogus, **QUICK)
    started = time.monotonic()
    with pytest.raises(ImrayError) as refused:
        await client.connect(seen={})
    assert refused.value.code == "unauthorized" and client.state == "closed"
    assert time.monotonic() - started < 15


async def test_a_client_pointed_at_the_wrong_node_or_a_dead_url_is_re_pinned_and_chats(api: Api):
    a, b = await one_per_node(api)
    conv = direct(a.user_id, b.user_id)
    wrong = {**a.raw, "socket_url": b.socket_url}  # a's token is pinned to a's node: wrong_node from b's
    dead = {**b.raw, "socket_url": "ws://127.0.0.1:9/ws"}  # nothing listens: assign gives a fresh pin
    apps_ = [App(ImrayClient.from_tokens(api.base_url, raw, **QUICK)) for raw in (wrong, dead)]
    try:
        for app in apps_:
            await app.client.connect()
        assert apps_[0].client.socket_url == a.socket_url
        assert apps_[1].client.socket_url != dead["socket_url"]
        first = await apps_[0].client.send(conv, "from a")
        second = await apps_[1].client.send(conv, "from b")
        for app in apps_:
            await app.until_seq(conv, second.seq)
            assert app.seqs(conv) == [first.seq, second.seq] == [1, 2]
    finally:
        for app in apps_:
            await app.client.close()
