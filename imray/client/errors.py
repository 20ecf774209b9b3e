"""The two errors the SDK raises: an HTTP answer that is not 2xx, and an error from the socket."""

from __future__ import annotations

from typing import Any


class ImrayHttpError(Exception):
    """A non-2xx answer from imray's HTTP API.

    `status` is the HTTP status, `detail` the API's `detail` (FastAPI routes) and `error` the
    OAuth `error` code (`/oauth2/*`, e.g. `invalid_grant`); `body` is the decoded JSON body, or the
    text when it was not JSON.
    """

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        self.detail: Any = body.get("detail") if isinstance(body, dict) else None
        self.error: str | None = body.get("error") if isinstance(body, dict) else None
        super().__init__(f"HTTP {status}: {self.error or self.detail or body!r}")


class ImrayError(Exception):
    """An error from the socket side: an error frame for a send, or the reason a client closed.

    `code` is the protocol's error code (`forbidden`, `not_found`, `bad_request`, `too_large`,
    `unauthorized`, `too_many_sessions`, ...) or one of the SDK's own: `closed` (the client was
    closed), `timeout` (no `auth_ok` in time), `invalid_grant` (the login cannot be renewed).
    """

    def __init__(self, code: str, message: str = "") -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}" if message else code)
