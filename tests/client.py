"""A small imray client, speaking the wire contract exactly as an app would (HTTP + WebSocket)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PUBLIC_CLIENT = "imray-app"
PASSWORD = "correct horse battery"


async def eventually(check, timeout: float, what: str):  # noqa: ASYNC109
    """The first truthy result of `await check()`, polled until `timeout` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.3)


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@dataclass
class Login:
    user_id: int
    username: str
    access_token: str
    refresh_token: str
    socket_url: str
    socket_node: str
    raw: dict


class Api:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)

    async def close(self) -> None:
        await self.http.aclose()

    async def register(self, username: str | None = None, password: str = PASSWORD) -> dict:
        r = await self.http.post("/api/users", json={"username": username or unique(), "password": password})
        assert r.status_code == 201, r.text
        return r.json()

    async def login(self, username: str, password: str = PASSWORD) -> Login:
        r = await self.http.post("/oauth2/token", data={"grant_type": "password", "username": username,
                                                        "password": password, "client_id": PUBLIC_CLIENT})
        assert r.status_code == 200, r.text
        body = r.json()
        return Login(body["user_id"], username, body["access_token"], body["refresh_token"], body["socket_url"],
                     body["socket_node"], body)

    async def user(self) -> Login:
        created = await self.register()
        return await self.login(created["username"])

    async def get(self, path: str, token: str, **params: Any) -> httpx.Response:
        return await self.http.get(path, params=params, headers=bearer(token))

    async def post(self, path: str, token: str, body: Any) -> httpx.Response:
        return await self.http.post(path, json=body, headers=bearer(token))

    async def history(self, token: str, conv: str, **params: Any) -> list[dict]:
        r = await self.get(f"/api/conversations/{conv}/messages", token, **params)
        assert r.status_code == 200, r.text
        return r.json()["messages"]

    async def all_history(self, token: str, conv: str) -> list[dict]:
        out: list[dict] = []
        while True:
            page = await self.history(token, conv, after_seq=out[-1]["seq"] if out else 0, limit=200)
            if not page:
                return out
            out.extend(page)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Socket:
    """One WebSocket session: a reader task files every frame it receives."""

    ws: ClientConnection
    frames: list[dict] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task | None = None
    auth: dict | None = None

    @classmethod
    async def open(cls, url: str, token: str | None, authenticate: bool = True) -> Socket:
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

    async def send_json(self, frame: dict) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def send_raw(self, raw: str | bytes) -> None:
        await self.ws.send(raw)

    async def wait(self, predicate, timeout: float = 20.0) -> list[dict]:  # noqa: ASYNC109
        """Frames so far, once `predicate(frames)` holds; fails the test after `timeout` seconds."""
        async def until() -> list[dict]:
            while not predicate(self.frames):
                self.changed.clear()
                if self.ws.close_code is not None and not predicate(self.frames):
                    raise AssertionError(f"socket closed ({self.ws.close_code}); frames: {self.frames[-5:]}")
                await self.changed.wait()
            return self.frames

        return await asyncio.wait_for(until(), timeout)

    def of_type(self, kind: str) -> list[dict]:
        return [f for f in self.frames if f.get("type") == kind]

    async def send_text(self, conv: str, body: str, client_id: str | None = None) -> dict:
        """Send and wait for the ack (or the error) for this client id."""
        client_id = client_id or uuid.uuid4().hex
        await self.send_json({"type": "send", "id": client_id, "conv": conv, "kind": "text", "body": body})
        frames = await self.wait(lambda fs: any(f.get("id") == client_id and f["type"] in ("ack", "error")
                                                for f in fs))
        return next(f for f in reversed(frames) if f.get("id") == client_id and f["type"] in ("ack", "error"))

    async def request(self, frame: dict, reply_type: str) -> dict:
        """Send a frame and wait for the next frame of `reply_type` after it."""
        before = len(self.frames)
        await self.send_json(frame)
        frames = await self.wait(lambda fs: any(f["type"] == reply_type for f in fs[before:]))
        return next(f for f in frames[before:] if f["type"] == reply_type)

    async def close(self) -> None:
        await self.ws.close()
        if self.reader:
            await asyncio.gather(self.reader, return_exceptions=True)


def direct(a: int, b: int) -> str:
    lo, hi = sorted((a, b))
    return f"d:{lo}:{hi}"


async def one_per_node(api: Api, nodes: int = 2, attempts: int = 20) -> list[Login]:
    """Users pinned to `nodes` different socket nodes (login spreads by least connections)."""
    found: dict[str, Login] = {}
    for _ in range(attempts):
        login = await api.user()
        found.setdefault(login.socket_node, login)
        if len(found) == nodes:
            return sorted(found.values(), key=lambda login: login.socket_node)
    raise AssertionError(f"logins landed on {sorted(found)} only")


@dataclass
class ChatPair:
    """Two users pinned to different socket nodes, each with a live session, and their conversation."""

    api: Api
    a: Login
    b: Login
    sa: Socket
    sb: Socket
    conv: str


@asynccontextmanager
async def chat_pair(base_url: str) -> AsyncIterator[ChatPair]:
    api = Api(base_url)
    a, b = await one_per_node(api)
    sa = await Socket.open(a.socket_url, a.access_token)
    sb = await Socket.open(b.socket_url, b.access_token)
    try:
        yield ChatPair(api, a, b, sa, sb, direct(a.user_id, b.user_id))
    finally:
        for sock in (sa, sb):
            await sock.close()
        await api.close()


async def in_chat_pair(base_url: str, scenario) -> None:
    """Run `scenario(api, a, b, sa, sb, conv)` with a fresh chat pair, closed afterwards."""
    async with chat_pair(base_url) as pair:
        await scenario(pair.api, pair.a, pair.b, pair.sa, pair.sb, pair.conv)


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie is dead, only not reaped): after a SIGKILL, tests
    wait until this is False before they assert what the loss did."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
