"""Nacos with auth on, as compose.yml runs it: deploy/nacos-init.sh gives the `nacos` user its password, and
imray's own Nacos adapter logs in with it, or is refused with a clear error. No Ray.

Collected only on the real stack. It starts a second Nacos with auth on (HTTP 8858, gRPC 9858, so it never
meets the stack's own on 8848) in a temporary state dir, with middleware/nacos/start.sh, and stops it at the end.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import eventually

from imray.adapters.nacos import NacosConfig, NacosDirectory, NacosInstance, NacosLoginRefused
from imray.doctor import check_nacos
from imray.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
PORT = 8858
URL = f"http://127.0.0.1:{PORT}/nacos"
# Quotes, a backslash, & and = : nacos-init.sh must pass it through curl's config syntax and URL encoding intact.
PASSWORD = 'imray "nacos" pass\\word & more=1'
SERVICE = "imray-auth-probe"


@pytest.fixture(scope="module")
def nacos_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second Nacos, auth on, with its token key and identity pair generated for its state dir."""
    state = tmp_path_factory.mktemp("nacos-auth")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NACOS_")}
    env.update(NACOS_AUTH="1", NACOS_PORT=str(PORT), NACOS_READY_TIMEOUT="120",
               # A short-lived test server: C1 only and the serial collector start it sooner on a loaded machine.
               NACOS_JAVA_OPTS="-Xms128m -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
    started = time.monotonic()
    try:
        done = subprocess.run([str(ROOT / "middleware/nacos/start.sh"), str(state)], env=env, capture_output=True,
                              text=True, timeout=150)
        assert done.returncode == 0, done.stderr[-3000:]
        print(f"\nNacos with auth on ready on {PORT} in {time.monotonic() - started:.0f} s")
        yield str(state)
    finally:
        subprocess.run([str(ROOT / "middleware/nacos/stop.sh"), str(state)], env=env, timeout=60)


def nacos_init(password: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NACOS_URL": URL, "NACOS_NEW_PASSWORD": password, "NACOS_INIT_WAIT": "20"}
    done = subprocess.run(["sh", str(ROOT / "deploy/nacos-init.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    print(f"nacos-init.sh -> {done.returncode}: {(done.stdout + done.stderr).strip()}")
    return done


def settings_for(tmp_path: Path, password: str) -> Settings:
    return load_settings(data_dir=str(tmp_path), nacos_server=f"127.0.0.1:{PORT}", nacos_namespace="",
                         nacos_group="DEFAULT_GROUP", nacos_username="nacos", nacos_password=password)


def test_nacos_init_sets_the_password_once_then_changes_nothing(nacos_with_auth):
    first = nacos_init(PASSWORD)
    assert first.returncode == 0 and "password is set" in first.stdout, first
    second = nacos_init(PASSWORD)
    assert second.returncode == 0 and "already set; nothing to do" in second.stdout, second
    # Neither the new password nor the built-in one logs in: it says so and fails.
    other = nacos_init("some other password")
    assert other.returncode == 1 and "refuses user nacos with both" in other.stderr, other
    # The built-in password is gone for good.
    r = httpx.post(f"{URL}/v1/auth/login", data={"username": "nacos", "password": "nacos"}, timeout=10)
    assert r.status_code == 403, r.text


async def test_imray_logs_in_with_that_password_registers_lists_and_reads_its_config(nacos_with_auth, tmp_path):
    assert nacos_init(PASSWORD).returncode == 0  # idempotent: set by the test above, or now
    settings = settings_for(tmp_path, PASSWORD)
    instance = NacosInstance(settings, SERVICE, "127.0.0.1", 4242, "auth-instance")
    directory = NacosDirectory(settings, SERVICE, "auth-directory")
    config = NacosConfig(settings, "auth-config")
    try:
        await asyncio.wait_for(instance.register({"node_id": "auth-node"}), 30)

        async def listed():
            return [h for h in await asyncio.wait_for(directory.instances(), 15) if h["port"] == 4242]
        hosts = await eventually(listed, 20, "the registered instance in imray's own listing")
        assert hosts == [{"ip": "127.0.0.1", "port": 4242, "metadata": {"node_id": "auth-node"}}]

        content = f"max_text_length: {4000 + int(time.time()) % 1000}\n"
        assert await asyncio.wait_for(config.publish(content), 15)

        async def read_back():  # Nacos serves a published config once it has dumped it: a moment later
            return await asyncio.wait_for(config.get(), 15) == content
        await eventually(read_back, 20, "imray.yaml read back through the adapter")
    finally:
        await asyncio.wait_for(instance.deregister(), 15)
        await asyncio.wait_for(directory.close(), 15)
        await asyncio.wait_for(config.close(), 15)


async def test_a_wrong_nacos_password_is_refused_with_a_clear_error(nacos_with_auth, tmp_path):
    settings = settings_for(tmp_path, "not the password")
    instance = NacosInstance(settings, SERVICE, "127.0.0.1", 4243, "auth-refused")
    # Refused on the first call (register), before the SDK opens any connection.
    with pytest.raises(NacosLoginRefused, match=r"refused the login of user 'nacos' \(HTTP 403 .*IMRAY_NACOS_PASSWORD"):
        await asyncio.wait_for(instance.register({"node_id": "refused"}), 30)
    with pytest.raises(NacosLoginRefused):
        await asyncio.wait_for(NacosConfig(settings, "auth-refused-config").get(), 30)
    await asyncio.wait_for(instance.deregister(), 15)  # nothing was registered: a no-op


def test_imray_doctor_reports_a_wrong_nacos_password_and_passes_the_right_one(nacos_with_auth, tmp_path):
    assert nacos_init(PASSWORD).returncode == 0
    wrong = check_nacos(settings_for(tmp_path, "not the password"))
    assert not wrong.ok and "refused the login of user 'nacos'" in wrong.message, wrong
    right = check_nacos(settings_for(tmp_path, PASSWORD))
    assert right.ok and right.message.endswith("logged in as nacos"), right


def test_anonymous_requests_to_nacos_are_refused(nacos_with_auth):
    assert nacos_init(PASSWORD).returncode == 0
    query = {"serviceName": SERVICE, "groupName": "DEFAULT_GROUP"}
    anonymous = httpx.get(f"{URL}/v1/ns/instance/list", params=query, timeout=10)
    assert anonymous.status_code == 403, anonymous.text
    login = httpx.post(f"{URL}/v1/auth/login", data={"username": "nacos", "password": PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text
    token = login.json()["accessToken"]
    logged_in = httpx.get(f"{URL}/v1/ns/instance/list", params={**query, "accessToken": token}, timeout=10)
    assert logged_in.status_code == 200, logged_in.text  # the same request, with a token: so the 403 was auth
