"""A control plane that survives losing any one actor: the supervisor, a socket node after the
supervisor's restart, the presence actor; and `imray down` that leaves nothing behind.

Integration tests on the shared stack; they kill actors, so they run after every other test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import ray
from conftest import STACK
from ray.exceptions import RayActorError
from support import PASSWORD, PUBLIC_CLIENT, Api, Socket, bearer, direct, one_per_node, process_alive

from imray import runtime
from imray.actors.supervisor import PLACEMENT_GROUP, SHARD_GROUP
from imray.adapters.named_actors import ActorMissing, RayNamedActors
from imray.adapters.registry import NoDirectory
from imray.deployments.auth import SupervisorPicker
from imray.domain.errors import Unavailable
from imray.domain.nodes import NodeEndpoint

pytestmark = pytest.mark.runs_last

LOGIN_WITHIN_S = 10.0  # issue 15: logins work again within 10 s of the supervisor's death
IMRAY_CLASSES = {"SocketSupervisor", "SocketNode", "ConversationShard", "Presence"}


async def _sigkill(actor, what: str) -> tuple[int, float]:
    """SIGKILL the actor's process and wait until /proc shows it gone: its pid, and when it died."""
    pid = await actor.__ray_call__.remote(lambda _self: os.getpid())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_alive(pid):
        assert time.monotonic() < deadline, f"{what} (pid {pid}) still alive 10 s after SIGKILL"
        await asyncio.sleep(0.05)
    return pid, time.monotonic()


async def _exchange(sa: Socket, sb: Socket, conv: str, tag: str) -> None:
    """A message each way across the two nodes, each acked and delivered live."""
    for sender, receiver, body in ((sa, sb, f"{tag} from a"), (sb, sa, f"{tag} from b")):
        ack = await sender.send_text(conv, body)
        assert ack["type"] == "ack", ack
        await receiver.wait(lambda fs, body=body: any(f["type"] == "msg" and f["body"] == body for f in fs))
    assert sa.ws.close_code is None and sb.ws.close_code is None


async def _status(stack) -> dict[str, tuple[str, bool]]:
    nodes = await asyncio.to_thread(runtime.status, stack.settings)
    return {n.node_id: (n.endpoint.actor_id, n.alive) for n in nodes}


def _actors(stack) -> RayNamedActors:
    return RayNamedActors(stack.settings.namespace, stack.settings.shard_count)


async def _login_after(api: Api, username: str, since: float, within_s: float) -> tuple[dict, float]:
    """Log in as a client would, asking again after a 503, until `within_s` after `since`."""
    while True:
        r = await api.http.post("/oauth2/token", data={"grant_type": "password", "username": username,
                                                       "password": PASSWORD, "client_id": PUBLIC_CLIENT})
        took = time.monotonic() - since
        if r.status_code == 200:
            return r.json(), took
        assert r.status_code == 503, r.text
        assert took < within_s, f"logins still answered 503 {took:.1f} s after the supervisor died"
        await asyncio.sleep(0.2)


async def test_a_killed_supervisor_comes_back_by_itself_and_sessions_and_logins_carry_on(stack):
    api = Api(stack.base_url)
    before = await _status(stack)
    a, b = await one_per_node(api)
    waiting = await api.register()  # logs in while the supervisor is away
    sa = await Socket.open(a.socket_url, a.access_token)
    sb = await Socket.open(b.socket_url, b.access_token)
    conv = direct(a.user_id, b.user_id)
    await _exchange(sa, sb, conv, "before")

    supervisor = _actors(stack).supervisor()
    old_pid, died = await _sigkill(supervisor, "the supervisor")
    await _exchange(sa, sb, conv, "during")  # no owner's death closes a session (1006) now
    during_s = time.monotonic() - died
    body, login_s = await _login_after(api, waiting["username"], died, LOGIN_WITHIN_S)
    print(f"\nsupervisor SIGKILLed: sessions exchanged messages {during_s:.2f} s after; "
          f"a login answered 200 {login_s:.2f} s after")
    assert login_s < LOGIN_WITHIN_S

    after = await _status(stack)
    assert after == before, (before, after)  # the same socket nodes (actor ids), adopted, alive
    new_pid = await supervisor.__ray_call__.remote(lambda _self: os.getpid())
    assert new_pid != old_pid  # Ray restarted it (the old handle follows the restart)
    sc = await Socket.open(body["socket_url"], body["access_token"])
    assert sc.auth["type"] == "auth_ok", sc.auth
    await _exchange(sa, sb, conv, "after")
    for s in (sa, sb, sc):
        await s.close()
    await api.close()


