"""Steady traffic from the client host, as apps send it, and the audit over every acked message.

Conversations are 1:1 pairs and groups; every member sends to its conversation, one message in
flight, a fixed pause between sends, and must end up with every message of it: the others' by
delivery (or catching up after a lost socket), its own by their acks (a message is delivered to
every session of every member but the one that sent it). A send
that is not acked (socket lost, timeout, a retryable error) is sent again with the same client id
once the session is back: the server's idempotency makes that safe. A session that loses its socket
re-pins the way the protocol says: reconnect to its URL, and when that fails POST /api/socket/assign
for a new one; once in, it catches up from history after the last seq it saw.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import httpx
from support import Api, Login, Socket, bearer, direct
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ACK_TIMEOUT_S = 10.0
RETRYABLE = {"internal", "unavailable", "rate_limited"}
REPIN_DEADLINE_S = 180.0
# A send is retried (same client id) this long: a conversation's shard on the lost host answers
# `internal` until Ray has declared the host dead and restarted the shard elsewhere (~20-30 s here).
SEND_DEADLINE_S = 180.0
RETRY_PAUSE_S = 0.5
# A send acked on its first attempt within this time is a normal one; unloaded, acks take 10-50 ms.
SLOW_ACK_S = 1.0


@dataclass(frozen=True)
class Trip:
    """One send, from its first attempt to its ack (or its final error)."""

    started: float
    ended: float
    clean: bool  # acked on the first attempt, within SLOW_ACK_S, without losing the socket
    attempts: int = 1
    acked: bool = True


@dataclass
class Outage:
    lost_at: float
    node_before: str
    node_after: str = ""
    url_after: str = ""
    current_at: float = 0.0  # re-pinned, authenticated and caught up from history
    close_code: int | None = None  # the socket's close code; None: the client gave up on it (no reply)


@dataclass
class Member:
    """One user in a conversation: its login, its live session, what it sent, was acked, and received."""

    name: str
    api: Api
    login: Login
    conv: str
    url: str = ""
    token: str = ""
    node: str = ""
    sock: Socket | None = None
    sent: list[str] = field(default_factory=list)  # client ids in send order
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    ack_times: dict[str, float] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    error_times: list[tuple[float, str]] = field(default_factory=list)  # every error frame or lost reply
    given_up: dict[str, str] = field(default_factory=dict)  # client id -> the clear error it got
    resends: int = 0
    trips: list[Trip] = field(default_factory=list)
    received: dict[int, dict[str, Any]] = field(default_factory=dict)  # the conversation's messages by seq
    live_duplicates: int = 0
    echoes: int = 0  # own messages delivered to the session that sent them (the contract says not to)
    outages: list[Outage] = field(default_factory=list)
    # Catch-up reads that failed (a transport error or a non-200) and were tried again, as an app
    # does: after a heal, requests routed to a Serve replica on the healed host hung 30 s (CI).
    failed_reads: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.url, self.token, self.node = self.login.socket_url, self.login.access_token, self.login.socket_node

    # -- the session ------------------------------------------------------------------------

    async def connect(self) -> None:
        self.sock = await Socket.open(self.url, self.token)
        assert self.sock.auth and self.sock.auth.get("type") == "auth_ok", self.sock.auth

    def _harvest(self) -> None:
        """File the conversation's messages this socket has received (live delivery)."""
        if self.sock is None:
            return
        for frame in self.sock.frames:
            if frame.get("type") == "msg" and frame.get("conv") == self.conv:
                if frame.get("from") == self.login.user_id:
                    self.echoes += 1  # each user here has one session: the one that sent it
                if frame["seq"] in self.received and self.received[frame["seq"]].get("_live"):
                    self.live_duplicates += 1
                self.received[frame["seq"]] = {**frame, "_live": True}
        self.sock.frames.clear()

    def _last_seq(self) -> int:
        """The seq up to which this member has every message (what it would catch up after)."""
        seq = 0
        while seq + 1 in self.received:
            seq += 1
        return seq

    async def _repin(self) -> None:
        """Back on a live node: reconnect, else ask for a new pin; then catch up from history."""
        self._harvest()
        close_code = None
        if self.sock is not None:
            close_code = self.sock.ws.close_code
            await asyncio.gather(self.sock.close(), return_exceptions=True)
            self.sock = None
        outage = Outage(time.monotonic(), self.node, close_code=close_code)
        self.outages.append(outage)
        deadline = outage.lost_at + REPIN_DEADLINE_S
        while True:
            try:
                await self.connect()
                break
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed, AssertionError):
                if self.sock is not None:
                    await asyncio.gather(self.sock.close(), return_exceptions=True)
                    self.sock = None
            assert time.monotonic() < deadline, f"{self.name}: no live socket node within {REPIN_DEADLINE_S} s"
            try:
                r = await self.api.http.post("/api/socket/assign", headers=bearer(self.token))
            except Exception:  # the gateway may be moving too: ask again
                r = None
            if r is not None and r.status_code == 200:
                body = r.json()
                self.url, self.token, self.node = body["socket_url"], body["access_token"], body["socket_node"]
            await asyncio.sleep(0.5)
        after = self._last_seq()
        for message in await self._history_after(after):
            self.received.setdefault(message["seq"], message)
        outage.node_after, outage.url_after, outage.current_at = self.node, self.url, time.monotonic()

    async def _history_after(self, after: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + REPIN_DEADLINE_S
        for _ in range(1000):
            try:
                r = await self.api.get(f"/api/conversations/{self.conv}/messages", self.token,
                                       after_seq=out[-1]["seq"] if out else after, limit=200)
            except httpx.HTTPError as exc:
                r, failure = None, type(exc).__name__
            else:
                failure = "" if r.status_code == 200 else f"{r.status_code} {r.text[:80]}"
            if failure:
                self.failed_reads.append(failure)
                assert time.monotonic() < deadline, f"{self.name}: catch-up reads failing: {self.failed_reads}"
                await asyncio.sleep(0.5)
                continue
            assert r is not None
            page = r.json()["messages"]
            if not page:
                return out
            out.extend(page)
        raise AssertionError("history did not end")

    # -- sending ----------------------------------------------------------------------------

    async def _send_once(self, client_id: str) -> dict[str, Any]:
        assert self.sock is not None
        sock = self.sock
        await sock.send_json({"type": "send", "id": client_id, "conv": self.conv, "kind": "text", "body": client_id})
        frames = await sock.wait(lambda fs: any(f.get("id") == client_id and f["type"] in ("ack", "error")
                                                for f in fs), timeout=ACK_TIMEOUT_S)
        return next(f for f in reversed(frames) if f.get("id") == client_id and f["type"] in ("ack", "error"))

    async def send(self, client_id: str) -> None:
        self.sent.append(client_id)
        started = time.monotonic()
        deadline = started + SEND_DEADLINE_S
        attempt = 0
        clean = True
        while time.monotonic() < deadline:
            if attempt:
                self.resends += 1
                clean = False
            attempt += 1
            if self.sock is None or self.sock.ws.close_code is not None:
                clean = False
                await self._repin()
            try:
                reply = await self._send_once(client_id)
            except (ConnectionClosed, AssertionError, TimeoutError, OSError) as exc:
                self.error_times.append((time.monotonic(), f"no reply ({type(exc).__name__})"))
                await self._repin()
                continue
            now = time.monotonic()
            if reply["type"] == "ack":
                self.acks[client_id] = reply
                self.ack_times[client_id] = now
                # The session that sent a message learns it from the ack, not from a delivery.
                self.received.setdefault(reply["seq"], {"seq": reply["seq"], "msg_id": reply["msg_id"]})
                self.trips.append(Trip(started, now, clean and now - started <= SLOW_ACK_S, attempt))
                return
            code = reply.get("code", "?")
            self.errors[code] += 1
            self.error_times.append((now, code))
            if code not in RETRYABLE:
                # A clear error: this send is given up, and the audit knows it was never acked.
                self.given_up[client_id] = code
                self.trips.append(Trip(started, now, False, attempt, acked=False))
                return
            await asyncio.sleep(RETRY_PAUSE_S)
        raise AssertionError(f"{self.name}: {client_id} not acked within {SEND_DEADLINE_S} s "
                             f"({attempt} attempts, error frames {dict(self.errors)})")

    async def run(self, stop: asyncio.Event, pause: float) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            await self.send(f"{self.name}-{n}")
            self._harvest()
            await asyncio.sleep(pause)

    async def close(self) -> None:
        self._harvest()
        if self.sock is not None:
            await self.sock.close()


@dataclass
class Audit:
    acked: int
    lost: int
    duplicated: int
    order_violations: int
    seq_gaps: int
    missed_by_receiver: int
    live_duplicates: int
    errors: Counter[str]
    resends: int
    given_up: int = 0
    echoes: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.order_violations or self.seq_gaps
                    or self.missed_by_receiver or self.live_duplicates)

    def line(self) -> str:
        return (f"acked {self.acked}: lost {self.lost}, duplicated {self.duplicated}, order violations "
                f"{self.order_violations}, seq gaps {self.seq_gaps}, missed by a member "
                f"{self.missed_by_receiver}, delivered live twice {self.live_duplicates}; resends {self.resends}, "
                f"given up on a clear error {self.given_up}, error frames {dict(self.errors) or 0}; own messages "
                f"delivered to the sending session {self.echoes}")

    def short(self) -> str:
        return (f"acked {self.acked}, lost {self.lost}, dup {self.duplicated}, order {self.order_violations}, "
                f"gaps {self.seq_gaps}, missed {self.missed_by_receiver}, live twice {self.live_duplicates}; "
                f"resends {self.resends}, given up {self.given_up}, echoes {self.echoes}")


