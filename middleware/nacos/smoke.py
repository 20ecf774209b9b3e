"""Smoke test of a local Nacos server with nacos-sdk-python 3.x (gRPC).

    middleware/nacos/start.sh /tmp/nacos-state          # inside the same network namespace
    python middleware/nacos/smoke.py                    # NACOS_ADDR=127.0.0.1:8848 by default

Checks naming (register, list, subscribe push, deregister), config (publish, get, listener), and
that an ephemeral instance disappears once its client process is SIGKILLed. Exits non-zero on failure.
"""
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time

from v2.nacos import (
    ClientConfigBuilder,
    ConfigParam,
    DeregisterInstanceParam,
    ListInstanceParam,
    NacosConfigService,
    NacosNamingService,
    RegisterInstanceParam,
    SubscribeServiceParam,
)
from v2.nacos.common.nacos_exception import NacosException
from v2.nacos.utils.net_util import NetUtils

# nacos-sdk-python 3.2.0 puts the client's own IP in every gRPC request's metadata and takes it from
# the first non-loopback IPv4 interface; where there is none (a loopback-only network namespace) every
# request fails with "Error [-403]: no valid non-loopback IPv4 interface found" and the client never
# connects. The server only records that IP, so fall back to 127.0.0.1.
_sdk_local_ip = NetUtils.get_local_ip


def _local_ip():
    try:
        return _sdk_local_ip()
    except NacosException:
        return "127.0.0.1"


NetUtils.get_local_ip = staticmethod(_local_ip)

ADDR = os.environ.get("NACOS_ADDR", "127.0.0.1:8848")
SERVICE = "imray-socket"
GROUP = "DEFAULT_GROUP"
DATA_ID = "imray.yaml"
GONE_WITHIN = 15.0
WORK = os.environ.get("NACOS_SMOKE_DIR") or tempfile.mkdtemp(prefix="nacos-smoke-")


def client_config(name):
    # Keep the SDK's logs and cache out of $HOME, and don't start from a previous run's cached lists.
    cfg = (ClientConfigBuilder().server_address(ADDR)
           .log_dir(os.path.join(WORK, name, "logs")).cache_dir(os.path.join(WORK, name, "cache"))
           .load_cache_at_start(False).log_level("WARNING").build())
    # By default (push-empty protection) the SDK ignores a pushed service whose instance list is
    # empty, so a subscriber (and list_instances, which reads the subscribed cache) would keep
    # seeing the last instance forever after it is gone.
    cfg.set_update_cache_when_empty(True)
    return cfg


T0 = time.monotonic()


def step(msg, since):
    print(f"[{time.monotonic() - T0:6.2f}s] {msg} ({(time.monotonic() - since) * 1000:.0f} ms)", flush=True)


async def wait_for(pred, timeout, interval=0.1):  # noqa: ASYNC109
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await pred():
            return True
        await asyncio.sleep(interval)
    return False


async def instances(naming, fresh=True):
    # subscribe=False asks the server every time instead of reading the pushed cache.
    return await naming.list_instances(ListInstanceParam(
        service_name=SERVICE, group_name=GROUP, subscribe=not fresh, healthy_only=None))


async def child(port, node_id):
    """Registers one ephemeral instance and idles until it is killed."""
    naming = await NacosNamingService.create_naming_service(client_config(f"child-{port}"))
    await naming.register_instance(RegisterInstanceParam(
        service_name=SERVICE, group_name=GROUP, ip="127.0.0.1", port=port,
        metadata={"node_id": node_id}, ephemeral=True))
    print("registered", flush=True)
    await asyncio.sleep(3600)