async def test_a_socket_node_killed_after_a_supervisor_restart_is_replaced(stack):
    api = Api(stack.base_url)
    _, restarted = await _sigkill(_actors(stack).supervisor(), "the supervisor")
    before = await _status(stack)  # answered by the restarted supervisor
    print(f"\nsupervisor SIGKILLed: status answered {time.monotonic() - restarted:.2f} s after")
    a, b = await one_per_node(api)
    sa = await Socket.open(a.socket_url, a.access_token)
    sb = await Socket.open(b.socket_url, b.access_token)
    conv = direct(a.user_id, b.user_id)
    await _exchange(sa, sb, conv, "before")

    _, died = await _sigkill(_actors(stack).socket_node(b.socket_node), f"socket node {b.socket_node}")
    await asyncio.wait_for(sb.ws.wait_closed(), 15)  # B's session died with its node
    deadline = time.monotonic() + 30
    while True:
        now = await _status(stack)
        actor_id, alive = now[b.socket_node]
        if alive and actor_id != before[b.socket_node][0]:
            break
        assert time.monotonic() < deadline, f"{b.socket_node} not replaced within 30 s: {now}"
        await asyncio.sleep(0.25)
    print(f"socket node SIGKILLed: replaced {time.monotonic() - died:.2f} s after")
    assert now[a.socket_node] == before[a.socket_node]  # the other node untouched

    r = await api.http.post("/api/socket/assign", headers=bearer(b.access_token))
    assert r.status_code == 200, r.text
    sb2 = await Socket.open(r.json()["socket_url"], r.json()["access_token"])
    assert sb2.auth["type"] == "auth_ok", sb2.auth
    await _exchange(sa, sb2, conv, "after")
    for s in (sa, sb2):
        await s.close()
    await api.close()


# Embedded only: on the real stack presence is Redis, whose restart test_real_middleware covers. Defined only
# where it applies, so it is never a skip.
if STACK != "real":
    async def test_a_killed_presence_actor_restarts_and_sessions_and_delivery_carry_on(stack):
        api = Api(stack.base_url)
        a, b = await one_per_node(api)
        sa = await Socket.open(a.socket_url, a.access_token)
        sb = await Socket.open(b.socket_url, b.access_token)
        conv = direct(a.user_id, b.user_id)
        await _exchange(sa, sb, conv, "before")
        presence = _actors(stack).presence()
        old_epoch = await presence.epoch.remote()

        _, died = await _sigkill(presence, "the presence actor")
        await _exchange(sa, sb, conv, "during")
        # Restarted empty (a new epoch): the supervisor sees it and has every node resync its sessions.
        expected = {a.socket_node: [a.user_id], b.socket_node: [b.user_id]}
        deadline = time.monotonic() + 20
        while True:
            try:
                table = await asyncio.wait_for(presence.lookup.remote([a.user_id, b.user_id]), 5)
            except (RayActorError, TimeoutError):
                table = None  # still restarting
            if table == expected:
                break
            assert time.monotonic() < deadline, f"presence not rebuilt within 20 s: {table}"
            await asyncio.sleep(0.25)
        print(f"\npresence SIGKILLed: rebuilt {time.monotonic() - died:.2f} s after")
        assert await presence.epoch.remote() != old_epoch
        await _exchange(sa, sb, conv, "after")
        for s in (sa, sb):
            await s.close()
        await api.close()


async def test_shards_are_spread_over_more_than_one_ray_node(stack):
    actors = _actors(stack)
    where = [await actors.shard(i).__ray_call__.remote(lambda _self: ray.get_runtime_context().get_node_id())
             for i in range(stack.settings.shard_count)]
    assert len(set(where)) > 1, where


def _imray_left(namespace: str) -> list[str]:
    """imray's named actors, its actors not dead (by class), and its placement groups unless removed
    (read from the GCS: this stack has no dashboard for the state API)."""
    named = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == namespace]
    alive = [f"{a['ActorClassName']} {a['State']}" for a in ray._private.state.actors().values()
             if a["ActorClassName"] in IMRAY_CLASSES and a["State"] != "DEAD"]
    groups = [f"placement group {g['name']} {g['state']}" for g in ray.util.placement_group_table().values()
              if g["name"] in (PLACEMENT_GROUP, SHARD_GROUP) and g["state"] != "REMOVED"]
    return named + alive + groups


