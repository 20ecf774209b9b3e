"""Offline notifications without Ray: who is told, coalescing, signatures, retries, the bounded queue,
and the webhook client against a local receiver."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from imray.actors.fanout import FanOut
from imray.actors.notifier import Notifier
from imray.actors.shard_listener import NodeStreams
from imray.adapters.named_actors import ActorMissing
from imray.adapters.webhook import WebhookClient, WebhookUnreachable
from imray.domain.messaging import Delivery, hidden, hidden_stream, msg_frame
from imray.domain.notifications import (
    Coalescer,
    backoff_s,
    body_of,
    messages_in,
    notice_for,
    preview_of,
    retryable,
    signature,
    verify,
)
from imray.settings import Settings, load_settings

SECRET = "s3cret-for-unit-tests"


def message(conv: str, seq: int, sender: int, users: tuple[int, ...], body: str = "hello") -> Delivery:
    frame = msg_frame(conv, seq, f"m{seq:04d}", sender, "text", body, 1_700_000_000_000 + seq)
    return Delivery(orjson.dumps(frame).decode(), users, "session-of-sender", conv, seq, frame["ts"])


def test_only_messages_count_and_neither_their_sender_nor_a_blocker_who_gets_them_hidden_is_a_recipient():
    full = message("g:7", 3, 1, (1, 2, 3))
    frame = orjson.loads(full.frame)
    hidden_copy = Delivery(orjson.dumps(hidden(frame)).decode(), (4,), None, hidden_stream("g:7"), 3, frame["ts"])
    receipt = Delivery('{"type":"receipt","conv":"g:7","user_id":2,"seq":3}', (1, 2, 3, 4), "s")
    typing = Delivery('{"type":"typing","conv":"g:7","user_id":2}', (1, 3, 4))
    [found] = messages_in([receipt, full, hidden_copy, typing])
    assert found.recipients == (2, 3) and found.sender == 1 and found.seq == 3 and found.msg_id == "m0003"


def test_an_event_in_the_stream_is_no_message_to_notify_of():
    event = msg_frame("g:7", 1, "m0001", 1, "event", "", 1_700_000_000_001)
    event["event"] = {"type": "updated", "name": "new name"}
    assert messages_in([Delivery(orjson.dumps(event).decode(), (1, 2), None, "g:7", 1, event["ts"])]) == []


def test_previews_are_off_by_default_and_cut_by_code_points_when_on():
    assert preview_of("hello", 0) is None and preview_of("", 10) is None
    assert preview_of("hello", 5) == "hello"
    assert preview_of("\U0001f600\u00e9\u6f22abc", 3) == "\U0001f600\u00e9\u6f22\u2026"
    [found] = messages_in([message("d:1:2", 1, 1, (1, 2), "x" * 5000)])
    notice = notice_for(found, 2, 40)
    body = orjson.loads(body_of(notice))
    assert body == {"type": "offline_message", "id": "m0001.2", "user_id": 2, "conv": "d:1:2", "seq": 1,
                    "msg_id": "m0001", "from": 1, "kind": "text", "ts": found.ts, "preview": "x" * 40 + "\u2026"}


def test_one_notice_per_user_and_conversation_within_the_window():
    c = Coalescer(window_s=30)
    assert c.admit(2, "g:1", 0.0)
    assert not c.admit(2, "g:1", 29.9) and c.holds(2, "g:1", 29.9)
    assert c.admit(3, "g:1", 1.0) and c.admit(2, "g:9", 1.0)  # another user, another conversation
    assert not c.holds(2, "g:1", 30.0) and c.admit(2, "g:1", 30.0)  # the window is over
    assert len(c) == 3  # expired pairs are forgotten


def test_the_coalescer_remembers_a_bounded_number_of_pairs():
    c = Coalescer(window_s=30, capacity=100)
    for user in range(10_000):
        assert c.admit(user, "g:1", 1.0)
    assert len(c) == 100


def test_a_signature_verifies_and_a_changed_body_timestamp_or_secret_or_an_old_request_does_not():
    body, ts = b'{"type":"offline_message"}', 1_700_000_000
    signed = signature(SECRET, ts, body)
    assert signed.startswith("sha256=") and len(signed) == 7 + 64
    assert verify(SECRET, str(ts), signed, body, now=ts + 10)
    assert not verify(SECRET, str(ts), signed, body + b" ", now=ts)
    assert not verify(SECRET, str(ts + 1), signed, body, now=ts)  # the timestamp is signed too
    assert not verify("another secret", str(ts), signed, body, now=ts)
    assert not verify(SECRET, str(ts), signed, body, now=ts + 301)  # a replay, too late
    for odd in ("", "-5", "1e9", "\u0661\u0662", "9" * 40):  # not a plain integer
        assert not verify(SECRET, odd, signed, body, now=ts)


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    assert [backoff_s(n, 1.0, 60.0, 0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert [backoff_s(n, 1.0, 60.0, 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_s(10_000, 1.0, 60.0, 0.999) <= 60.0


def test_what_is_retried():
    assert retryable(None) and retryable(500) and retryable(503) and retryable(429) and retryable(408)
    assert not retryable(400) and not retryable(404) and not retryable(410) and not retryable(301)


def test_settings_need_an_http_url_and_a_secret_and_never_show_the_secret():
    assert Settings().notify_webhook_url == ""  # off by default
    with pytest.raises(ValueError, match="notify_webhook_secret"):
        Settings(notify_webhook_url="http://127.0.0.1:1/hook")
    for bad in ("ftp://x/hook", "127.0.0.1:1/hook", "http://", "http:///path"):
        with pytest.raises(ValueError, match="notify_webhook_url"):
            Settings(notify_webhook_url=bad, notify_webhook_secret=SECRET)
    settings = load_settings(notify_webhook_url="https://push.example/hook", notify_webhook_secret=SECRET)
    assert SECRET not in repr(settings)


# --- the notifier, with a fake webhook client and a fake presence --------------------------------------

class FakeClient:
    def __init__(self, answers: list[int | None] | None = None) -> None:
        self.answers = answers or []  # per call, in order; then 200. None: unreachable
        self.calls: list[tuple[dict, str, int]] = []
        self.closed = False

    async def post(self, body: bytes, notice_id: str, attempt: int) -> int:
        self.calls.append((orjson.loads(body), notice_id, attempt))
        answer = self.answers.pop(0) if self.answers else 200
        if answer is None:
            raise WebhookUnreachable("ConnectError")
        return answer

    async def close(self) -> None:
        self.closed = True


class FakePresence:
    def __init__(self, online: set[int], fail: bool = False) -> None:
        self.online = online
        self.fail = fail
        self.asked: list[list[int]] = []

    async def lookup(self, users: list[int]) -> dict[str, list[int]]:
        self.asked.append(users)
        if self.fail:
            raise ConnectionError("presence is away")
        return {"sn-1": [u for u in users if u in self.online]}


def notify_settings(**changes) -> Settings:
    return load_settings(notify_webhook_url="http://127.0.0.1:9/hook", notify_webhook_secret=SECRET,
                         notify_retry_base_s=0.01, notify_retry_max_s=0.02, **changes)


async def settle(notifier: Notifier, client: FakeClient, calls: int) -> None:
    """Until `client` has `calls` calls (5 s at most), and a little longer: nothing more comes."""
    for _ in range(500):
        if len(client.calls) >= calls:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)


async def test_a_burst_to_a_group_tells_each_offline_member_once_and_nobody_online_nor_the_sender():
    client, presence = FakeClient(), FakePresence(online={1, 2})
    notifier = Notifier(0, notify_settings(), client)
    notifier.start(presence)
    for seq in range(1, 11):  # broadcast fan-outs (online unknown) and looked-up ones alike
        notifier.post([message("g:5", seq, 1, (1, 2, 3, 4))], None if seq % 2 else {1, 2})
    await settle(notifier, client, 2)
    assert sorted((body["user_id"], body["seq"]) for body, _, _ in client.calls) == [(3, 1), (4, 1)]
    assert notifier.counts["notified"] == 2 and notifier.counts["coalesced"] == 18
    # The window holds for the notified pairs only: presence is not asked about them again.
    notifier.post([message("g:5", 11, 2, (1, 2, 3, 4))], None)
    notifier.post([message("d:3:9", 1, 9, (3, 9))], None)
    await settle(notifier, client, 3)
    assert [(b["user_id"], b["conv"]) for b, _, _ in client.calls[2:]] == [(3, "d:3:9")]
    assert presence.asked[-1] == [1, 3]  # not 4 (told of g:5 within the window), nor 9 (the sender)
    await notifier.stop()
    assert client.closed


async def test_a_failing_receiver_is_retried_with_backoff_and_then_given_up_after_the_bounded_attempts():
    client = FakeClient(answers=[None, 503, 200, 500, 500, 500])
    notifier = Notifier(0, notify_settings(notify_attempts=3), client)
    notifier.start(FakePresence(online=set()))
    notifier.post([message("d:1:2", 1, 1, (1, 2))], set())
    await settle(notifier, client, 3)
    assert [(nid, attempt) for _, nid, attempt in client.calls] == [("m0001.2", 1), ("m0001.2", 2), ("m0001.2", 3)]
    notifier.post([message("d:1:3", 1, 1, (1, 3))], set())
    await settle(notifier, client, 6)
    assert [attempt for _, _, attempt in client.calls[3:]] == [1, 2, 3]  # three 500s: given up
    assert notifier.counts == {"notified": 1, "coalesced": 0, "retried": 4, "failed": 1, "dropped": 0, "muted": 0}
    await notifier.stop()


async def test_a_recipient_who_muted_the_conversation_is_not_told_and_a_failed_read_mutes_nobody():
    client, asked = FakeClient(), []

    async def muted(pairs: list[tuple[int, str]]) -> set[tuple[int, str]]:
        asked.append(pairs)
        if len(asked) > 1:
            raise ConnectionError("database away")
        return {(3, "g:7")}

    notifier = Notifier(0, notify_settings(), client, muted=muted)
    notifier.start(FakePresence(online=set()))
    notifier.post([message("g:7", 1, 1, (1, 3, 4))], set())
    await settle(notifier, client, 1)
    assert [body["user_id"] for body, _, _ in client.calls] == [4]  # 3 muted g:7
    assert asked == [[(3, "g:7"), (4, "g:7")]] and notifier.counts["muted"] == 1
    notifier.post([message("g:7", 2, 1, (1, 3, 4, 5))], set())  # the read fails: 3 is told after all
    await settle(notifier, client, 3)
    assert sorted(body["user_id"] for body, _, _ in client.calls[1:]) == [3, 5]
    await notifier.stop()


async def test_a_refusing_receiver_is_not_retried():
    client = FakeClient(answers=[400])
    notifier = Notifier(0, notify_settings(), client)
    notifier.start(FakePresence(online=set()))
    notifier.post([message("d:1:2", 1, 1, (1, 2))], set())
    await settle(notifier, client, 1)
    assert len(client.calls) == 1 and notifier.counts["failed"] == 1
    await notifier.stop()


async def test_a_full_queue_drops_the_oldest_notices_and_counts_them_and_post_never_waits(caplog):
    gate = asyncio.Event()

    class SlowClient(FakeClient):
        async def post(self, body: bytes, notice_id: str, attempt: int) -> int:
            await gate.wait()
            return await super().post(body, notice_id, attempt)

    client = SlowClient()
    notifier = Notifier(0, notify_settings(notify_queue_max=5, notify_concurrency=1), client)
    notifier.start(FakePresence(online=set()))
    started = time.perf_counter()
    for user in range(100, 120):  # 20 offline users, one notice each
        notifier.post([message(f"d:1:{user}", 1, 1, (1, user))], set())
        await asyncio.sleep(0)  # the planner takes it
    assert time.perf_counter() - started < 0.5
    await asyncio.sleep(0.05)
    gate.set()
    await settle(notifier, client, 6)
    # One was taken by the worker before the queue filled; of the rest, the newest 5 stayed.
    assert [b["user_id"] for b, _, _ in client.calls] == [100, 115, 116, 117, 118, 119]
    assert notifier.counts["dropped"] == 14
    # Deliveries waiting to be planned are bounded too.
    for _ in range(10):
        notifier.post([message("g:1", 1, 1, (1, 2, 3))] * 3, set())
    assert notifier.counts["dropped"] > 14
    await notifier.stop()
    # Logged as counts, naming the receiver by its origin only: never its path, query or the secret.
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "imray.notify")
    assert "1 dropped" in logged and "http://127.0.0.1:9" in logged  # the first drop; then once a minute
    assert "/hook" not in logged and SECRET not in logged


async def test_when_presence_cannot_say_who_is_offline_nobody_is_told():
    client = FakeClient()
    notifier = Notifier(0, notify_settings(), client)
    notifier.start(FakePresence(online=set(), fail=True))
    notifier.post([message("g:5", 1, 1, (1, 2, 3))], None)
    await settle(notifier, client, 0)
    assert client.calls == [] and notifier.counts["dropped"] == 2
    await notifier.stop()


class NodeStream:
    """A socket node's stream that takes whatever the shard writes (and never acknowledges it)."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class NoActors:
    namespace = "test"

    def supervisor(self) -> Any:
        raise ActorMissing("supervisor")

    def socket_node(self, node_id: str) -> Any:
        raise ActorMissing(node_id)


