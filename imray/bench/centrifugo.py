"""Centrifugo, the peer people would pick instead, as a second baseline in `imray bench` (issue 21).

Built once from the Go module proxy into ~/.cache/imray/centrifugo (`install`, run by the Makefile's
bench targets before the network namespace), then started on loopback with its memory engine and
history on, as issue 12 measured it: HS256 JWTs, a `chat` namespace with `history_size` 1000,
`history_ttl` 300 s, recovery forced, subscribe and publish allowed for subscribers.

The loader speaks Centrifugo's JSON protocol the way imray's loaders speak imray's: one process owns
whole sender/receiver pairs, the sender keeps `window` publishes in flight (a publish reply is the
ack), the receiver reads pushes; both subscribe to the pair's channel (publishing needs a
subscription), so the sender also gets its own publications back, which it ignores. Centrifugo
packs several replies and pushes into one WebSocket frame (newline-separated); the loader splits them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson
from jose import jwt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from imray.bench.loadgen import no_collector_pauses, run
from imray.bench.processes import stop, until_serving

MODULE = "github.com/centrifugal/centrifugo/v6"
VERSION = "v6.9.1"
CACHE = Path(os.environ.get("IMRAY_CACHE", Path.home() / ".cache" / "imray")) / "centrifugo" / VERSION
BINARY = CACHE / "bin" / "centrifugo"
SECRET = "imray-bench-centrifugo-hmac-secret-0123456789"  # a local, throwaway server's


class Closable(Protocol):
    async def close(self) -> None: ...


def install() -> Path:
    """The binary, built with `go install` the first time (minutes; needs the Go module proxy)."""
    if BINARY.exists():
        return BINARY
    go = shutil.which("go")
    if not go:
        raise RuntimeError("Centrifugo baseline: Go is needed to build it (go install) once")
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([go, "install", f"{MODULE}@{VERSION}"], check=True,
                   env={**os.environ, "GOBIN": str(BINARY.parent)})
    return BINARY


def config(port: int) -> dict:
    return {
        "http_server": {"address": "127.0.0.1", "port": port},
        "engine": {"type": "memory"},
        "log": {"level": "error"},
        "health": {"enabled": True},
        "client": {"token": {"hmac_secret_key": SECRET}, "allowed_origins": ["*"]},
        "channel": {"namespaces": [{
            "name": "chat", "history_size": 1000, "history_ttl": "300s", "force_recovery": True,
            "allow_subscribe_for_client": True, "allow_publish_for_subscriber": True}]},
    }


@contextmanager
def server(port: int, workdir: Path) -> Iterator[tuple[str, int]]:
    """A Centrifugo server on 127.0.0.1:`port` for the block; yields its client WebSocket URL and pid."""
    if not BINARY.exists():
        raise RuntimeError(f"Centrifugo is not built: run `python -m imray.bench.centrifugo` ({BINARY})")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config(port)))
    log = (workdir / "centrifugo.log").open("wb")
    proc = subprocess.Popen([str(BINARY), "--config", str(workdir / "config.json")], cwd=workdir,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            until_serving(f"http://127.0.0.1:{port}/health", proc)
        except RuntimeError as exc:
            raise RuntimeError(f"Centrifugo did not start ({exc}); see {workdir / 'centrifugo.log'}") from exc
        yield f"ws://127.0.0.1:{port}/connection/websocket", proc.pid
    finally:
        stop(proc)
        log.close()


def token(user: str, ttl_s: int = 3600) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + ttl_s}, SECRET, algorithm="HS256")


@dataclass
class _Pair:
    sent: dict[int, float] = field(default_factory=dict)  # publish command id -> when
    acked: set[int] = field(default_factory=set)
    ack_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    received: dict[int, int] = field(default_factory=dict)
    last_offset: int = 0
    order_violations: int = 0
    errors: int = 0
    in_flight: asyncio.Semaphore | None = None


async def _open(url: str, user: str, channel: str) -> ClientConnection:
    ws = await connect(url, compression=None, max_size=2**22, open_timeout=30, ping_interval=None, proxy=None)
    await ws.send(orjson.dumps({"id": 1, "connect": {"token": token(user)}}).decode())
    await ws.send(orjson.dumps({"id": 2, "subscribe": {"channel": channel}}).decode())
    replies: dict[int, dict] = {}
    while len(replies) < 2:
        for line in (await asyncio.wait_for(ws.recv(), 30)).splitlines():
            reply = orjson.loads(line)
            if "id" in reply:
                replies[reply["id"]] = reply
    if any("error" in r for r in replies.values()):
        raise RuntimeError(f"Centrifugo refused: {replies}")
    return ws


async def _read(ws: ClientConnection, state: _Pair, sender: bool) -> None:
    try:
        async for raw in ws:
            now = time.perf_counter()
            for line in raw.splitlines():
                frame = orjson.loads(line)
                if not frame:  # the server's ping: answer with a pong
                    await ws.send("{}")
                elif sender and "id" in frame:
                    cid = frame["id"]
                    if "error" in frame:
                        state.errors += 1
                    elif cid in state.sent and cid not in state.acked:
                        state.acked.add(cid)
                        state.ack_ms.append((now - state.sent[cid]) * 1000)
                    if state.in_flight:
                        state.in_flight.release()
                elif not sender and "push" in frame:
                    pub = frame["push"].get("pub")
                    if pub is None:
                        continue
                    cid = pub["data"]["i"]
                    state.received[cid] = state.received.get(cid, 0) + 1
                    offset = pub.get("offset", 0)
                    if offset <= state.last_offset:
                        state.order_violations += 1
                    state.last_offset = max(state.last_offset, offset)
                    if cid in state.sent and state.received[cid] == 1:
                        state.delivery_ms.append((now - state.sent[cid]) * 1000)
    except ConnectionClosed:
        pass


async def _one2one(url: str, first: int, count: int, duration: float, window: int) -> dict:
    states = [_Pair() for _ in range(count)]
    channels = [f"chat:p{first + i}" for i in range(count)]
    senders = [await _open(url, f"s{first + i}", ch) for i, ch in enumerate(channels)]
    receivers = [await _open(url, f"r{first + i}", ch) for i, ch in enumerate(channels)]
    readers = [asyncio.create_task(_read(ws, st, True)) for ws, st in zip(senders, states, strict=True)]
    readers += [asyncio.create_task(_read(ws, st, False)) for ws, st in zip(receivers, states, strict=True)]
    cpu_start, start = time.process_time(), time.perf_counter()
    stop_at = start + duration

    async def send_loop(i: int) -> None:
        ws, state, channel = senders[i], states[i], channels[i]
        state.in_flight = asyncio.Semaphore(window)
        n = 3  # command ids 1 and 2 were connect and subscribe
        while time.perf_counter() < stop_at:
            await state.in_flight.acquire()
            state.sent[n] = time.perf_counter()
            await ws.send(orjson.dumps({"id": n, "publish": {"channel": channel, "data": {"i": n}}}).decode())
            n += 1

    await asyncio.gather(*(send_loop(i) for i in range(count)))
    elapsed = time.perf_counter() - start
    deadline = time.perf_counter() + 15
    while time.perf_counter() < deadline:
        if all(len(s.acked) + s.errors >= len(s.sent) and len(s.received) >= len(s.acked) for s in states):
            break
        await asyncio.sleep(0.05)
    cpu = time.process_time() - cpu_start
    for ws in senders + receivers:
        await ws.close()
    for task in readers:
        task.cancel()
    return {
        "sent": sum(len(s.sent) for s in states),
        "acked": sum(len(s.acked) for s in states),
        "errors": sum(s.errors for s in states),
        "received": sum(len(s.received) for s in states),
        "duplicates": sum(sum(c - 1 for c in s.received.values() if c > 1) for s in states),
        "order_violations": sum(s.order_violations for s in states),
        "not_delivered": sum(sum(1 for cid in s.acked if cid not in s.received) for s in states),
        "elapsed_s": elapsed, "loader_cpu_s": cpu,
        "ack_ms": [x for s in states for x in s.ack_ms],
        "delivery_ms": [x for s in states for x in s.delivery_ms],
    }


def one2one_worker(job: tuple[str, int, int, float, int]) -> dict:
    """Entry point of a load-generator process: (url, first pair index, pairs, duration, window)."""
    with no_collector_pauses():
        return run(_one2one(*job))


async def _fanout(url: str, first: int, count: int, with_sender: bool, start_at: float, duration: float,
                  window: int) -> dict:
    """`count` members listen on one channel; the sender (in one worker) keeps `window` publishes in
    flight, each freed at its publish reply. The send time travels in the data (one machine's clock)."""
    channel = "chat:fanout"
    socks = [await _open(url, f"m{first + i}", channel) for i in range(count)]
    received = [0] * count
    duplicates = order = 0
    latencies: list[float] = []
    last = [0] * count

    async def listen(i: int, ws: ClientConnection) -> None:
        nonlocal duplicates, order
        try:
            async for raw in ws:
                now = time.time()
                for line in raw.splitlines():
                    frame = orjson.loads(line)
                    if not frame:
                        await ws.send("{}")
                        continue
                    pub = frame.get("push", {}).get("pub")
                    if pub is None:
                        continue
                    offset = pub.get("offset", 0)
                    if offset == last[i]:
                        duplicates += 1
                        continue
                    order += offset < last[i]
                    last[i] = max(last[i], offset)
                    received[i] += 1
                    latencies.append((now - pub["data"]["t"]) * 1000)
        except ConnectionClosed:
            pass

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(socks)]
    sent = acked = 0
    cpu_start = time.process_time()
    if with_sender:
        ws = await _open(url, "fanout-sender", channel)
        in_flight = asyncio.Semaphore(window)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stop_at = time.time() + duration

        async def read_replies() -> None:
            nonlocal acked
            async for raw in ws:
                for line in raw.splitlines():
                    frame = orjson.loads(line)
                    if not frame:
                        await ws.send("{}")
                    elif "id" in frame:
                        acked += "error" not in frame
                        in_flight.release()

        reader = asyncio.create_task(read_replies())
        n = 3
        while time.time() < stop_at:
            await in_flight.acquire()
            await ws.send(orjson.dumps({"id": n, "publish": {"channel": channel,
                                                             "data": {"t": time.time()}}}).decode())
            n += 1
            sent += 1
        await asyncio.sleep(2)
        reader.cancel()
        await ws.close()
    else:
        await asyncio.sleep(max(0.0, start_at - time.time()) + duration + 2)
    await asyncio.sleep(3)  # the last deliveries land
    cpu = time.process_time() - cpu_start
    for task in listeners:
        task.cancel()
    for sock in socks:
        await sock.close()
    return {"received": sum(received), "members": count, "per_member": received, "duplicates": duplicates,
            "order_violations": order, "delivery_ms": latencies, "sent": sent, "acked": acked,
            "loader_cpu_s": cpu}


