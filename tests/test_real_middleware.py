"""The production adapters themselves: Nacos naming and live config, Redis presence and restarts.

Collected only on the real stack (IMRAY_TEST_STACK=real), where `make test` has started MariaDB,
Redis, the S3 server and Nacos on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx
import ray
import redis
from nacos_console import NACOS, publish_config
from support import Api, Socket, bearer, direct, eventually, in_chat_pair, one_per_node

from imray.adapters.named_actors import RayNamedActors


def nacos_instances(service: str) -> list[dict]:
    r = httpx.get(f"{NACOS}/v1/ns/instance/list", params={"serviceName": service, "groupName": "DEFAULT_GROUP",
                                                         "healthyOnly": "true"}, timeout=10)
    r.raise_for_status()
    return r.json()["hosts"]


async def test_nacos_mirrors_socket_nodes_and_gateway(stack):
    hosts = nacos_instances("imray-socket")
    by_node = {h["metadata"]["node_id"]: h for h in hosts}
    assert set(by_node) == {n.node_id for n in stack.nodes}
    for node in stack.nodes:
        host = by_node[node.node_id]
        assert (host["ip"], host["port"]) == (node.endpoint.host, node.endpoint.port)
        assert host["metadata"]["ray_node_id"] == node.endpoint.ray_node_id and host["ephemeral"]

    async def gateway_listed():
        return nacos_instances("imray-gateway")
    gateways = await eventually(gateway_listed, 15, "the gateway registering as imray-gateway")
    assert gateways[0]["port"] == stack.settings.http_port

    api = Api(stack.base_url)
    login = await api.user()
    socks = [await Socket.open(login.socket_url, login.access_token) for _ in range(3)]

    async def counted():
        meta = {h["metadata"]["node_id"]: h["metadata"] for h in nacos_instances("imray-socket")}
        return int(meta[login.socket_node]["connections"]) >= 3
    await eventually(counted, 10, "Nacos metadata showing the live connection count")
    for s in socks:
        await s.close()
    await api.close()


async def test_killed_node_leaves_nacos_and_its_replacement_appears(stack):
    node_id = stack.nodes[0].node_id
    before = {h["metadata"]["node_id"]: h["metadata"]["actor_id"] for h in nacos_instances("imray-socket")}
    ray.kill(RayNamedActors(stack.settings.namespace, stack.settings.shard_count).socket_node(node_id), no_restart=True)
    killed_at = time.monotonic()

    async def replaced():
        now = {h["metadata"]["node_id"]: h["metadata"]["actor_id"] for h in nacos_instances("imray-socket")}
        return now.get(node_id) not in (None, before[node_id]) and now

    async def old_gone():
        actors = {h["metadata"]["actor_id"] for h in nacos_instances("imray-socket")}
        return before[node_id] not in actors

    await eventually(old_gone, 15, "the dead node's instance leaving Nacos")
    gone_after = time.monotonic() - killed_at
    await eventually(replaced, 30, "the replacement registering in Nacos")
    assert gone_after <= 15

    # Logins pick from what Nacos shows, and the new node serves them.
    api = Api(stack.base_url)
    for _ in range(4):
        login = await api.user()
        sock = await Socket.open(login.socket_url, login.access_token)
        assert sock.auth["type"] == "auth_ok"
        await sock.close()
    await api.close()


async def test_live_config_from_nacos_without_restart(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    sa = await Socket.open(a.socket_url, a.access_token)
    conv = direct(a.user_id, b.user_id)
    assert (await sa.send_text(conv, "x" * 80))["type"] == "ack"
    strangers = [await api.user() for _ in range(6)]  # new direct conversations, on both shards
    try:
        publish_config("max_text_length: 50\n")

        async def refused():
            reply = await sa.send_text(conv, "y" * 80)
            return reply["type"] == "error" and reply["code"] == "too_large" and reply
        await eventually(refused, 20, "the lower max_text_length to apply")
        assert (await sa.send_text(conv, "short enough"))["type"] == "ack"

        # Direct-message policy, live: "existing" lets this conversation go on, refuses new ones.
        publish_config("max_text_length: 50\ndirect_messages: existing\n")

        async def new_dm_refused():  # a new stranger each try: an accepted first DM makes it "existing"
            c = await api.user()
            reply = await sa.send_text(direct(a.user_id, c.user_id), "hello stranger")
            return reply["type"] == "error" and reply["code"] == "forbidden"
        await eventually(new_dm_refused, 20, "direct_messages: existing to apply")
        assert (await sa.send_text(conv, "still talking"))["type"] == "ack"

        # Rate limits, live: a low limit refuses the next requests with 429.
        publish_config("rate_limit_per_minute: 3\n")

        async def limited():
            codes = [(await api.get("/api/users/me", b.access_token)).status_code for _ in range(5)]
            return 429 in codes
        await eventually(limited, 20, "rate_limit_per_minute: 3 to apply")

        # Before login the limit is per client address, which the gateway sees through the
        # HAProxy ingress (X-Forwarded-For): one address used up, another one is unaffected.
        async def bad_login(http: httpx.AsyncClient) -> int:
            r = await http.post("/oauth2/token", data={"grant_type": "password", "username": "nobody-here",
                                                       "password": "wrong-password", "client_id": "imray-app"})
            return r.status_code
        codes = [await bad_login(api.http) for _ in range(5)]
        assert 429 in codes, codes
        other = httpx.AsyncClient(base_url=stack.base_url,
                                  transport=httpx.AsyncHTTPTransport(local_address="127.0.0.3"))
        assert await bad_login(other) == 400  # invalid_grant, not 429
        await other.aclose()
    finally:
        publish_config(None)

    async def restored():  # every process follows the removal: socket nodes, shards, gateway
        reply = await sa.send_text(conv, "z" * 80)
        http = await api.get("/api/users/me", b.access_token)
        if reply["type"] != "ack" or http.status_code != 200:
            return False
        dms = [await sa.send_text(direct(a.user_id, s.user_id), "hi") for s in strangers]
        return all(d["type"] == "ack" for d in dms)
    await eventually(restored, 30, "every live setting to come back to its default")
    await sa.close()
    await api.close()


async def test_presence_in_redis_and_a_redis_restart_loses_nothing(stack):
    state = os.environ["IMRAY_TEST_REDIS_STATE"]
    r = redis.Redis.from_url(stack.settings.redis_url)

    async def scenario(api, a, b, sa, sb, conv):
        # Each user is found on their own node through Redis.
        assert set(r.hgetall(f"imray:presence:u:{a.user_id}")) == {a.socket_node.encode()}
        assert set(r.hgetall(f"imray:presence:u:{b.user_id}")) == {b.socket_node.encode()}
        acked = [await sa.send_text(conv, f"before {i}") for i in range(5)]

        await asyncio.to_thread(subprocess.run, ["middleware/redis.sh", "stop", state], check=True)
        try:
            during = [await sa.send_text(conv, f"during {i}") for i in range(5)]  # Redis is down
            assert all(x["type"] == "ack" for x in during), during
            got = await sb.wait(lambda fs: sum(1 for f in fs if f["type"] == "msg") >= 10, timeout=30)
            assert [f["body"] for f in got if f["type"] == "msg"][-5:] == [f"during {i}" for i in range(5)]
        finally:
            await asyncio.to_thread(subprocess.run, ["middleware/redis.sh", "start", state], check=True)
        acked += during

        async def presence_back():  # the nodes' refresh fills the empty Redis again
            return set(r.hgetall(f"imray:presence:u:{b.user_id}")) == {b.socket_node.encode()}
        await eventually(presence_back, 40, "presence to be rebuilt in the restarted Redis")
        acked += [await sa.send_text(conv, f"after {i}") for i in range(5)]
        await sb.wait(lambda fs: sum(1 for f in fs if f["type"] == "msg") >= 15, timeout=30)
        history = await api.history(b.access_token, conv, after_seq=0)
        assert [m["msg_id"] for m in history] == [x["msg_id"] for x in acked]
        assert [m["seq"] for m in history] == list(range(1, 16))
        # HTTP keeps working through it too (rate limits fell back to local counters meanwhile).
        assert (await api.http.get("/api/users/me", headers=bearer(b.access_token))).status_code == 200

    await in_chat_pair(stack.base_url, scenario)


async def test_presence_changes_take_one_round_trip_and_survive_a_flushed_script_cache(stack):
    """The presence script goes as plain EVALSHA (no SCRIPT EXISTS before each batch); a Redis that
    lost its scripts refuses the calls (NOSCRIPT, none run), which go again after SCRIPT LOAD: counted once."""
    from imray.adapters.presence import RedisPresence

    r = redis.Redis.from_url(stack.settings.redis_url)
    presence = RedisPresence(stack.settings.redis_url)
    node, users = f"test-node-{time.monotonic_ns()}", [9_000_000_001, 9_000_000_002]

    def script_calls() -> dict[str, int]:
        stats = r.info("commandstats")
        return {name: stats.get(f"cmdstat_script|{name}", {}).get("calls", 0) for name in ("exists", "load")}
    try:
        r.script_flush()
        before = script_calls()
        assert await presence.apply(node, [(users[0], 1)]) == [(users[0], True)]  # NOSCRIPT, LOAD, again
        assert await presence.apply(node, [(users[0], 1), (users[1], 1)]) == [(users[1], True)]
        assert await presence.apply(node, [(users[1], -1)]) == [(users[1], False)]
        after = script_calls()
        # (the stack's own socket nodes may load it too, meanwhile: at least once)
        assert after["exists"] == before["exists"] and after["load"] >= before["load"] + 1, (before, after)
        assert r.hgetall(f"imray:presence:u:{users[0]}") == {node.encode(): b"2"}  # applied once each time
        assert not r.exists(f"imray:presence:u:{users[1]}")
        r.script_flush()  # lost between two batches: the next one loads it again and counts once
        assert await presence.apply(node, [(users[0], -1), (users[0], -1)]) == [(users[0], False)]
        assert not r.exists(f"imray:presence:u:{users[0]}") and script_calls()["load"] >= after["load"] + 1
    finally:
        await presence.drop_node(node)
        await presence.close()
        r.close()


def test_the_redis_adapters_parse_replies_in_c_on_the_cluster(stack):
    """hiredis (requirements.txt): redis-py's C reply parser, about 30 % less client CPU a reply."""
    @ray.remote(num_cpus=0)
    def parser() -> str:
        from redis.asyncio.connection import DefaultParser
        return DefaultParser.__name__

    assert ray.get(parser.remote(), timeout=60) == "_AsyncHiredisParser"


