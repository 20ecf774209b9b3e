"""TLS in front of imray: nginx (Debian's package) terminates https:// for the gateway and wss:// for
each socket node, and clients see only those URLs (`public_url`, `socket_public_url`).

nginx forwards each node's public path as it is (`/ws/sn-1` to sn-1's listener), which a socket node
accepts beside its plain `/ws`. The stack is redeployed with the public URLs for this module and
put back as it was afterwards, the way tests/test_lifecycle.py's down-and-up test redeploys it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import STACK
from support import PUBLIC_CLIENT, Api, Socket, bearer, direct, eventually, one_per_node
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from imray import runtime
from imray.adapters.nacos import SOCKET_SERVICE
from imray.domain.nodes import NodeStatus
from imray.settings import Settings

# After every other test, the lifecycle tests included (they expect the plain deployment).
pytestmark = pytest.mark.runs_last

NGINX_START_S = 15.0


@dataclass
class Proxied:
    """imray deployed behind nginx: the only URLs a client gets, and the context that trusts the certificate."""

    settings: Settings
    base_url: str
    tls: ssl.SSLContext
    nodes: list[NodeStatus]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def _nginx_config(folder: Path, port: int, cert: Path, key: Path, gateway: str, nodes: list[NodeStatus]) -> Path:
    """One TLS server on 127.0.0.1: /ws/<node> to that node's listener (the path passed on as it is),
    everything else to the gateway."""
    websocket = ("proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; "
                 "proxy_set_header Connection upgrade; proxy_read_timeout 1h; proxy_buffering off;")
    per_node = "\n".join(f"    location = /ws/{n.node_id} {{ proxy_pass http://{n.endpoint.host}:{n.endpoint.port}; "
                         f"{websocket} }}" for n in nodes)
    temp = "\n".join(f"  {kind}_temp_path {folder / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    config = folder / "nginx.conf"
    # As root, nginx's workers would switch to "nobody", who may not enter pytest's private tmp dir.
    user = "user root;" if os.geteuid() == 0 else ""
    config.write_text(f"""{user}
daemon off;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
{temp}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
{per_node}
    location / {{
      proxy_pass http://{gateway};
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}
}}
""")
    return config


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        pytest.fail("nginx is missing: middleware/install.sh installs Debian's package")
    return found


def _wait_for_tls(nginx: subprocess.Popen[bytes], port: int, tls: ssl.SSLContext, folder: Path) -> None:
    deadline = time.monotonic() + NGINX_START_S
    while time.monotonic() < deadline:
        if nginx.poll() is not None:
            raise AssertionError(f"nginx exited ({nginx.returncode}): {(folder / 'error.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                    tls.wrap_socket(raw, server_hostname="127.0.0.1"):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nginx did not take TLS connections on {port} within {NGINX_START_S} s")


@pytest.fixture(scope="module")
def proxied(stack, nginx_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    folder = tmp_path_factory.mktemp("nginx")
    cert, key = _self_signed_certificate(folder)
    tls = ssl.create_default_context(cafile=str(cert))
    port = _free_port()
    base_url = f"https://127.0.0.1:{port}"
    settings = stack.settings.replace(public_url=base_url, socket_public_url=f"wss://127.0.0.1:{port}/ws/{{node}}")
    runtime.undeploy(stack.settings)
    nginx: subprocess.Popen[bytes] | None = None
    try:
        info = runtime.deploy(settings, stack.key)
        stack.nodes = info.nodes
        gateway = f"{settings.http_host}:{settings.http_port}"
        config = _nginx_config(folder, port, cert, key, gateway, info.nodes)
        nginx = subprocess.Popen([nginx_binary, "-p", str(folder), "-c", str(config), "-e", str(folder / "error.log")],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_tls(nginx, port, tls, folder)
        yield Proxied(settings, base_url, tls, info.nodes)
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)  # graceful: open WebSockets are closed by the undeploy anyway
            try:
                nginx.wait(15)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait(5)
        # Back to the stack every other test module was given; its fixture undeploys that at the end.
        runtime.undeploy(settings)
        stack.nodes = runtime.deploy(stack.settings, stack.key).nodes


async def _tls_api(proxied: Proxied) -> Api:
    api = Api(proxied.base_url)
    await api.http.aclose()
    api.http = httpx.AsyncClient(base_url=proxied.base_url, timeout=30, verify=proxied.tls)
    return api


async def _open(url: str, token: str, tls: ssl.SSLContext) -> Socket:
    """`Socket.open` over wss://, trusting the test's certificate."""
    ws = await connect(url, ssl=tls, compression=None, max_size=2**22, open_timeout=20)
    sock = Socket(ws)
    await sock.send_json({"type": "auth", "token": token})
    sock.auth = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
    sock.reader = asyncio.create_task(sock._read())
    return sock


