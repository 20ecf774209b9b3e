"""Test-only helpers on top of the Python SDK (imray.client): users, logins, chat pairs, polling."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from imray.client import PUBLIC_CLIENT, HttpApi, RawSocket, bearer

__all__ = ["PASSWORD", "PUBLIC_CLIENT", "Api", "ChatPair", "Login", "Socket", "bearer", "chat_pair", "direct",
           "eventually", "in_chat_pair", "one_per_node", "process_alive", "unique"]

PASSWORD = "correct horse battery"
Socket = RawSocket


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:  # noqa: ASYNC109
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


class Api(HttpApi):
    """The SDK's HttpApi with the shapes tests use: `register()` makes a fresh user (201 asserted),
    `login()` returns a `Login`, `user()` does both, `get`/`post` return the raw response."""

    async def close(self) -> None:
        await self.aclose()

    async def register(self, username: str | None = None, password: str = PASSWORD,
                       nickname: str | None = None) -> dict:
        r = await self.http.post("/api/users", json={"username": username or unique(), "password": password,
                                                     **({"nickname": nickname} if nickname is not None else {})})
        assert r.status_code == 201, r.text
        return r.json()

    async def login(self, username: str, password: str = PASSWORD) -> Login:
        tokens = await super().login(username, password)
        return Login(tokens.user_id, username, tokens.access_token, tokens.refresh_token, tokens.socket_url,
                     tokens.socket_node, tokens.raw)

    async def user(self) -> Login:
        created = await self.register()
        return await self.login(created["username"])

    async def get(self, path: str, token: str, **params: Any) -> httpx.Response:
        return await self.http.get(path, params=params, headers=bearer(token))

    async def post(self, path: str, token: str, body: Any) -> httpx.Response:
        return await self.http.post(path, json=body, headers=bearer(token))

    async def history(self, token: str, conv: str, **params: Any) -> list[dict]:
        params = {k: v for k, v in params.items() if v is not None}
        r = await self.get(f"/api/conversations/{conv}/messages", token, **params)
        assert r.status_code == 200, r.text
        return r.json()["messages"]


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
    sa: RawSocket
    sb: RawSocket
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


async def in_chat_pair(base_url: str, scenario: Callable[..., Awaitable[None]]) -> None:
    """Run `scenario(api, a, b, sa, sb, conv)` with a fresh chat pair, closed afterwards."""
    async with chat_pair(base_url) as pair:
        await scenario(pair.api, pair.a, pair.b, pair.sa, pair.sb, pair.conv)


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie is dead, only not reaped): after a SIGKILL, tests
    wait until this is False before they assert what the loss did."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between open and read
        return False