async def audit(conversations: Sequence[Sequence[Member]]) -> Audit:
    """Over every acked message, from history as the server keeps it and from what every member of
    each conversation (a pair or a group) got, live or by catching up after a lost socket."""
    acked = lost = duplicated = order = gaps = missed = live_dups = resends = given_up = echoes = 0
    errors: Counter[str] = Counter()
    for members in conversations:
        assert len({m.conv for m in members}) == 1, [m.conv for m in members]
        history = await members[0]._history_after(0)
        seqs = [m["seq"] for m in history]
        gaps += sum(1 for x, y in pairwise([0, *seqs]) if y != x + 1)
        by_body = Counter(m["body"] for m in history if m["kind"] != "event")  # a group's events have no body
        duplicated += sum(n - 1 for n in by_body.values() if n > 1)
        stored = {m["msg_id"]: m for m in history}
        for member in members:
            acked += len(member.acks)
            resends += member.resends
            given_up += len(member.given_up)
            errors.update(member.errors)
            lost += sum(1 for ack in member.acks.values() if ack["msg_id"] not in stored)
            in_order = [member.acks[c]["seq"] for c in member.sent if c in member.acks]
            order += sum(1 for x, y in pairwise(in_order) if y <= x)
            missed += len(set(seqs) - set(member.received))
            live_dups += member.live_duplicates
            echoes += member.echoes
    return Audit(acked, lost, duplicated, order, gaps, missed, live_dups, errors, resends, given_up, echoes)


