"""RawSocket: one WebSocket session speaking frames as they are (no ordering, no reconnects)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Frames = list[dict[str, Any]]


@dataclass
class RawSocket:
    """One WebSocket session: a reader task files every frame it receives in `frames`.

    For exact wire checks and malformed frames; applications use `ImrayClient`.
    """

    ws: ClientConnection
    frames: Frames = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None
    auth: dict[str, Any] | None = None

    @classmethod
    async def open(cls, url: str, token: str | None, authenticate: bool = True) -> RawSocket:
        """Connect to `url`; with `authenticate`, send the auth frame and keep its answer in `auth`."""
        ws = await connect(url, compression=None, max_size=2**22, open_timeout=20)
        sock = cls(ws)
        if authenticate:
            await sock.send_json({"type": "auth", "token": token})
            sock.auth = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
        sock.reader = asyncio.create_task(sock._read())
        return sock

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(orjson.loads(raw))
                self.changed.set()
        except ConnectionClosed:
            self.changed.set()

    async def send_json(self, frame: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def send_raw(self, raw: str | bytes) -> None:
        await self.ws.send(raw)

    async def wait(self, predicate: Callable[[Frames], Any], timeout: float = 20.0) -> Frames:  # noqa: ASYNC109
        """Frames so far, once `predicate(frames)` holds; AssertionError if the socket closes first,
        TimeoutError after `timeout` seconds."""
        async def until() -> Frames:
            while not predicate(self.frames):
                self.changed.clear()
                if self.ws.close_code is not None and not predicate(self.frames):
                    raise AssertionError(f"socket closed ({self.ws.close_code}); frames: {self.frames[-5:]}")
                await self.changed.wait()
            return self.frames

        return await asyncio.wait_for(until(), timeout)

    def of_type(self, kind: str) -> Frames:
        return [f for f in self.frames if f.get("type") == kind]

    async def send_text(self, conv: str, body: str, client_id: str | None = None) -> dict[str, Any]:
        """Send a text message and wait for the ack (or the error) for its client id."""
        client_id = client_id or uuid.uuid4().hex
        await self.send_json({"type": "send", "id": client_id, "conv": conv, "kind": "text", "body": body})
        frames = await self.wait(lambda fs: any(f.get("id") == client_id and f["type"] in ("ack", "error")
                                                for f in fs))
        return next(f for f in reversed(frames) if f.get("id") == client_id and f["type"] in ("ack", "error"))

    async def request(self, frame: dict[str, Any], reply_type: str) -> dict[str, Any]:
        """Send a frame and wait for the next frame of `reply_type` after it."""
        before = len(self.frames)
        await self.send_json(frame)
        frames = await self.wait(lambda fs: any(f["type"] == reply_type for f in fs[before:]))
        return next(f for f in frames[before:] if f["type"] == reply_type)

    async def close(self) -> None:
        await self.ws.close()
        if self.reader:
            await asyncio.gather(self.reader, return_exceptions=True)
