"""Per-session frame rates (domain.frame_rates): a burst passes, then `rate_limited`, then a close."""

from __future__ import annotations

from imray.domain.frame_rates import CONTROLS, SENDS, SIGNALS, FrameBudget, FrameRates, Verdict, frame_class

RATES = FrameRates((100.0, 5.0, 2.0), burst_s=2.0)  # capacities 200, 10, 4


def test_frames_are_classed_by_type() -> None:
    assert frame_class("send") == SENDS
    assert frame_class("read") == frame_class("typing") == SIGNALS
    assert frame_class("ping") == frame_class("refresh") == frame_class("auth") == CONTROLS
    assert frame_class(None) == frame_class(7) == frame_class("shout") == CONTROLS


def test_a_burst_passes_then_frames_are_limited_then_the_client_is_closed() -> None:
    budget = FrameBudget(RATES, now=0.0)
    verdicts = [budget.take(RATES, SIGNALS, now=0.0) for _ in range(25)]
    assert verdicts[:10] == [Verdict.PASS] * 10
    assert verdicts[10:20] == [Verdict.LIMITED] * 10  # another burst's worth refused...
    assert verdicts[20:] == [Verdict.CLOSE] * 5  # ...and then it is closed


def test_a_client_that_backs_off_recovers_at_the_sustained_rate() -> None:
    budget = FrameBudget(RATES, now=0.0)
    for _ in range(12):
        budget.take(RATES, SIGNALS, now=0.0)  # 2 refused
    assert budget.take(RATES, SIGNALS, now=0.1) is Verdict.LIMITED
    # 5 frames a second refill: 0.9 s later the debt (2.5) is paid and 2 more may pass.
    assert budget.take(RATES, SIGNALS, now=1.0) is Verdict.PASS
    assert budget.take(RATES, SIGNALS, now=1.0) is Verdict.PASS
    assert budget.take(RATES, SIGNALS, now=1.0) is Verdict.LIMITED


def test_each_class_has_its_own_budget() -> None:
    budget = FrameBudget(RATES, now=0.0)
    for _ in range(4):
        assert budget.take(RATES, CONTROLS, now=0.0) is Verdict.PASS
    assert budget.take(RATES, CONTROLS, now=0.0) is Verdict.LIMITED
    assert budget.take(RATES, SENDS, now=0.0) is Verdict.PASS  # pings spent nothing of the sends
    assert budget.take(RATES, SIGNALS, now=0.0) is Verdict.PASS


def test_a_rate_below_one_frame_per_burst_still_lets_one_frame_through() -> None:
    slow = FrameRates((0.1, 0.1, 0.1), burst_s=1.0)
    budget = FrameBudget(slow, now=0.0)
    assert budget.take(slow, SENDS, now=0.0) is Verdict.PASS
    assert budget.take(slow, SENDS, now=0.0) is Verdict.LIMITED