def fanout_worker(job: tuple[str, int, int, bool, float, float, int]) -> dict:
    """Entry point of a load-generator process: (url, first member, members, sender?, start, duration, window)."""
    with no_collector_pauses():
        return run(_fanout(*job))


async def held_open(open_one: Callable[[int], Awaitable[Closable]], count: int,
                    measure: Callable[[int], None], settle_s: float = 2.0) -> int:
    """Open `count` connections one after another, then (after `settle_s`) call `measure` with how
    many are open, then close them: a reading taken at a fixed time would see only those opened by
    then (Centrifugo's 5,000 take ~9 s here: read at 3 s, they came out at 18 KB a connection, not 42)."""
    socks = [await open_one(i) for i in range(count)]
    try:
        await asyncio.sleep(settle_s)  # as imray's sessions get before theirs is read
        measure(len(socks))
    finally:
        for ws in socks:
            await ws.close()
    return len(socks)


def idle_rss_per_connection(url: str, pid: int, count: int) -> float:
    """Bytes of server RSS per idle, subscribed connection: RSS with `count` open minus RSS with none."""
    import psutil

    server = psutil.Process(pid)
    before = server.memory_info().rss
    during: list[tuple[int, int]] = []

    async def open_one(i: int) -> ClientConnection:
        return await _open(url, f"idle{i}", f"chat:idle{i % 100}")

    run(held_open(open_one, count, lambda opened: during.append((server.memory_info().rss, opened))))
    rss, opened = during[0]
    return (rss - before) / max(1, opened)


if __name__ == "__main__":
    print(install())
