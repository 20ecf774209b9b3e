"""The offline-notification webhook's HTTP side: one signed POST per attempt (httpx, async)."""

from __future__ import annotations

import time

import httpx

from imray.domain.notifications import signed_headers


class WebhookUnreachable(Exception):
    """The attempt got no HTTP answer (refused, reset, timed out, not HTTP)."""


class WebhookClient:
    """POSTs signed bodies to one URL. The secret stays in here: never logged, never in an error."""

    def __init__(self, url: str, secret: str, timeout_s: float, connections: int) -> None:
        self._url = url
        self._secret = secret
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        # No redirects (a 3xx is a refusal) and no proxy from the environment: the operator's URL as it is.
        self._http = httpx.AsyncClient(timeout=timeout_s, limits=limits, follow_redirects=False, trust_env=False)

    async def post(self, body: bytes, notice_id: str, attempt: int) -> int:
        """One attempt; its HTTP status. The timestamp is taken (and signed) per attempt."""
        headers = signed_headers(self._secret, int(time.time()), body, notice_id, attempt)
        try:
            # Streamed and closed unread: what the receiver answers beyond its status is not wanted.
            async with self._http.stream("POST", self._url, content=body, headers=headers) as response:
                return response.status_code
        except httpx.HTTPError as exc:
            raise WebhookUnreachable(type(exc).__name__) from None

    async def close(self) -> None:
        await self._http.aclose()
