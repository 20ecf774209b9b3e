"""Login throttling and the bounded password-check queue (no Ray), on a clock the tests move."""

from __future__ import annotations

import asyncio
import pickle
import threading

import pytest
from test_unit_oauth import (
    ALICE,
    ALICE_ID,
    ALICE_PASSWORD,
    FakeNodes,
    FakePasswords,
    FakeRevoked,
    FakeStore,
    node,
    password_form,
)

from imray.adapters.rate_limits import ActorFailureCounts, LocalFailureCounts
from imray.domain.login_guard import LoginGuard, LoginLimits, LoginRefused, PasswordQueue
from imray.domain.oauth import OAuthError, OAuthServer
from imray.domain.tokens import SigningKey, TokenIssuer

WINDOW_S = 300
START = WINDOW_S * 5_000_000 + 10.0  # ten seconds into a window


class Clock:
    def __init__(self) -> None:
        self.now = START

    def time(self) -> float:
        return self.now


def right(password: str) -> bool:
    return password == "right"


def guard_with(clock: Clock, per_account: int = 3, per_address: int = 5,
               counts: LocalFailureCounts | None = None, at_once: int = 2, waiting: int = 4) -> LoginGuard:
    return LoginGuard(counts or LocalFailureCounts(), LoginLimits(per_account, per_address, WINDOW_S),
                      PasswordQueue(at_once, waiting), clock.time)


async def attempt(guard: LoginGuard, password: str, account: str = "id:1", address: str = "10.0.0.1") -> bool | int:
    """True/False: the password was checked; an int: refused with that status before any check."""
    try:
        return await guard.verify(lambda: right(password), account, address)
    except LoginRefused as exc:
        return exc.status


async def test_an_account_is_throttled_after_its_failures_whatever_the_address() -> None:
    clock = Clock()
    guard = guard_with(clock, per_account=3, per_address=100)
    results = [await attempt(guard, "wrong", address=f"10.0.0.{i}") for i in range(6)]
    assert results == [False, False, False, 429, 429, 429]
    assert await attempt(guard, "wrong", account="id:2", address="10.0.0.99") is False  # another account


async def test_the_right_password_waits_too_then_works_in_the_next_window() -> None:
    clock = Clock()
    guard = guard_with(clock, per_account=2)
    for _ in range(2):
        assert await attempt(guard, "wrong") is False
    with pytest.raises(LoginRefused) as refused:
        await guard.verify(lambda: right("right"), "id:1", "10.0.0.1")
    assert refused.value.error == "slow_down" and refused.value.status == 429
    assert refused.value.retry_after_s == WINDOW_S - 10  # the rest of the window
    clock.now += refused.value.retry_after_s
    assert await attempt(guard, "right") is True


async def test_an_address_is_throttled_after_its_failures_whatever_the_account() -> None:
    clock = Clock()
    guard = guard_with(clock, per_account=100, per_address=4)
    results = [await attempt(guard, "wrong", account=f"name:x{i}") for i in range(6)]
    assert results == [False] * 4 + [429, 429]
    assert await attempt(guard, "right", account="id:7", address="10.0.0.2") is True  # another address


async def test_an_unknown_address_is_not_counted_and_a_zero_limit_is_no_limit() -> None:
    clock = Clock()
    guard = guard_with(clock, per_account=0, per_address=1)
    results = [await attempt(guard, "wrong", address="") for _ in range(5)]
    assert results == [False] * 5


async def test_successful_logins_do_not_count() -> None:
    guard = guard_with(Clock(), per_account=2, per_address=2)
    assert [await attempt(guard, "right") for _ in range(5)] == [True] * 5


async def test_a_refused_login_costs_no_password_check() -> None:
    clock = Clock()
    guard = guard_with(clock, per_account=1)
    checks: list[str] = []

    def check() -> bool:
        checks.append("checked")
        return False
    assert await guard.verify(check, "id:1", "") is False
    with pytest.raises(LoginRefused):
        await guard.verify(check, "id:1", "")
    assert checks == ["checked"]


async def test_a_full_password_queue_refuses_at_once_with_503_and_runs_at_most_at_once_in_parallel() -> None:
    queue = PasswordQueue(at_once=2, waiting=3)
    release = threading.Event()
    running = 0
    most = 0
    lock = threading.Lock()

    def slow_check() -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(5)
        with lock:
            running -= 1
        return True

    tasks = [asyncio.create_task(queue.run(slow_check)) for _ in range(5)]
    await asyncio.sleep(0.1)
    assert queue.pending == 5
    with pytest.raises(LoginRefused) as refused:
        await queue.run(slow_check)
    error = refused.value
    assert (error.status, error.error, error.retry_after_s) == (503, "temporarily_unavailable", 1)
    release.set()
    assert await asyncio.gather(*tasks) == [True] * 5
    assert most == 2 and queue.pending == 0
    assert await queue.run(lambda: True) is True  # room again
    queue.close()


def test_a_refusal_crosses_ray_calls_whole() -> None:
    error = pickle.loads(pickle.dumps(LoginRefused("slow_down", "too many", 429, 42)))
    assert (error.error, error.message, error.status, error.retry_after_s) == ("slow_down", "too many", 429, 42)


def test_local_counts_forget_the_oldest_entries_first() -> None:
    counts = LocalFailureCounts(max_entries=2)
    counts.bump(["a"], 1)
    counts.bump(["b", "c"], 1)
    assert counts.get(["a", "b", "c"], 1) == [0, 1, 1]
    assert counts.get(["b"], 2) == [0]  # another window


class DeadActor:
    """A handle whose calls fail, as when the counting actor is gone."""

    class _Method:
        def remote(self, *args: object) -> object:
            raise RuntimeError("actor died")

    counts = add = _Method()


async def test_without_the_counting_actor_a_process_counts_alone_then_looks_for_it_again() -> None:
    found: list[int] = []
    clock = Clock()

    def find() -> DeadActor:
        found.append(1)
        return DeadActor()
    counts = ActorFailureCounts(find, retry_s=10, clock=clock.time)
    await counts.add(["k"], 1, 60)
    assert await counts.counts(["k"], 1) == [1]
    assert len(found) == 1  # not asked again at once: a hung actor would slow every login
    clock.now += 10
    assert await counts.counts(["k"], 1) == [1]
    assert len(found) == 2


async def test_the_password_grant_counts_an_account_by_its_id_however_its_name_was_spelled() -> None:
    store = FakeStore()
    store.users["ALICE "] = store.users[ALICE]  # a database collation that takes case and trailing spaces lightly
    server = OAuthServer(store, FakeNodes(node(1)), FakePasswords(), TokenIssuer(SigningKey.generate(), "http://x", 60),
                         FakeRevoked(), 3600, guard=guard_with(Clock(), per_account=2, per_address=100))
    for _ in range(2):
        with pytest.raises(OAuthError) as wrong:
            await server.token(password_form(password="wrong"), None, "10.0.0.1")
        assert wrong.value.error == "invalid_grant"
    with pytest.raises(LoginRefused) as refused:
        await server.token(password_form(username="ALICE ", password=ALICE_PASSWORD), None, "10.0.0.2")
    assert refused.value.status == 429
    assert store.credential_lookups[-1] == "ALICE " and store.users["ALICE "][0] == ALICE_ID