async def test_down_leaves_nothing_behind_and_up_keeps_history_and_continues_seq(stack):
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    sa = await Socket.open(a.socket_url, a.access_token)
    conv = direct(a.user_id, b.user_id)
    acks = [await sa.send_text(conv, f"m{i}") for i in range(10)]
    assert [x["type"] for x in acks] == ["ack"] * 10, acks
    await sa.close()
    await api.close()

    # `imray down` of imray itself (every actor and replica goes), then `imray up` against the same
    # database. One down and up for both checks: each costs ~44 s of the suite on each stack.
    # Blocking driver calls, off the event loop: deploy runs a loop of its own for Nacos's overlay.
    namespace = stack.settings.namespace
    assert await asyncio.to_thread(_imray_left, namespace)  # something to remove: the check can fail
    await asyncio.to_thread(runtime.undeploy, stack.settings)
    left = await asyncio.to_thread(_imray_left, namespace)
    assert left == [], left
    with pytest.raises(ActorMissing):
        _actors(stack).supervisor()
    info = await asyncio.to_thread(runtime.deploy, stack.settings, stack.key)
    stack.nodes = info.nodes  # the fixture's teardown undeploys this one

    api = Api(stack.base_url)
    la, lb = await api.login(a.username), await api.login(b.username)
    history = await api.history(la.access_token, conv, after_seq=0)
    assert [(m["seq"], m["msg_id"]) for m in history] == [(x["seq"], x["msg_id"]) for x in acks]
    sa = await Socket.open(la.socket_url, la.access_token)
    sb = await Socket.open(lb.socket_url, lb.access_token)
    ack = await sa.send_text(conv, "after restart")
    assert ack["seq"] == 11  # no gap, no reuse
    frames = await sb.wait(lambda fs: any(f["type"] == "msg" and f["seq"] == 11 for f in fs))
    got = [f for f in frames if f["type"] == "msg"]  # delivered live by the redeployed actors
    assert [(f["seq"], f["msg_id"], f["body"]) for f in got] == [(11, ack["msg_id"], "after restart")]
    resend = await sa.send_text(conv, "m0", acks[0]["id"])  # idempotency survives the restart
    assert resend == acks[0]
    c, d = await one_per_node(api)  # new users still spread over both redeployed nodes and talk
    sc, sd = await Socket.open(c.socket_url, c.access_token), await Socket.open(d.socket_url, d.access_token)
    await _exchange(sc, sd, direct(c.user_id, d.user_id), "redeployed")
    for s in (sa, sb, sc, sd):
        await s.close()
    await api.close()


class _Flaky:
    """A supervisor handle whose `pick` fails `failures` times (as during a restart), then answers."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0
        self.pick = self

    def remote(self, user_id: int, prefer: str | None = None) -> asyncio.Future[str]:
        self.calls += 1
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if self.calls <= self.failures:
            done.set_exception(RayActorError())
        else:
            done.set_result(f"node for {user_id}")
        return done


class _Actors:
    namespace = "test"

    def __init__(self, supervisor: _Flaky) -> None:
        self._supervisor, self.lookups = supervisor, 0

    def supervisor(self) -> _Flaky:
        self.lookups += 1
        return self._supervisor


async def test_a_pick_while_the_supervisor_restarts_is_tried_again_and_then_answered():
    actors = _Actors(_Flaky(failures=3))
    assert await SupervisorPicker(actors, NoDirectory(), retry_s=5).pick(7) == "node for 7"  # type: ignore[arg-type]
    assert actors.lookups == 4  # the handle looked up afresh after each failure


async def test_a_pick_gives_up_with_unavailable_after_its_retry_time():
    actors = _Actors(_Flaky(failures=10**6))
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await SupervisorPicker(actors, NoDirectory(), retry_s=1).pick(7)  # type: ignore[arg-type]
    assert 0.7 < time.monotonic() - started < 3


class _Silent:
    """A supervisor whose calls never answer (its restart unknown to this process)."""

    def __init__(self) -> None:
        self.pick = self

    def remote(self, user_id: int, prefer: str | None = None) -> asyncio.Future[str]:
        return asyncio.get_running_loop().create_future()


class _Listed:
    def __init__(self, listed: list[tuple[NodeEndpoint, int]]) -> None:
        self.listed = listed

    async def endpoints(self) -> list[tuple[NodeEndpoint, int]] | None:
        return self.listed


def _endpoint(node_id: str) -> NodeEndpoint:
    return NodeEndpoint(node_id, f"ws://10.0.0.{node_id[-1]}:9101/ws", f"10.0.0.{node_id[-1]}", 9101, "r", "a")


async def test_a_pick_the_supervisor_does_not_answer_is_pinned_to_a_node_the_registry_lists():
    listed = _Listed([(_endpoint("sn-1"), 40), (_endpoint("sn-2"), 3)])
    started = time.monotonic()
    node = await SupervisorPicker(_Actors(_Silent()), listed, retry_s=10, answer_s=0.3).pick(7)  # type: ignore[arg-type]
    assert node == _endpoint("sn-2")  # the fewer connections
    assert time.monotonic() - started < 2
    preferred = await SupervisorPicker(_Actors(_Silent()), listed, answer_s=0.3).pick(7, "sn-1")  # type: ignore[arg-type]
    assert preferred == _endpoint("sn-1")


async def test_a_pick_with_neither_the_supervisor_nor_a_listed_node_is_unavailable():
    with pytest.raises(Unavailable):
        await SupervisorPicker(_Actors(_Silent()), _Listed([]), retry_s=1, answer_s=0.3).pick(7)  # type: ignore[arg-type]
