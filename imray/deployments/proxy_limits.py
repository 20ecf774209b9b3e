"""Limits on client connections for Serve's Python proxy (the HTTP ingress when HAProxy is off).

Serve's proxy runs uvicorn, which waits forever for the first request on a new connection and takes
any number of connections from one address: idle connections could pile up until the proxy has no
file descriptors left. Serve offers one hook into that process, `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`
(`imray ray-env` points it at `install`), called before the proxy serves: it makes uvicorn's "auto"
HTTP protocol this module's, which closes a connection that has not sent a whole request head within
the request timeout (408 first), connections from one address beyond the cap, and connections beyond
a cap on all of them. HAProxy does the same when it is the ingress (`imray/bin/haproxy-forwardfor`).

uvicorn has no cap on connections in all (`limit_concurrency` answers 503 to requests but keeps the
idle connections): a crowd of addresses, each under its cap, would take every file descriptor of the
proxy's process, which also holds its connections to Ray. With the cap at 0 ("auto") it is the fd
limit less a reserve for Ray's own sockets; a connection beyond it is closed at once.
"""

from __future__ import annotations

import asyncio
import os
import resource
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_TIMEOUT_ENV = "IMRAY_INGRESS_REQUEST_TIMEOUT_S"
PER_ADDRESS_ENV = "IMRAY_INGRESS_CONNECTIONS_PER_ADDRESS"
MAX_CONNECTIONS_ENV = "IMRAY_INGRESS_MAX_CONNECTIONS"
RAY_RESERVE_FDS = 1024  # the proxy's own sockets and files: gRPC to the replicas and the GCS, logs
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class ConnectionLimits:
    """What `install` set, and the open connections per client address in this process."""

    request_timeout_s: float = 0.0  # 0: none
    per_address: int = 0  # 0: no cap
    max_connections: int = 0  # 0: no cap
    open: dict[str, int] = {}  # one table for the process, shared on purpose
    open_in_all: int = 0


class _Limited:
    """Mixed into a uvicorn HTTP protocol class: the request-head timeout and the cap per address."""

    transport: asyncio.Transport
    client: tuple[str, int] | None
    loop: asyncio.AbstractEventLoop
    _imray_address: str
    _imray_timer: asyncio.TimerHandle | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]  # the uvicorn protocol after us
        self._imray_timer = None
        self._imray_address = address = self.client[0] if self.client else ""
        ConnectionLimits.open[address] = ConnectionLimits.open.get(address, 0) + 1
        ConnectionLimits.open_in_all += 1
        if 0 < ConnectionLimits.per_address < ConnectionLimits.open[address] or \
                0 < ConnectionLimits.max_connections < ConnectionLimits.open_in_all:
            transport.close()
            return
        self._imray_arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._imray_disarm()
        ConnectionLimits.open_in_all -= 1
        left = ConnectionLimits.open.get(self._imray_address, 1) - 1
        if left > 0:
            ConnectionLimits.open[self._imray_address] = left
        else:
            ConnectionLimits.open.pop(self._imray_address, None)
        super().connection_lost(exc)  # type: ignore[misc]

    def _imray_arm(self) -> None:
        if ConnectionLimits.request_timeout_s > 0 and self._imray_timer is None:
            self._imray_timer = self.loop.call_later(ConnectionLimits.request_timeout_s, self._imray_timed_out)

    def _imray_disarm(self) -> None:
        if self._imray_timer is not None:
            self._imray_timer.cancel()
            self._imray_timer = None

    def _imray_timed_out(self) -> None:
        self._imray_timer = None
        if not self.transport.is_closing():
            self.transport.write(TIMED_OUT)
            self.transport.close()


class LimitedH11Protocol(_Limited, H11Protocol):
    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None:  # a request head arrived (later ones on the connection: keep-alive's part)
            self._imray_disarm()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools: uvicorn's "auto" is h11
    LimitedHTTPProtocol: type[asyncio.Protocol] = LimitedH11Protocol
else:
    class LimitedHttpToolsProtocol(_Limited, HttpToolsProtocol):
        def on_message_begin(self) -> None:  # each request on the connection gets the same time for its head
            super().on_message_begin()
            self._imray_arm()

        def on_headers_complete(self) -> None:
            self._imray_disarm()
            super().on_headers_complete()

    LimitedHTTPProtocol = LimitedHttpToolsProtocol


def fd_limited_connections() -> int:
    """Connections this process can hold beside Ray's own sockets: its fd limit raised to the hard
    one (as Ray's workers do), less a reserve."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(soft - RAY_RESERVE_FDS, soft // 2)


def configure(request_timeout_s: float, per_address: int, max_connections: int = 0) -> None:
    """Make uvicorn's "auto" HTTP protocol the limited one, in this process, from now on.
    `max_connections` 0 means as many as the fd limit allows."""
    from uvicorn import config

    ConnectionLimits.request_timeout_s, ConnectionLimits.per_address = request_timeout_s, per_address
    ConnectionLimits.max_connections = max_connections or fd_limited_connections()
    config.HTTP_PROTOCOLS["auto"] = f"{__name__}:LimitedHTTPProtocol"


def install() -> list[Any]:
    """Serve's proxy callback: the limits from the environment `imray ray-env` set; no middlewares."""
    configure(float(os.environ.get(REQUEST_TIMEOUT_ENV, "0")), int(os.environ.get(PER_ADDRESS_ENV, "0")),
              int(os.environ.get(MAX_CONNECTIONS_ENV, "0")))
    return []
