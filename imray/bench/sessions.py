"""Connection scale and the reconnect storm: many authenticated sessions in a few processes.

Each load-generator process holds its share of the sessions and obeys commands from the bench
over a pipe: connect them all, drop them all (the transport is cut, as when a network goes), and
the storm (each session comes back at a random moment within a window, re-authenticates and
catches up until it holds its conversation's last seq: with its last seq in the auth frame, or
from HTTP history). Sessions leave from several
127.0.0.x source addresses, so one address's ephemeral ports do not run out.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import aiohttp
import orjson
from websockets.asyncio.client import ClientConnection

from imray.bench.loadgen import no_collector_pauses, open_resumed, open_session, run

RETRIES = 8  # per session and phase, with backoff: a real client retries too


@dataclass(frozen=True)
class SessionSpec:
    user_id: int
    url: str
    token: str
    conv: str
    source: str  # local address the socket leaves from


@dataclass
class SessionState:
    spec: SessionSpec
    ws: ClientConnection | None = None
    seqs: set[int] = field(default_factory=set)
    last_seq: int = 0


@dataclass
class Tally:
    ok: int = 0
    errors: int = 0  # failed attempts (each retried)
    failed: int = 0  # sessions that never made it
    first_error: str = ""
    done_at: list[float] = field(default_factory=list)

    def error(self, exc: BaseException | str) -> None:
        self.errors += 1
        self.first_error = self.first_error or repr(exc)[:200]


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _open(spec: SessionSpec) -> ClientConnection:
    # batch: frames come in as few messages as the node can pack (as the SDKs ask)
    return await open_session(spec.url, spec.token, spec.source, wait_s=60, batch=True)


async def _with_retries(tally: Tally, step) -> bool:
    for attempt in range(RETRIES):
        try:
            await step()
            tally.ok += 1
            tally.done_at.append(time.time())
            return True
        except Exception as exc:  # counted, then retried after a backoff, as a client would
            tally.error(exc)
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt) * (0.5 + random.random()))
    tally.failed += 1
    return False


class Worker:
    def __init__(self, specs: list[SessionSpec], base_url: str, concurrency: int) -> None:
        self.sessions = [SessionState(spec) for spec in specs]
        self.base_url = base_url
        self.gate = asyncio.Semaphore(concurrency)
        self.http: aiohttp.ClientSession | None = None

    async def connect_all(self) -> dict:
        tally = Tally()
        start = time.time()

        async def one(s: SessionState) -> None:
            async with self.gate:
                s.ws = await _open(s.spec)

        await asyncio.gather(*(_with_retries(tally, lambda s=s: one(s)) for s in self.sessions))
        return {"connected": tally.ok, "errors": tally.errors, "failed": tally.failed, "start": start,
                "end": max(tally.done_at, default=start), "first_error": tally.first_error}

    def drop_all(self) -> dict:
        for s in self.sessions:
            if s.ws is not None:
                s.ws.transport.abort()  # no close handshake: the network went away
                s.ws = None
        return {"dropped": len(self.sessions)}

    async def storm(self, window_s: float, last_seq: dict[str, int], start_at: float, over_socket: bool = True) -> dict:
        """Every session comes back within `window_s` of `start_at` and catches up to `last_seq`:
        over its socket (a `resume` frame, issue 21), or through HTTP history (`over_socket` False)."""
        if self.http is None:
            source = self.sessions[0].spec.source if self.sessions else "127.0.0.1"
            self.http = aiohttp.ClientSession(self.base_url, timeout=aiohttp.ClientTimeout(total=60),
                                              connector=aiohttp.TCPConnector(limit=64, local_addr=(source, 0)))
        http = self.http
        tally = Tally()
        gaps = duplicates = 0

        def take(s: SessionState, seq: int) -> None:
            nonlocal gaps, duplicates
            duplicates += seq in s.seqs
            gaps += seq != s.last_seq + 1
            s.seqs.add(seq)
            s.last_seq = seq

        async def resumed(s: SessionState) -> ClientConnection:
            """Its last seq in the auth frame: auth_ok, the catch-up and resume_ok come back together."""
            ws, frames = await open_resumed(s.spec.url, s.spec.token, {s.spec.conv: s.last_seq}, s.spec.source, 60)
            if s.spec.conv in frames[-1]["refused"]:
                ws.transport.abort()
                raise RuntimeError(f"resume refused: {frames[-1]['refused']}")
            for frame in frames:
                if frame.get("type") == "msg" and frame["conv"] == s.spec.conv:
                    take(s, frame["seq"])
            return ws

        async def back(s: SessionState) -> None:
            if s.ws is None:
                async with self.gate:
                    s.ws = await (resumed(s) if over_socket else _open(s.spec))
            target = last_seq.get(s.spec.conv, 0)
            while s.last_seq < target:  # history after the last seq this session holds
                async with http.get(f"/api/conversations/{s.spec.conv}/messages",
                                    params={"after_seq": str(s.last_seq), "limit": "200"},
                                    headers={"Authorization": f"Bearer {s.spec.token}"}) as r:
                    if r.status != 200:
                        raise RuntimeError(f"history: HTTP {r.status}")
                    page = orjson.loads(await r.read())["messages"]
                if not page:
                    raise RuntimeError(f"history ends at {s.last_seq}, acked up to {target}")
                for m in page:
                    take(s, m["seq"])

        async def later(s: SessionState) -> bool:
            await asyncio.sleep(max(0.0, start_at + random.random() * window_s - time.time()))
            return await _with_retries(tally, lambda: back(s))

        await asyncio.gather(*(later(s) for s in self.sessions))
        return {"current": tally.ok, "errors": tally.errors, "failed": tally.failed, "gaps": gaps,
                "duplicates": duplicates, "end": max(tally.done_at, default=start_at),
                "first_error": tally.first_error}

    async def close(self) -> None:
        self.drop_all()
        if self.http is not None:
            await self.http.close()


async def _serve(pipe: Connection, specs: list[SessionSpec], base_url: str, concurrency: int) -> None:
    worker = Worker(specs, base_url, concurrency)
    loop = asyncio.get_running_loop()
    while True:
        command, *args = await loop.run_in_executor(None, pipe.recv)
        if command == "connect":
            with no_collector_pauses():  # 10,000 sessions here: full collections paused it 0.1-0.3 s each
                done = await worker.connect_all()
            pipe.send(done)
        elif command == "drop":
            pipe.send(worker.drop_all())
        elif command == "storm":
            with no_collector_pauses():
                done = await worker.storm(*args)
            pipe.send(done)
        else:
            await worker.close()
            pipe.send({"closed": True})
            return


def session_worker(pipe: Connection, specs: list[SessionSpec], base_url: str, concurrency: int) -> None:
    """Entry point of a session-holding load-generator process."""
    _raise_fd_limit()
    try:
        run(_serve(pipe, specs, base_url, concurrency))
    except Exception as exc:  # the bench must hear of it rather than wait forever
        pipe.send({"fatal": repr(exc)})
