"""The gateway's per-caller rate limiter (no HTTP needed), on a clock the tests move."""

from __future__ import annotations

import pytest

from imray.adapters.rate_limits import RateLimiter


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(60 * 28_000_000 + 1.0)  # one second into a minute window


def test_allows_n_per_minute_then_refuses(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=5, clock=clock.time)
    assert [limiter.allow("alice") for _ in range(8)] == [True] * 5 + [False] * 3


def test_callers_are_independent(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=2, clock=clock.time)
    assert [limiter.allow("alice") for _ in range(3)] == [True, True, False]
    assert [limiter.allow("bob") for _ in range(3)] == [True, True, False]
    assert limiter.allow("alice") is False


def test_next_minute_resets(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=3, clock=clock.time)
    assert [limiter.allow("alice") for _ in range(4)] == [True, True, True, False]
    clock.now += 30  # same window
    assert limiter.allow("alice") is False
    clock.now += 30  # next window
    assert [limiter.allow("alice") for _ in range(4)] == [True, True, True, False]


def test_a_window_is_a_whole_minute_of_the_clock_not_a_minute_from_the_first_request(clock: Clock) -> None:
    clock.now += 58  # 59 s into the window
    limiter = RateLimiter(per_minute=1, clock=clock.time)
    assert [limiter.allow("alice") for _ in range(2)] == [True, False]
    clock.now += 1  # the next minute starts, one second after the first request
    assert limiter.allow("alice") is True


async def test_check_counts_as_allow_does(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=2, clock=clock.time)
    assert [await limiter.check("alice") for _ in range(3)] == [True, True, False]
    assert limiter.allow("alice") is False


def test_real_clock() -> None:
    limiter = RateLimiter(per_minute=100)
    results = [limiter.allow("x") for _ in range(100)]
    # at most one window boundary can fall inside this loop; either way the first 100 are allowed
    assert all(results)


def test_bounded_memory(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=1, max_callers=10, clock=clock.time)
    for i in range(1000):
        limiter.allow(f"caller-{i}")
    assert len(limiter._counts) <= 10


def test_oldest_caller_forgotten_first(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=1, max_callers=3, clock=clock.time)
    assert limiter.allow("old") is True
    assert limiter.allow("busy") is True
    for i in range(2):
        limiter.allow(f"new-{i}")
        assert limiter.allow("busy") is False  # busy stays recent, so it stays limited
    assert limiter.allow("old") is True  # forgotten: the window starts again
    assert limiter.allow("busy") is False