def recovery_figures(members: list[Member], since: float) -> tuple[float, float, int]:
    """p50 and max seconds from `since` until each member that lost its socket was current again."""
    times = [o.current_at - since for m in members for o in m.outages if o.lost_at >= since and o.current_at]
    if not times:
        return 0.0, 0.0, 0
    return statistics.median(times), max(times), len(times)


def settled(members: Sequence[Member], since: float, streak: int = 3) -> bool:
    """Every member's last `streak` sends started after `since` and were all normal ones."""
    for m in members:
        recent = [t for t in m.trips if t.started >= since][-streak:]
        if len(recent) < streak or not all(t.clean for t in recent):
            return False
    return True


def recovery_times(members: Sequence[Member], fault_at: float) -> dict[str, float]:
    """For each member a fault disturbed (a send of it that ended after `fault_at` was not a normal
    one): seconds from `fault_at` until it was current again, the end of its first normal send
    after its last disturbed one. A send that lost the socket re-pins and catches up before it
    ends, so "current" covers the session and what it missed."""
    out: dict[str, float] = {}
    for m in members:
        disturbed = [t for t in m.trips if t.ended >= fault_at and not t.clean]
        if not disturbed:
            continue
        last = max(t.ended for t in disturbed)
        after = [t.ended for t in m.trips if t.clean and t.started >= last]
        out[m.name] = (after[0] if after else last) - fault_at
    return out