@pytest.mark.parametrize("broadcast_nodes", [0, 4])
async def test_the_fan_out_hands_each_batch_over_with_who_presence_found_online_or_none_if_not_asked(broadcast_nodes):
    handed: list[tuple[list[Delivery], set[int] | None]] = []
    streams = NodeStreams()
    streams.opened("sn-1", NodeStream())  # type: ignore[arg-type]
    fanout = FanOut(0, Settings(fanout_broadcast_nodes=broadcast_nodes), NoActors(), streams,  # type: ignore[arg-type]
                    None, lambda deliveries, online: handed.append((deliveries, online)))  # type: ignore[arg-type]
    presence = FakePresence(online={1, 3})
    fanout.start(presence)  # type: ignore[arg-type]
    fanout.node_ready("sn-1", None)
    batch = [message("g:5", 1, 1, (1, 2, 3))]
    fanout.post(batch)
    for _ in range(200):
        if handed:
            break
        await asyncio.sleep(0.01)
    # One node: with broadcast_nodes 4 the fan-out does not ask presence, and the notifier must.
    assert handed == [(batch, {1, 3} if broadcast_nodes == 0 else None)]
    await fanout.stop()
    # With no notifier (no URL) the fan-out has nothing to call.
    assert FanOut(0, Settings(), NoActors(), streams, None)._notify is None  # type: ignore[arg-type]


# --- the webhook client against a local receiver ------------------------------------------------------

async def test_the_webhook_client_signs_each_attempt_and_reports_an_unreachable_receiver():
    seen: list[tuple[dict[str, str], bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        body = await reader.readexactly(int(headers["content-length"]))
        seen.append((headers, body))
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = WebhookClient(f"http://127.0.0.1:{port}/hook", SECRET, timeout_s=5, connections=2)
    body = b'{"type":"offline_message","id":"m1.2"}'
    assert await client.post(body, "m1.2", 2) == 202
    [(headers, got)] = seen
    assert got == body and headers["x-imray-delivery"] == "m1.2" and headers["x-imray-attempt"] == "2"
    assert headers["content-type"] == "application/json"
    assert verify(SECRET, headers["x-imray-timestamp"], headers["x-imray-signature"], got, now=time.time())
    server.close()
    await server.wait_closed()
    with pytest.raises(WebhookUnreachable) as refused:
        await client.post(body, "m1.2", 3)
    assert SECRET not in str(refused.value) and str(port) not in str(refused.value)
    await client.close()
