"""Load generators: simulated clients that speak the wire contract, several to a process.

A worker process owns whole sender/receiver pairs, so send, ack and delivery times are read on
one clock. It returns counts, latency samples and what was acked, for the audit.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

try:
    import uvloop
except ImportError:  # a platform without it: the stock loop
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    user_id: int
    url: str
    token: str


@dataclass(frozen=True)
class Pair:
    sender: Endpoint
    receiver: Endpoint
    conv: str


@dataclass
class PairState:
    sent: dict[str, float] = field(default_factory=dict)
    acked: dict[str, tuple[int, str]] = field(default_factory=dict)  # client id -> (seq, msg_id)
    ack_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    received: dict[str, int] = field(default_factory=dict)  # client id -> times received
    last_seq: int = 0
    order_violations: int = 0
    errors: int = 0
    in_flight: asyncio.Semaphore | None = None


async def _connect(url: str, source: str | None, wait_s: float) -> ClientConnection:
    # proxy=None: no proxy lookup in the environment per connection (~20 % of a loader's CPU in a storm).
    return await connect(url, compression=None, max_size=2**22, open_timeout=wait_s, ping_interval=None,
                         local_addr=(source, 0) if source else None, proxy=None)


async def open_session(url: str, token: str, source: str | None = None, wait_s: float = 30,
                       batch: bool = False) -> ClientConnection:
    """Connect, send the auth frame and wait for auth_ok, as a client does; from `source` if given.
    `batch`: the server may pack several frames in a message, one per line (read them with `frames_of`)."""
    ws = await _connect(url, source, wait_s)
    try:
        auth: dict = {"type": "auth", "token": token}
        if batch:
            auth["batch"] = True
        await ws.send(orjson.dumps(auth).decode())
        # auth_ok leaves alone unless the node pushed something in the same turn (a drain's move),
        # which these loaders do not run into.
        reply = frames_of(await asyncio.wait_for(ws.recv(), wait_s))[0]
    except BaseException:
        ws.transport.abort()
        raise
    if reply.get("type") != "auth_ok":
        ws.transport.abort()
        raise RuntimeError(f"auth refused: {reply}")
    return ws


async def open_resumed(url: str, token: str, seen: dict[str, int], source: str | None = None,
                       wait_s: float = 30) -> tuple[ClientConnection, list[dict]]:
    """Connect with `seen` in the auth frame (issue 21): auth_ok, the catch-up and resume_ok come
    together; returns the session and the frames after auth_ok up to resume_ok."""
    ws = await _connect(url, source, wait_s)
    try:
        await ws.send(orjson.dumps({"type": "auth", "token": token, "batch": True, "seen": seen}).decode())
        got: list[dict] = []
        while not got or got[-1].get("type") not in ("resume_ok", "error"):
            got += frames_of(await asyncio.wait_for(ws.recv(), wait_s))
    except BaseException:
        ws.transport.abort()
        raise
    if got[0].get("type") != "auth_ok" or not got[0].get("resume") or got[-1].get("type") != "resume_ok":
        ws.transport.abort()
        raise RuntimeError(f"no catch-up: {got[0]} ... {got[-1]}")
    return ws, got[1:]


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on uvloop, the loop Ray gives imray's actors, unless RAY_USE_UVLOOP says no.

    A load generator shares the box's cores with the server it measures: a cheaper loop leaves
    more of them to the server, and the relay baseline runs on the same loop as imray."""
    wanted = os.environ.get("RAY_USE_UVLOOP", "1").lower() in ("1", "true")
    factory = uvloop.new_event_loop if uvloop and wanted else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


