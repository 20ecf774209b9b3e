"""The HTTP ingress's limits on client connections, as `imray ray-env` hands them to Serve's HAProxy (no cluster)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from imray import localcluster
from imray.settings import load_settings

SERVE_LIKE_CONFIG = """global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    timeout server 60s
frontend http_frontend
    bind 127.0.0.1:18999
    default_backend app
backend app
    server replica 127.0.0.1:18998
"""


def haproxy_env(monkeypatch: pytest.MonkeyPatch, **settings: object) -> dict[str, str]:
    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)
    return localcluster.ray_environment(load_settings(**settings))


def test_ray_env_carries_the_connection_limits_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = haproxy_env(monkeypatch, http_request_timeout_s=7, http_idle_timeout_s=45, http_connections_per_address=99)
    assert env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] == "45"  # Serve's default is an hour
    assert env["IMRAY_INGRESS_REQUEST_TIMEOUT_S"] == "7"
    assert env["IMRAY_INGRESS_CONNECTIONS_PER_ADDRESS"] == "99"


def test_the_wrapper_adds_a_request_timeout_and_a_cap_per_address_that_haproxy_accepts(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = haproxy_env(monkeypatch, http_request_timeout_s=7, http_connections_per_address=99)
    config = tmp_path / "haproxy.cfg"
    config.write_text(SERVE_LIKE_CONFIG)
    checked = subprocess.run([env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-c", "-f", str(config)],
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    written = (tmp_path / "haproxy.cfg.forwardfor").read_text()
    defaults = written.split("defaults\n", 1)[1].split("frontend", 1)[0]
    assert "option forwardfor" in defaults and "timeout http-request 7s" in defaults
    frontend = written.split("frontend http_frontend\n", 1)[1].split("backend", 1)[0]
    assert "tcp-request connection track-sc0 src" in frontend
    assert "tcp-request connection reject if { sc0_conn_cur gt 99 }" in frontend


def wrapped(env: dict[str, str], config: Path) -> str:
    """The configuration the wrapper hands HAProxy, after HAProxy checked it."""
    config.write_text(SERVE_LIKE_CONFIG)
    checked = subprocess.run([env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-c", "-f", str(config)],
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    return Path(f"{config}.forwardfor").read_text()


def test_the_wrapper_lets_haproxy_size_its_connections_from_the_fd_limit_unless_told_a_number(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    auto = wrapped(haproxy_env(monkeypatch), tmp_path / "auto.cfg")
    assert "maxconn" not in auto  # Serve's 4096 is gone: HAProxy derives it from `ulimit -n`
    fixed = wrapped(haproxy_env(monkeypatch, http_max_connections=5000), tmp_path / "fixed.cfg")
    global_section = fixed.split("defaults\n", 1)[0]
    assert global_section.count("maxconn") == 1 and "    maxconn 5000\n" in global_section


def test_an_operators_own_proxy_callback_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(localcluster.PROXY_CALLBACK, "their.module.callback")
    env = localcluster.ray_environment(load_settings(serve_haproxy=False))
    assert localcluster.PROXY_CALLBACK not in env  # theirs stays in the environment Ray inherits


def test_the_wrapper_refuses_a_limit_that_is_not_a_number(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = haproxy_env(monkeypatch)
    config = tmp_path / "haproxy.cfg"
    config.write_text(SERVE_LIKE_CONFIG)
    env["IMRAY_INGRESS_CONNECTIONS_PER_ADDRESS"] = "1 } || { true"
    checked = subprocess.run([env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-c", "-f", str(config)],
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 2 and "whole numbers" in checked.stderr


# -- Serve's Python proxy: the same limits through uvicorn (imray.deployments.proxy_limits) ---------

async def hello(scope: dict, receive: object, send: Callable) -> None:  # type: ignore[type-arg]
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes | None:
    """What the server sent before closing (b"" for a bare close), or None if still open after `seconds`."""
    try:
        return await asyncio.wait_for(reader.read(), seconds)
    except TimeoutError:  # before OSError, of which it is a subclass
        return None
    except OSError:  # reset
        return b""


async def test_the_python_proxy_closes_slow_request_heads_and_caps_connections_per_address(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from uvicorn import config as uvicorn_config

    from imray.deployments import proxy_limits

    monkeypatch.setitem(uvicorn_config.HTTP_PROTOCOLS, "auto", uvicorn_config.HTTP_PROTOCOLS["auto"])
    monkeypatch.setattr(proxy_limits.ConnectionLimits, "open", {})
    monkeypatch.setenv(proxy_limits.REQUEST_TIMEOUT_ENV, "1")
    monkeypatch.setenv(proxy_limits.PER_ADDRESS_ENV, "3")
    monkeypatch.setattr(proxy_limits.ConnectionLimits, "request_timeout_s", 0.0)
    monkeypatch.setattr(proxy_limits.ConnectionLimits, "per_address", 0)
    assert proxy_limits.install() == []  # what Serve's proxy calls before it serves
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(hello, host="127.0.0.1", port=port, lifespan="off", log_level="critical"))
    serving = asyncio.create_task(server.serve())
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(50):
            if server.started:
                break
            await asyncio.sleep(0.1)
        for _ in range(5):
            idle.append(await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.5", 0)))
        first = await asyncio.gather(*(closed_within(reader, 0.5) for reader, _ in idle))
        assert first[:3] == [None] * 3 and first[3:] == [b"", b""], first  # the cap: 3 from one address
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.6", 0))
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert (await closed_within(reader, 2) or b"").startswith(b"HTTP/1.1 200")  # another address gets in
        writer.close()
        later = await asyncio.gather(*(closed_within(reader, 3) for reader, _ in idle[:3]))
        assert all(answer is not None and answer.startswith(b"HTTP/1.1 408") for answer in later), later
    finally:
        for _, writer in idle:
            writer.close()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def test_the_python_proxy_caps_connections_in_all_and_takes_new_ones_once_some_close(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from uvicorn import config as uvicorn_config

    from imray.deployments import proxy_limits

    monkeypatch.setitem(uvicorn_config.HTTP_PROTOCOLS, "auto", uvicorn_config.HTTP_PROTOCOLS["auto"])
    monkeypatch.setattr(proxy_limits.ConnectionLimits, "open", {})
    monkeypatch.setattr(proxy_limits.ConnectionLimits, "open_in_all", 0)
    monkeypatch.setattr(proxy_limits.ConnectionLimits, "max_connections", 0)
    proxy_limits.configure(request_timeout_s=0, per_address=3, max_connections=4)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(hello, host="127.0.0.1", port=port, lifespan="off", log_level="critical"))
    serving = asyncio.create_task(server.serve())
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(50):
            if server.started:
                break
            await asyncio.sleep(0.1)
        for source in ("127.0.0.7", "127.0.0.8", "127.0.0.9", "127.0.0.10", "127.0.0.11"):  # each under its cap
            idle.append(await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)))
        states = await asyncio.gather(*(closed_within(reader, 0.5) for reader, _ in idle))
        assert states[:4] == [None] * 4 and states[4] == b"", states  # the fifth is over the cap in all
        idle.pop()[1].close()
        idle.pop(0)[1].close()  # a slot comes back
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.12", 0))
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert (await closed_within(reader, 2) or b"").startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        for _, writer in idle:
            writer.close()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


def test_the_python_proxys_automatic_cap_leaves_fds_for_ray() -> None:
    import resource

    from imray.deployments import proxy_limits

    cap = proxy_limits.fd_limited_connections()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)  # raised to the hard limit by the call
    assert soft // 2 <= cap <= soft - min(proxy_limits.RAY_RESERVE_FDS, soft // 2)
