"""The ping budget: a token bucket in simulated time, urgent pings ahead of routine ones."""

from __future__ import annotations

import random

import pytest

from clock.budget import ROUTINE_RESERVE, PingBudget
from clock.sample import Sample
from clock.session import DeviceSession

S = 1_000_000_000


def test_a_full_bucket_grants_its_capacity_then_the_rate() -> None:
    budget = PingBudget(rate_per_s=100, capacity=10)
    assert [budget.take(0, urgent=True) for _ in range(10)] == [0] * 10
    wait = budget.take(0, urgent=True)
    assert wait == pytest.approx(S / 100, rel=0.01)
    assert budget.take(wait, urgent=True) == 0
    # Over one simulated minute the grants follow the rate.
    granted = sum(budget.take(t, urgent=True) == 0 for t in range(wait, wait + 60 * S, S // 1000))
    assert granted == pytest.approx(60 * 100, rel=0.01)


def test_routine_pings_leave_the_reserve_to_urgent_ones() -> None:
    budget = PingBudget(rate_per_s=10, capacity=100)
    routine = 0
    while budget.take(0, urgent=False) == 0:
        routine += 1
    assert routine == int(100 * (1 - ROUTINE_RESERVE))
    urgent = 0
    while budget.take(0, urgent=True) == 0:
        urgent += 1
    assert urgent == 100 - routine
    assert budget.take(0, urgent=False) > budget.take(0, urgent=True) > 0


def test_invalid_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="ping budget"):
        PingBudget(rate_per_s=0, capacity=10)
    with pytest.raises(ValueError, match="ping budget"):
        PingBudget(rate_per_s=10, capacity=0)


def test_the_cheap_bound_is_never_below_the_estimate() -> None:
    """bound_upper_ns, read between samples, bounds the full estimate's bound from above."""
    rng = random.Random(3)
    session = DeviceSession()
    offset, rate = 123_456_789, 80e-6
    now = 10**15
    for _ in range(300):
        now += rng.randint(S // 20, 3 * S)
        up, down, turn = rng.randint(10**6, 40 * 10**6), rng.randint(10**6, 40 * 10**6), 50_000
        device = lambda t: t - offset - int(rate * (t - 10**15))  # noqa: E731
        sample = Sample(now, device(now + up), device(now + up) + turn, now + up + turn + down)
        session.estimator.add(sample)
        for later in (0, S // 10, S, 5 * S):
            t = sample.t3_server_ns + later
            cheap = session.bound_upper_ns(t)
            estimate = session.estimate(t)
            assert cheap is not None and estimate is not None
            assert cheap >= estimate.bound_ns - 1e-6