@contextmanager
def no_collector_pauses() -> Iterator[None]:
    """The cycle collector off for one measured step of a load-generator process.

    Its full collections paused these processes for 16-31 ms at a time (measured with gc.callbacks
    during a 1:1 run), and every message in flight then looked that much slower, imray's and the
    relay's alike. A step lasts seconds and makes little cyclic garbage; it is collected after.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


async def _open(endpoint: Endpoint) -> ClientConnection:
    return await open_session(endpoint.url, endpoint.token, batch=True)


def frames_of(raw: str | bytes) -> list[Any]:
    """The frames of one message: one, or several, one per line, from a batching server (issue 21)."""
    if isinstance(raw, str) and "\n" in raw:
        return [orjson.loads(line) for line in raw.split("\n")]
    return [orjson.loads(raw)]


async def _read_sender(ws: ClientConnection, state: PairState) -> None:
    try:
        async for raw in ws:
            for frame in frames_of(raw):
                kind, cid = frame.get("type"), frame.get("id")
                if kind == "ack" and cid in state.sent and cid not in state.acked:
                    state.acked[cid] = (frame["seq"], frame["msg_id"])
                    state.ack_ms.append((time.perf_counter() - state.sent[cid]) * 1000)
                    if state.in_flight:
                        state.in_flight.release()
                elif kind == "error":
                    state.errors += 1
                    if state.in_flight and cid in state.sent:
                        state.in_flight.release()
    except ConnectionClosed:
        pass


async def _read_receiver(ws: ClientConnection, state: PairState) -> None:
    try:
        async for raw in ws:
            now = time.perf_counter()
            for frame in frames_of(raw):
                if frame.get("type") != "msg":
                    continue
                cid = frame["body"]
                state.received[cid] = state.received.get(cid, 0) + 1
                if frame["seq"] <= state.last_seq:
                    state.order_violations += 1
                state.last_seq = max(state.last_seq, frame["seq"])
                if cid in state.sent and state.received[cid] == 1:
                    state.delivery_ms.append((now - state.sent[cid]) * 1000)
    except ConnectionClosed:
        pass


async def _one2one(pairs: list[Pair], rate: float | None, duration: float, window: int, tag: str) -> dict:
    states = [PairState() for _ in pairs]
    senders = [await _open(p.sender) for p in pairs]
    receivers = [await _open(p.receiver) for p in pairs]
    readers = [asyncio.create_task(_read_sender(ws, st)) for ws, st in zip(senders, states, strict=True)]
    readers += [asyncio.create_task(_read_receiver(ws, st)) for ws, st in zip(receivers, states, strict=True)]
    cpu_start, start = time.process_time(), time.perf_counter()
    stop_at = start + duration

    async def send_loop(i: int) -> None:
        pair, ws, state = pairs[i], senders[i], states[i]
        n = 0
        in_flight = asyncio.Semaphore(window)
        if rate is None:  # closed loop: `window` messages in flight, the next goes when one is acked
            state.in_flight = in_flight
        per_pair = (rate / len(pairs)) if rate else 0.0
        while time.perf_counter() < stop_at:
            if rate is None:
                await in_flight.acquire()
            else:
                due = start + n / per_pair + (i / len(pairs)) / per_pair
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            cid = f"{tag}{i}-{n}"
            state.sent[cid] = time.perf_counter()
            await ws.send(orjson.dumps({"type": "send", "id": cid, "conv": pair.conv, "kind": "text",
                                        "body": cid}).decode())
            n += 1

    await asyncio.gather(*(send_loop(i) for i in range(len(pairs))))
    elapsed = time.perf_counter() - start
    deadline = time.perf_counter() + 15  # let outstanding acks and deliveries land
    while time.perf_counter() < deadline:
        if all(len(s.acked) + s.errors >= len(s.sent) and len(s.received) >= len(s.acked) for s in states):
            break
        await asyncio.sleep(0.05)
    cpu = time.process_time() - cpu_start  # this loader's own CPU, for the comparison's fairness
    for ws in senders + receivers:
        await ws.close()
    for task in readers:
        task.cancel()
    return {
        "loader_cpu_s": cpu,
        "sent": sum(len(s.sent) for s in states),
        "acked": sum(len(s.acked) for s in states),
        "errors": sum(s.errors for s in states),
        "received": sum(len(s.received) for s in states),
        "duplicates": sum(sum(c - 1 for c in s.received.values() if c > 1) for s in states),
        "order_violations": sum(s.order_violations for s in states),
        "not_delivered": sum(sum(1 for cid in s.acked if cid not in s.received) for s in states),
        "elapsed_s": elapsed,
        "ack_ms": [x for s in states for x in s.ack_ms],
        "delivery_ms": [x for s in states for x in s.delivery_ms],
        "acked_ids": {p.conv: sorted(s.acked.values()) for p, s in zip(pairs, states, strict=True)},
    }


def one2one_worker(job: tuple[list[Pair], float | None, float, int, str]) -> dict:
    """Entry point of a load-generator process."""
    with no_collector_pauses():
        return run(_one2one(*job))


async def _http(base_url: str, logins: list[tuple[str, str]], history: list[tuple[str, str]] | None,
                duration: float, concurrency: int) -> dict:
    """Closed loops of logins or history reads (aiohttp: the client's CPU is the server's, on one box).

    `history`: (token, conv) of several users, spread over the loops, as many readers are (one user
    alone would meet the per-user rate limit)."""
    done: dict = {"logins": 0, "history": 0, "errors": 0, "error_statuses": {}}

    def count(kind: str, status: int) -> None:
        if status == 200:
            done[kind] += 1
        else:
            done["errors"] += 1
            done["error_statuses"][status] = done["error_statuses"].get(status, 0) + 1

    async with aiohttp.ClientSession(base_url, timeout=aiohttp.ClientTimeout(total=30),
                                     connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        stop_at = time.perf_counter() + duration

        async def login_loop(k: int) -> None:
            i = k
            while time.perf_counter() < stop_at:
                username, password = logins[i % len(logins)]
                async with http.post("/oauth2/token", data={"grant_type": "password", "username": username,
                                                            "password": password, "client_id": "imray-app"}) as r:
                    await r.read()
                    count("logins", r.status)
                i += concurrency

        async def history_loop(k: int, history: list[tuple[str, str]]) -> None:
            token, conv = history[k % len(history)]
            while time.perf_counter() < stop_at:
                async with http.get(f"/api/conversations/{conv}/messages", params={"after_seq": "0", "limit": "50"},
                                    headers={"Authorization": f"Bearer {token}"}) as r:
                    await r.read()
                    count("history", r.status)

        start = time.perf_counter()
        if history is None:
            await asyncio.gather(*(login_loop(k) for k in range(concurrency)))
        else:
            await asyncio.gather(*(history_loop(k, history) for k in range(concurrency)))
        done["elapsed_s"] = time.perf_counter() - start
    return done


def http_worker(job: tuple[str, list[tuple[str, str]], list[tuple[str, str]] | None, float, int]) -> dict:
    return run(_http(*job))


async def _fanout(members: list[Endpoint], sender: Endpoint | None, conv: str, start_at: float, duration: float,
                  window: int, tag: str) -> dict:
    """Group fan-out: members listen; the sender (in one worker) keeps `window` messages in flight.

    The send time travels in the body (wall clock: one machine, one clock for every process).
    """
    socks = [await _open(m) for m in members]
    received = [0] * len(members)
    duplicates = order = 0
    latencies: list[float] = []
    last = [0] * len(members)
    seen: list[set[int]] = [set() for _ in members]

    async def listen(i: int, ws: ClientConnection) -> None:
        nonlocal duplicates, order
        try:
            async for raw in ws:
                for frame in frames_of(raw):
                    if frame.get("type") != "msg" or frame.get("conv") != conv:
                        continue
                    seq = frame["seq"]
                    if seq in seen[i]:
                        duplicates += 1
                        continue
                    seen[i].add(seq)
                    order += seq <= last[i]
                    last[i] = max(last[i], seq)
                    received[i] += 1
                    latencies.append((time.time() - float(frame["body"].rsplit("|", 1)[1])) * 1000)
        except ConnectionClosed:
            pass

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(socks)]
    acked: list[tuple[int, str]] = []
    sent = 0
    if sender is not None:
        ws = await _open(sender)
        in_flight = asyncio.Semaphore(window)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stop_at = time.time() + duration

        async def read_acks() -> None:
            async for raw in ws:
                for frame in frames_of(raw):
                    if frame.get("type") == "ack":
                        acked.append((frame["seq"], frame["msg_id"]))
                        in_flight.release()

        reader = asyncio.create_task(read_acks())
        while time.time() < stop_at:
            await in_flight.acquire()
            await ws.send(orjson.dumps({"type": "send", "id": f"{tag}{sent}", "conv": conv, "kind": "text",
                                        "body": f"{tag}{sent}|{time.time()}"}).decode())
            sent += 1
        await asyncio.sleep(2)
        reader.cancel()
        await ws.close()
    else:
        await asyncio.sleep(max(0.0, start_at - time.time()) + duration + 2)
    await asyncio.sleep(3)  # the last deliveries land
    for task in listeners:
        task.cancel()
    for sock in socks:
        await sock.close()
    return {"received": sum(received), "members": len(members), "per_member": received, "duplicates": duplicates,
            "order_violations": order, "delivery_ms": latencies, "sent": sent, "acked": acked}


def fanout_worker(job: tuple[list[Endpoint], Endpoint | None, str, float, float, int, str]) -> dict:
    with no_collector_pauses():
        return run(_fanout(*job))


async def send_all(sender: Endpoint, conv: str, count: int, tag: str) -> list[tuple[int, str]]:
    """Send `count` messages from one session and wait for every ack: [(seq, msg_id)]."""
    ws = await _open(sender)
    acked: list[tuple[int, str]] = []
    try:
        for n in range(count):
            await ws.send(orjson.dumps({"type": "send", "id": f"{tag}{n}", "conv": conv, "kind": "text",
                                        "body": f"{tag}{n}"}).decode())
        while len(acked) < count:
            for frame in frames_of(await asyncio.wait_for(ws.recv(), 30)):
                if frame.get("type") == "ack":
                    acked.append((frame["seq"], frame["msg_id"]))
                elif frame.get("type") == "error":
                    raise RuntimeError(f"send refused: {frame}")
    finally:
        await ws.close()
    return acked
