"""imray's HTTP API without state: accounts, OAuth grants, conversations, history, groups, files."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from imray.client.errors import ImrayHttpError

PUBLIC_CLIENT = "imray-app"  # the built-in public first-party OAuth client
HISTORY_PAGE = 200  # the largest page the history route serves


@dataclass(frozen=True)
class Tokens:
    """A token-endpoint answer (password or refresh grant): the login's tokens and its socket pin."""

    user_id: int
    access_token: str
    refresh_token: str
    expires_in: int
    socket_url: str
    socket_node: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> Tokens:
        return cls(int(body["user_id"]), body["access_token"], body["refresh_token"], int(body["expires_in"]),
                   body["socket_url"], body["socket_node"], body)


@dataclass(frozen=True)
class Assignment:
    """A fresh socket pin from `POST /api/socket/assign`, with an access token pinned to it."""

    socket_url: str
    socket_node: str
    access_token: str
    expires_in: int


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for an access token."""
    return {"Authorization": f"Bearer {token}"}


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


class HttpApi:
    """The HTTP side of imray: one `httpx.AsyncClient` (`.http`) on `base_url`.

    The typed methods return decoded JSON (or the dataclasses above) and raise `ImrayHttpError` for
    any answer that is not 2xx; `request` returns the raw `httpx.Response` for callers that want to
    look at the status themselves. Use it as `async with HttpApi(url) as api:` or call `aclose()`.
    """

    def __init__(self, base_url: str, *, timeout: float = 30, client_id: str = PUBLIC_CLIENT) -> None:
        self.base_url = base_url
        self.client_id = client_id
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> HttpApi:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        """One call as it is: `kw` goes to httpx (`json`, `params`, `data`, `files`, `headers`...)."""
        headers = {**(kw.pop("headers", None) or {}), **(bearer(token) if token else {})}
        return await self.http.request(method, path, headers=headers, **kw)

    async def _json(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        response = await self.request(method, path, token, **kw)
        if not response.is_success:
            raise ImrayHttpError(response.status_code, _body(response))
        return None if response.status_code == 204 or not response.content else response.json()

    # Accounts and OAuth

    async def register(self, username: str, password: str, nickname: str | None = None) -> dict[str, Any]:
        """Create an account: `{"id","username","nickname","avatar_url"}`."""
        body: dict[str, Any] = {"username": username, "password": password}
        if nickname is not None:
            body["nickname"] = nickname
        result: dict[str, Any] = await self._json("POST", "/api/users", json=body)
        return result

    async def login(self, username: str, password: str) -> Tokens:
        """The password grant."""
        return Tokens.from_response(await self._json("POST", "/oauth2/token", data={
            "grant_type": "password", "username": username, "password": password, "client_id": self.client_id}))

    async def refresh(self, refresh_token: str, socket_node: str | None = None) -> Tokens:
        """The refresh grant (the refresh token rotates); `socket_node` keeps the pin on that node while
        it is alive, so an open socket there can take the new access token in a `refresh` frame."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": self.client_id}
        if socket_node:
            form["socket_node"] = socket_node
        return Tokens.from_response(await self._json("POST", "/oauth2/token", data=form))

    async def revoke(self, refresh_token: str) -> None:
        """End the login (RFC 7009): its tokens stop working and its sockets close with 4001."""
        await self._json("POST", "/oauth2/revoke", data={"token": refresh_token, "client_id": self.client_id})

    async def assign(self, token: str) -> Assignment:
        """A fresh socket pin, for when the pinned node is gone."""
        body = await self._json("POST", "/api/socket/assign", token)
        return Assignment(body["socket_url"], body["socket_node"], body["access_token"], int(body["expires_in"]))

    async def me(self, token: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", "/api/users/me", token)
        return result

    # Conversations and history

    async def conversations(self, token: str, page: int = 200) -> list[dict[str, Any]]:
        """The whole conversation list, every page read (pinned first, then by latest activity)."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": page}
        while True:
            items: list[dict[str, Any]] = await self._json("GET", "/api/conversations", token, params=params)
            out.extend(items)
            if len(items) < page:
                return out
            params = {"limit": page, "after": items[-1]["cursor"]}

    async def history(self, token: str, conv: str, *, after_seq: int | None = None, before_seq: int | None = None,
                      limit: int | None = None) -> list[dict[str, Any]]:
        """One page of a conversation's messages, seq ascending (§3: `limit` 1..200, default 50)."""
        params = {k: v for k, v in (("after_seq", after_seq), ("before_seq", before_seq), ("limit", limit))
                  if v is not None}
        body = await self._json("GET", f"/api/conversations/{conv}/messages", token, params=params)
        messages: list[dict[str, Any]] = body["messages"]
        return messages

    async def all_history(self, token: str, conv: str, *, after_seq: int = 0,
                          before_seq: int | None = None) -> list[dict[str, Any]]:
        """Every message after `after_seq` (and below `before_seq` when given), in pages of 200."""
        out: list[dict[str, Any]] = []
        while True:
            page = await self.history(token, conv, after_seq=out[-1]["seq"] if out else after_seq,
                                      before_seq=before_seq, limit=HISTORY_PAGE)
            out.extend(page)
            if len(page) < HISTORY_PAGE:
                return out

    # Groups

    async def create_group(self, token: str, name: str, members: list[int] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("POST", "/api/groups", token,
                                                  json={"name": name, "members": members or []})
        return result

    async def group(self, token: str, group_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/api/groups/{group_id}", token)
        return result

    async def add_members(self, token: str, group_id: int, user_ids: list[int]) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("POST", f"/api/groups/{group_id}/members", token,
                                                  json={"user_ids": user_ids})
        return result

    async def remove_member(self, token: str, group_id: int, user_id: int) -> None:
        await self._json("DELETE", f"/api/groups/{group_id}/members/{user_id}", token)

    # Files

    async def upload_file(self, token: str, data: bytes, filename: str = "file",
                          content_type: str = "application/octet-stream") -> dict[str, Any]:
        """Upload a chat file: `{"file_id","url","content_type","size"}` (the type is sniffed)."""
        result: dict[str, Any] = await self._json("POST", "/api/files", token,
                                                  files={"file": (filename, data, content_type)})
        return result