async def main():
    t = time.monotonic()
    naming = await NacosNamingService.create_naming_service(client_config("naming"))
    config = await NacosConfigService.create_config_service(client_config("config"))
    step(f"connected to {ADDR} (naming + config gRPC clients)", t)

    # --- naming ---
    pushed = asyncio.Queue()

    async def on_change(hosts):
        await pushed.put(sorted((h.port, h.metadata.get("node_id")) for h in hosts))

    await naming.subscribe(SubscribeServiceParam(service_name=SERVICE, group_name=GROUP,
                                                 subscribe_callback=on_change))
    t = time.monotonic()
    ok = await naming.register_instance(RegisterInstanceParam(
        service_name=SERVICE, group_name=GROUP, ip="127.0.0.1", port=9101,
        metadata={"node_id": "sn-1"}, ephemeral=True))
    assert ok, "register_instance returned False"
    step("registered imray-socket 127.0.0.1:9101 node_id=sn-1", t)

    # Reads lag writes a little: the server answers queries from a service cache that it refreshes
    # asynchronously after a (de)registration, so a list right after register may still be empty.
    t = time.monotonic()
    hosts, tries = [], 0

    async def listed():
        nonlocal hosts, tries
        tries += 1
        hosts = await instances(naming)
        return [(h.ip, h.port, h.metadata.get("node_id")) for h in hosts] == [("127.0.0.1", 9101, "sn-1")]

    ok = await wait_for(listed, 5, interval=0.05)
    found = [(h.ip, h.port, h.metadata, h.healthy, h.ephemeral) for h in hosts]
    assert ok, found
    step(f"list_instances -> {found} after {tries} tries", t)

    t = time.monotonic()
    while True:
        got = await asyncio.wait_for(pushed.get(), 10)
        if got == [(9101, "sn-1")]:
            break
    step(f"subscribe callback pushed {got}", t)

    # --- config ---
    t = time.monotonic()
    ok = await config.publish_config(ConfigParam(data_id=DATA_ID, group=GROUP, content="max_text_length: 100"))
    assert ok, "publish_config returned False"
    step("published imray.yaml", t)

    # The server acknowledges a publish once it is in the database and answers queries from a cache
    # that an asynchronous dump fills a moment later: until then get_config returns "" (server error
    # 300, "config data not exist"). So poll.
    t = time.monotonic()
    tries = 0

    async def readable():
        nonlocal content, tries
        tries += 1
        content = await config.get_config(ConfigParam(data_id=DATA_ID, group=GROUP))
        return content == "max_text_length: 100"

    content = None
    assert await wait_for(readable, 5, interval=0.05), repr(content)
    step(f"get_config -> {content!r} after {tries} tries", t)

    changes = asyncio.Queue()

    async def on_config(tenant, group, data_id, content):
        await changes.put((data_id, group, content))

    await config.add_listener(DATA_ID, GROUP, on_config)

    async def change_and_wait(content):
        await config.publish_config(ConfigParam(data_id=DATA_ID, group=GROUP, content=content))
        while True:
            got = await asyncio.wait_for(changes.get(), 15)
            if got[2] == content:
                return got

    # The SDK sends its listen request from a loop that runs every 5 s, so the first change after
    # add_listener can take up to ~5 s to arrive; once listening, the server pushes changes at once.
    t = time.monotonic()
    got = await change_and_wait("max_text_length: 200")
    step(f"listener got change {got} (first change after add_listener)", t)
    t = time.monotonic()
    got = await change_and_wait("max_text_length: 300")
    step(f"listener got change {got}", t)

    # --- deregister ---
    t = time.monotonic()
    await naming.deregister_instance(DeregisterInstanceParam(
        service_name=SERVICE, group_name=GROUP, ip="127.0.0.1", port=9101, ephemeral=True))

    async def empty():
        return not await instances(naming)

    assert await wait_for(empty, 5), "instance still listed after deregister"
    step("deregistered; list_instances -> []", t)

    # --- an ephemeral instance goes away with its (killed) client ---
    t = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, "--child", "9102", "sn-2"],  # noqa: ASYNC220
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "NACOS_SMOKE_DIR": WORK})
    try:
        line = proc.stdout.readline().strip()
        assert line == "registered", f"child said {line!r}"

        async def child_listed():
            return [(h.port, h.metadata.get("node_id")) for h in await instances(naming)] == [(9102, "sn-2")]

        assert await wait_for(child_listed, 5), "child's instance not listed"
        step(f"child pid {proc.pid} registered 127.0.0.1:9102 node_id=sn-2, listed", t)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    t = time.monotonic()
    gone = await wait_for(empty, GONE_WITHIN, interval=0.25)
    assert gone, f"instance still listed {GONE_WITHIN} s after SIGKILL"
    step("child SIGKILLed; its instance disappeared after", t)

    await config.remove_config(ConfigParam(data_id=DATA_ID, group=GROUP))
    await config.shutdown()
    await naming.shutdown()
    print(f"OK in {time.monotonic() - T0:.2f}s", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        asyncio.run(child(int(sys.argv[2]), sys.argv[3]))
    else:
        asyncio.run(main())