def unacked_at_first(members: Sequence[Member], start: float, end: float) -> tuple[int, int]:
    """Of the sends that ended in [start, end] and were not acked on their first attempt: how many
    were acked when sent again with the same client id, and how many ended with a clear error."""
    trips = [t for m in members for t in m.trips if start <= t.ended <= end and (t.attempts > 1 or not t.acked)]
    return sum(1 for t in trips if t.acked), sum(1 for t in trips if not t.acked)


def errors_between(members: Sequence[Member], start: float, end: float) -> Counter[str]:
    """Error frames (by code) and lost replies the members got in [start, end]."""
    return Counter(code for m in members for at, code in m.error_times if start <= at <= end)


def acked_between(members: Sequence[Member], start: float, end: float) -> int:
    return sum(1 for m in members for at in m.ack_times.values() if start <= at <= end)


@dataclass
class Traffic:
    """1:1 pairs, each between a user on one socket node (A) and one on the other (B), and a group
    with members on both; every member a live session and, once started, a sender."""

    api: Api
    node_a: str
    url_a: str
    pairs: list[tuple[Member, Member]]
    group: list[Member]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    senders: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def conversations(self) -> list[Sequence[Member]]:
        return [*self.pairs, self.group]

    @property
    def members(self) -> list[Member]:
        return [m for conv in self.conversations for m in conv]

    def start(self, pause: float) -> None:
        self.stop.clear()
        self.senders = [asyncio.create_task(m.run(self.stop, pause)) for m in self.members]

    def check(self) -> None:
        """Raise what made a sender stop (a send neither acked nor clearly refused in time)."""
        for task in self.senders:
            if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                raise exc

    async def halt(self, drain_s: float = 3.0) -> None:
        """Stop sending (each sender finishes its send in flight), then let the last deliveries in."""
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.senders), SEND_DEADLINE_S + 60)
        self.senders = []
        await asyncio.sleep(drain_s)
        for m in self.members:
            m._harvest()

    async def close(self) -> None:
        self.stop.set()
        for task in self.senders:
            task.cancel()
        await asyncio.gather(*self.senders, return_exceptions=True)
        await asyncio.gather(*(m.close() for m in self.members), return_exceptions=True)


async def start_traffic(api: Api, pairs: int = 4, group_per_node: int = 2) -> Traffic:
    """Users on two socket nodes (logins spread them by least connections), paired across the
    nodes, and a group of `group_per_node` from each; all connected, not sending yet."""
    need = pairs + group_per_node
    by_node: dict[str, list[Login]] = {}
    for _ in range(need * 6):
        login = await api.user()
        by_node.setdefault(login.socket_node, []).append(login)
        if sum(len(v) >= need for v in by_node.values()) >= 2:
            break
    full = sorted(node for node, logins in by_node.items() if len(logins) >= need)
    assert len(full) >= 2, {k: len(v) for k, v in by_node.items()}
    node_a, node_b = full[:2]
    on_a, on_b = by_node[node_a][:need], by_node[node_b][:need]
    made: list[tuple[Member, Member]] = []
    for i, (a, b) in enumerate(zip(on_a[:pairs], on_b[:pairs], strict=True)):
        conv = direct(a.user_id, b.user_id)
        made.append((Member(f"a{i}", api, a, conv), Member(f"b{i}", api, b, conv)))
    in_group = [*on_a[pairs:], *on_b[pairs:]]
    owner = in_group[0]
    r = await api.post("/api/groups", owner.access_token,
                       {"name": "steady traffic", "members": [u.user_id for u in in_group[1:]]})
    assert r.status_code == 201, r.text
    group_conv = r.json()["conv"]
    group = [Member(f"g{i}-{'a' if u.socket_node == node_a else 'b'}", api, u, group_conv)
             for i, u in enumerate(in_group)]
    traffic = Traffic(api, node_a, on_a[0].socket_url, made, group)
    await asyncio.gather(*(m.connect() for m in traffic.members))
    for member in group:  # the group's "created" event (seq 1) came before the sockets: read it as an app would
        for message in await member._history_after(0):
            member.received.setdefault(message["seq"], message)
    return traffic
