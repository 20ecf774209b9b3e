"""Steady 1:1 traffic from the client host, as apps send it, and the audit over every acked message.

Each user of a pair sends to the other, one message in flight, a fixed pause between sends. A send
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
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from client import Api, Login, Socket, bearer
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ACK_TIMEOUT_S = 10.0
RETRYABLE = {"internal", "unavailable", "rate_limited"}
REPIN_DEADLINE_S = 180.0
# A send is retried (same client id) this long: a conversation's shard on the lost host answers
# `internal` until Ray has declared the host dead and restarted the shard elsewhere (~20-30 s here).
SEND_DEADLINE_S = 180.0
RETRY_PAUSE_S = 0.5


@dataclass
class Outage:
    lost_at: float
    node_before: str
    node_after: str = ""
    url_after: str = ""
    current_at: float = 0.0  # re-pinned, authenticated and caught up from history


@dataclass
class Member:
    """One user of a pair: its login, its live session, what it sent, was acked, and received."""

    name: str
    api: Api
    login: Login
    conv: str
    peer_id: int
    url: str = ""
    token: str = ""
    node: str = ""
    sock: Socket | None = None
    sent: list[str] = field(default_factory=list)  # client ids in send order
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    ack_times: dict[str, float] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    resends: int = 0
    received: dict[int, dict[str, Any]] = field(default_factory=dict)  # the peer's messages by seq
    live_duplicates: int = 0
    outages: list[Outage] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.url, self.token, self.node = self.login.socket_url, self.login.access_token, self.login.socket_node

    # -- the session ------------------------------------------------------------------------

    async def connect(self) -> None:
        self.sock = await Socket.open(self.url, self.token)
        assert self.sock.auth and self.sock.auth.get("type") == "auth_ok", self.sock.auth

    def _harvest(self) -> None:
        """File the peer's messages this socket has received (live delivery)."""
        if self.sock is None:
            return
        for frame in self.sock.frames:
            if frame.get("type") == "msg" and frame.get("conv") == self.conv and frame.get("from") == self.peer_id:
                if frame["seq"] in self.received and self.received[frame["seq"]].get("_live"):
                    self.live_duplicates += 1
                self.received[frame["seq"]] = {**frame, "_live": True}
        self.sock.frames.clear()

    def _last_seq(self) -> int:
        acked = [a["seq"] for a in self.acks.values()]
        return max([*self.received, *acked], default=0)

    async def _repin(self) -> None:
        """Back on a live node: reconnect, else ask for a new pin; then catch up from history."""
        self._harvest()
        if self.sock is not None:
            await asyncio.gather(self.sock.close(), return_exceptions=True)
            self.sock = None
        outage = Outage(time.monotonic(), self.node)
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
            if message["from"] == self.peer_id:
                self.received.setdefault(message["seq"], message)
        outage.node_after, outage.url_after, outage.current_at = self.node, self.url, time.monotonic()

    async def _history_after(self, after: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _ in range(1000):
            r = await self.api.get(f"/api/conversations/{self.conv}/messages", self.token,
                                   after_seq=out[-1]["seq"] if out else after, limit=200)
            assert r.status_code == 200, r.text
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
        deadline = time.monotonic() + SEND_DEADLINE_S
        attempt = 0
        while time.monotonic() < deadline:
            if attempt:
                self.resends += 1
            attempt += 1
            if self.sock is None or self.sock.ws.close_code is not None:
                await self._repin()
            try:
                reply = await self._send_once(client_id)
            except (ConnectionClosed, AssertionError, TimeoutError, OSError):
                await self._repin()
                continue
            if reply["type"] == "ack":
                self.acks[client_id] = reply
                self.ack_times[client_id] = time.monotonic()
                return
            self.errors[reply.get("code", "?")] += 1
            if reply.get("code") not in RETRYABLE:
                return  # a clear error: this send is given up, and the audit knows it was never acked
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

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.order_violations or self.seq_gaps
                    or self.missed_by_receiver or self.live_duplicates)

    def line(self) -> str:
        return (f"acked {self.acked}: lost {self.lost}, duplicated {self.duplicated}, order violations "
                f"{self.order_violations}, seq gaps {self.seq_gaps}, missed by the receiver "
                f"{self.missed_by_receiver}, delivered live twice {self.live_duplicates}; resends {self.resends}, "
                f"error frames {dict(self.errors) or 0}")


async def audit(pairs: list[tuple[Member, Member]]) -> Audit:
    """Over every acked message, from history as the server keeps it and from what receivers got."""
    acked = lost = duplicated = order = gaps = missed = live_dups = resends = 0
    errors: Counter[str] = Counter()
    for a, b in pairs:
        history = await a._history_after(0)
        seqs = [m["seq"] for m in history]
        gaps += sum(1 for x, y in pairwise([0, *seqs]) if y != x + 1)
        by_body = Counter(m["body"] for m in history)
        duplicated += sum(n - 1 for n in by_body.values() if n > 1)
        stored = {m["msg_id"]: m for m in history}
        for sender, receiver in ((a, b), (b, a)):
            acked += len(sender.acks)
            resends += sender.resends
            errors.update(sender.errors)
            lost += sum(1 for ack in sender.acks.values() if ack["msg_id"] not in stored)
            in_order = [sender.acks[c]["seq"] for c in sender.sent if c in sender.acks]
            order += sum(1 for x, y in pairwise(in_order) if y <= x)
            from_sender = {m["seq"] for m in history if m["from"] == sender.login.user_id}
            missed += len(from_sender - set(receiver.received))
            live_dups += receiver.live_duplicates
    return Audit(acked, lost, duplicated, order, gaps, missed, live_dups, errors, resends)


def recovery_figures(members: list[Member], since: float) -> tuple[float, float, int]:
    """p50 and max seconds from `since` until each member that lost its socket was current again."""
    times = [o.current_at - since for m in members for o in m.outages if o.lost_at >= since and o.current_at]
    if not times:
        return 0.0, 0.0, 0
    return statistics.median(times), max(times), len(times)
