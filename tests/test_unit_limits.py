"""The gateway's per-caller rate limiter (no HTTP needed)."""

from __future__ import annotations

import types

import pytest

from imray.deployments import limits
from imray.deployments.limits import RateLimiter


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(60 * 28_000_000 + 1.0)  # one second into a minute window
    monkeypatch.setattr(limits, "time", types.SimpleNamespace(time=clock.time))
    return clock


def test_allows_n_per_minute_then_refuses(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=5)
    assert [limiter.allow("alice") for _ in range(8)] == [True] * 5 + [False] * 3


def test_callers_are_independent(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=2)
    assert [limiter.allow("alice") for _ in range(3)] == [True, True, False]
    assert [limiter.allow("bob") for _ in range(3)] == [True, True, False]
    assert limiter.allow("alice") is False


def test_next_minute_resets(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=3)
    assert [limiter.allow("alice") for _ in range(4)] == [True, True, True, False]
    clock.now += 30  # same window
    assert limiter.allow("alice") is False
    clock.now += 30  # next window
    assert [limiter.allow("alice") for _ in range(4)] == [True, True, True, False]


def test_real_clock() -> None:
    limiter = RateLimiter(per_minute=100)
    results = [limiter.allow("x") for _ in range(100)]
    # at most one window boundary can fall inside this loop; either way the first 100 are allowed
    assert all(results)


def test_bounded_memory(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=1, max_callers=10)
    for i in range(1000):
        limiter.allow(f"caller-{i}")
    assert len(limiter._counts) <= 10


def test_oldest_caller_forgotten_first(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=1, max_callers=3)
    assert limiter.allow("old") is True
    assert limiter.allow("busy") is True
    for i in range(2):
        limiter.allow(f"new-{i}")
        assert limiter.allow("busy") is False  # busy stays recent, so it stays limited
    assert limiter.allow("old") is True  # forgotten: the window starts again
    assert limiter.allow("busy") is False