def test_doctor_reports_each_backend(stack):
    env = {**os.environ, "IMRAY_DATA_DIR": stack.data_dir}
    done = subprocess.run([sys.executable, "-m", "imray.cli", "doctor"], env=env, capture_output=True, text=True)
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert done.returncode == 0, done.stdout
    assert set(lines) == {"database", "redis", "objects", "nacos"}
    assert lines["database"].startswith("ok") and "MariaDB" in lines["database"] and "(head)" in lines["database"]
    assert "imray-test" not in lines["database"] and "***" in lines["database"]  # the password is masked
    assert lines["redis"].startswith("ok    Redis ")
    assert lines["objects"].startswith("ok") and "credentials accepted" in lines["objects"]
    assert lines["nacos"].startswith("ok    Nacos 2.")
    bad = {**env, "IMRAY_S3_SECRET_KEY": "not-the-secret", "IMRAY_REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-m", "imray.cli", "doctor"], env=bad, capture_output=True, text=True)
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert done.returncode == 1
    assert lines["objects"].startswith("FAIL") and "AccessDenied" in lines["objects"]  # signatures are checked
    assert lines["redis"].startswith("FAIL") and "Connection refused" in lines["redis"]
    assert lines["database"].startswith("ok")


async def test_a_revocation_set_in_redis_is_seen_at_once_by_every_check_made_together(stack):
    """Two processes' views over the real Redis: what one revokes, the other's checks see before any
    database read, each check with its own answer though they go to Redis as one MGET."""
    from imray.adapters.revocations import Revocations

    here, there = Revocations(stack.settings.redis_url), Revocations(stack.settings.redis_url)
    try:
        families = [f"storm-{os.getpid()}-{k}" for k in range(300)]
        await here.revoke(families[7], 60)
        await here.revoke(families[250], 60)
        answers = await asyncio.gather(*(there.is_revoked(f) for f in families))
        assert [k for k, revoked in enumerate(answers) if revoked] == [7, 250]
        assert not there.known(families[7])  # Redis said so: the process's own view had not heard yet
    finally:
        await here.close()
        await there.close()


async def test_rate_checks_made_together_count_one_by_one_across_replicas_in_redis(stack):
    """Two gateway replicas' limiters over the real Redis: checks made together go as one pipeline,
    yet each caller gets exactly `per_minute` passes between them, and other callers are untouched."""
    from imray.adapters.rate_limits import SharedRateLimiter

    here, there = SharedRateLimiter(stack.settings.redis_url, 25), SharedRateLimiter(stack.settings.redis_url, 25)
    flood, quiet = f"u:flood-{os.getpid()}-{time.time_ns()}", f"u:quiet-{os.getpid()}-{time.time_ns()}"
    if time.time() % 60 > 57:  # all in one window: a new minute starts every count again
        await asyncio.sleep(4)
    answers = await asyncio.gather(*(limiter.check(flood) for _ in range(20) for limiter in (here, there)),
                                   *(here.check(quiet) for _ in range(3)))
    assert sum(answers[:40]) == 25  # 40 checks of one caller over both replicas: 25 pass, 15 refused
    assert answers[40:] == [True] * 3
    assert not await there.check(flood) and await there.check(quiet)
