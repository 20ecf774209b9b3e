"""The bench's rolling-restart scenario (issue 20): pairs chat across the socket nodes while every node
is drained and replaced in turn (`SocketSupervisor.restart_node`, what `imray restart --rolling` runs).

Each client follows `move` frames as an app would: it opens a socket on the new node with the token
the frame carries, sends what was not acked again with the same id, and reads history after what it
has. The bench's audit then checks history against every ack; this scenario adds what each receiver
missed (live or caught up) and how long the restart took.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from imray.bench.loadgen import Pair

ACK_TIMEOUT_S = 20.0


@dataclass
class Mover:
    user_id: int
    url: str
    token: str
    conv: str
    http: httpx.AsyncClient
    ws: ClientConnection | None = None
    received: set[int] = field(default_factory=set)
    moves: int = 0
    _inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    _reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        ws = await connect(self.url, compression=None, open_timeout=20)
        await ws.send(orjson.dumps({"type": "auth", "token": self.token}).decode())
        first = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
        if first.get("type") != "auth_ok":
            raise RuntimeError(f"auth refused: {first}")
        self.ws = ws
        self._reader = asyncio.create_task(self._read(ws))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame.get("type") == "msg" and frame.get("conv") == self.conv:
                    self.received.add(frame["seq"])
                else:
                    self._inbox.put_nowait(frame)
        except ConnectionClosed:
            pass

    async def move(self, frame: dict[str, Any]) -> None:
        """To the node the frame names, then catch up from history after what it has."""
        old, old_reader = self.ws, self._reader
        self.url, self.token = frame["socket_url"], frame["access_token"]
        await self.connect()
        self.moves += 1
        if old is not None:
            await old.close()
        if old_reader is not None:
            await asyncio.gather(old_reader, return_exceptions=True)
        await self.catch_up()

    async def catch_up(self) -> None:
        after = 0
        while after + 1 in self.received:
            after += 1
        while True:
            r = await self.http.get(f"/api/conversations/{self.conv}/messages", params={"after_seq": after,
                                    "limit": 200}, headers={"Authorization": f"Bearer {self.token}"})
            r.raise_for_status()
            page = r.json()["messages"]
            if not page:
                return
            self.received.update(m["seq"] for m in page)
            after = page[-1]["seq"]

    async def send(self, client_id: str, body: str) -> tuple[int, str]:
        """Until acked (the same id after a move or an error): (seq, msg_id)."""
        deadline = time.monotonic() + ACK_TIMEOUT_S * 3
        while time.monotonic() < deadline:
            assert self.ws is not None
            try:
                await self.ws.send(orjson.dumps({"type": "send", "id": client_id, "conv": self.conv,
                                                 "kind": "text", "body": body}).decode())
            except ConnectionClosed:
                pass
            while True:
                try:
                    frame = await asyncio.wait_for(self._inbox.get(), ACK_TIMEOUT_S)
                except TimeoutError:
                    break  # send it again
                if frame.get("type") == "move":
                    await self.move(frame)
                    break
                if frame.get("id") == client_id and frame.get("type") == "ack":
                    return frame["seq"], frame["msg_id"]
                if frame.get("id") == client_id and frame.get("type") == "error":
                    await asyncio.sleep(0.05)
                    break
        raise RuntimeError(f"{client_id} was never acked")

    async def follow(self) -> None:
        """A receiver: moves when told."""
        while not self._inbox.empty():
            frame = self._inbox.get_nowait()
            if frame.get("type") == "move":
                await self.move(frame)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


async def rolling_restart(base_url: str, pairs: list[Pair], restart: Any, node_ids: list[str],
                          acked: dict[str, list]) -> dict[str, Any]:
    """Traffic on every pair while `restart(node_id)` (blocking, run in a thread) replaces each node."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        senders = [Mover(p.sender.user_id, p.sender.url, p.sender.token, p.conv, http) for p in pairs]
        receivers = [Mover(p.receiver.user_id, p.receiver.url, p.receiver.token, p.conv, http) for p in pairs]
        await asyncio.gather(*(m.connect() for m in [*senders, *receivers]))
        stop = asyncio.Event()
        sent = [0] * len(senders)

        async def talk(k: int, sender: Mover) -> None:
            for i in range(1_000_000):  # bounded by `stop`, set after the restart (minutes at most)
                if stop.is_set():
                    break
                acked.setdefault(sender.conv, []).append(await sender.send(f"roll{k}.{i}", f"roll {k} {i}"))
                sent[k] += 1

        async def listen(receiver: Mover) -> None:
            while not stop.is_set():
                await receiver.follow()
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(talk(k, s)) for k, s in enumerate(senders)]
        tasks += [asyncio.create_task(listen(r)) for r in receivers]
        await asyncio.sleep(2)
        started = time.monotonic()
        steps = []
        for node_id in node_ids:
            steps.append(await asyncio.to_thread(restart, node_id))
        took = time.monotonic() - started
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*tasks)
        for receiver in receivers:
            await receiver.follow()
            await receiver.catch_up()
        missed = 0
        for sender, receiver in zip(senders, receivers, strict=True):
            missed += len({seq for seq, _ in acked.get(sender.conv, [])} - receiver.received)
        await asyncio.gather(*(m.close() for m in [*senders, *receivers]))
        return {"nodes": len(node_ids), "took_s": round(took, 2), "steps": steps,
                "acked": sum(sent), "missed_by_receivers": missed,
                "moves": sum(m.moves for m in [*senders, *receivers])}