@pytest.fixture
async def api(proxied: Proxied) -> AsyncIterator[Api]:
    api = await _tls_api(proxied)
    try:
        yield api
    finally:
        await api.close()


def _public_socket_url(proxied: Proxied, node: str) -> str:
    return f"wss://127.0.0.1:{proxied.base_url.rsplit(':', 1)[1]}/ws/{node}"


async def test_logins_refreshes_and_assignments_give_the_public_wss_url(proxied: Proxied, api: Api) -> None:
    a, b = await one_per_node(api)
    for login in (a, b):
        assert login.socket_url == _public_socket_url(proxied, login.socket_node)
    r = await api.http.post("/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": a.refresh_token,
                                                   "client_id": PUBLIC_CLIENT})
    assert r.status_code == 200, r.text
    assert r.json()["socket_url"] == _public_socket_url(proxied, r.json()["socket_node"])
    r = await api.http.post("/api/socket/assign", headers=bearer(a.access_token))
    assert r.status_code == 200, r.text
    assert r.json()["socket_url"] == _public_socket_url(proxied, r.json()["socket_node"])
    assert [n.url for n in proxied.nodes] == [_public_socket_url(proxied, n.node_id) for n in proxied.nodes]


async def test_a_client_chats_across_both_nodes_over_https_and_wss_only(proxied: Proxied, api: Api) -> None:
    a, b = await one_per_node(api)
    assert a.socket_node != b.socket_node
    sa = await _open(a.socket_url, a.access_token, proxied.tls)
    sb = await _open(b.socket_url, b.access_token, proxied.tls)
    try:
        assert (sa.auth or {}).get("node") == a.socket_node and (sb.auth or {}).get("node") == b.socket_node
        conv = direct(a.user_id, b.user_id)
        acks = [await sa.send_text(conv, "hello over tls")]
        assert acks[0]["type"] == "ack", acks[0]
        await sb.wait(lambda fs: any(f["type"] == "msg" and f["body"] == "hello over tls" for f in fs))
        acks.append(await sb.send_text(conv, "and back"))
        assert acks[1]["type"] == "ack", acks[1]
        await sa.wait(lambda fs: any(f["type"] == "msg" and f["body"] == "and back" for f in fs))
        history = await api.history(b.access_token, conv, after_seq=0)
        assert [(m["seq"], m["msg_id"], m["body"]) for m in history] == \
            [(x["seq"], x["msg_id"], body) for x, body in zip(acks, ("hello over tls", "and back"), strict=True)]
    finally:
        for sock in (sa, sb):
            await sock.close()


async def test_the_wrong_node_answer_names_the_public_url_of_the_pinned_node(proxied: Proxied, api: Api) -> None:
    a, b = await one_per_node(api)
    wrong = await _open(b.socket_url, a.access_token, proxied.tls)  # A's token at B's node
    try:
        assert wrong.auth is not None and wrong.auth["code"] == "wrong_node", wrong.auth
        assert wrong.auth["socket_url"] == a.socket_url == _public_socket_url(proxied, a.socket_node)
    finally:
        await wrong.close()


async def test_a_node_takes_its_own_path_but_not_another_nodes(proxied: Proxied) -> None:
    first, second = proxied.nodes[0].endpoint, proxied.nodes[1].endpoint
    own = await connect(f"ws://{first.host}:{first.port}/ws/{first.node_id}", open_timeout=20)
    await own.close()
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://{first.host}:{first.port}/ws/{second.node_id}", open_timeout=20)
    assert refused.value.response.status_code == 404


# Nacos exists on the real stack only: there the test is collected, elsewhere it does not exist (no skip).
if STACK == "real":
    async def test_nacos_shows_each_node_with_its_public_url(proxied: Proxied) -> None:
        nacos = f"http://{proxied.settings.nacos_server}/nacos/v1/ns/instance/list"

        async def urls() -> dict[str, str] | None:
            async with httpx.AsyncClient(timeout=10) as http:
                r = await http.get(nacos, params={"serviceName": SOCKET_SERVICE, "healthyOnly": "true",
                                                  "groupName": proxied.settings.nacos_group})
            r.raise_for_status()
            found = {h["metadata"]["node_id"]: h["metadata"]["url"] for h in r.json()["hosts"]}
            expected = {n.node_id: _public_socket_url(proxied, n.node_id) for n in proxied.nodes}
            return found if found == expected else None

        await eventually(urls, 15, "Nacos metadata carrying the public socket URLs")
