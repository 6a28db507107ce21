"""clock.sample: the four-timestamp offset and delay, their sign, and the hard bound."""

from __future__ import annotations

import random

import pytest

from clock.sample import Rejection, Sample, make_sample

MS = 1_000_000
S = 1_000_000_000


def exchange(offset_ns: int, up_ns: int, turnaround_ns: int, down_ns: int, t0_server_ns: int = 10 * S) -> Sample:
    """A sample from a device whose clock reads ``server - offset_ns`` (no skew)."""
    t1 = t0_server_ns + up_ns - offset_ns
    t2 = t1 + turnaround_ns
    t3 = t0_server_ns + up_ns + turnaround_ns + down_ns
    sample = make_sample(t0_server_ns, t1, t2, t3)
    assert isinstance(sample, Sample)
    return sample


def test_device_two_seconds_ahead_has_offset_minus_two_seconds() -> None:
    """A device 2 s ahead of the server gives offset -2e9 ns (offset = server - device)."""
    sample = make_sample(10 * S, 12 * S + 10 * MS, 12 * S + 11 * MS, 10 * S + 21 * MS)
    assert isinstance(sample, Sample)
    assert sample.offset_ns == -2e9
    assert sample.delay_ns == 20 * MS


def test_device_behind_has_positive_offset() -> None:
    """A device 1.5 s behind the server gives offset +1.5e9 ns."""
    sample = make_sample(10 * S, 8_500 * MS + 5 * MS, 8_500 * MS + 5 * MS, 10 * S + 10 * MS)
    assert isinstance(sample, Sample)
    assert (sample.offset_ns, sample.delay_ns) == (1.5e9, 10 * MS)


def test_same_clock_symmetric_paths_give_zero_offset() -> None:
    """Identical clocks and equal one-way delays give offset 0 and delay up + down."""
    sample = make_sample(1_000, 1_400, 1_900, 2_300)
    assert isinstance(sample, Sample)
    assert (sample.offset_ns, sample.delay_ns) == (0.0, 800)


def test_asymmetry_shifts_the_offset_by_half_the_difference() -> None:
    """Up 30 ms, down 10 ms with equal clocks: offset -10 ms, delay 40 ms."""
    sample = exchange(offset_ns=0, up_ns=30 * MS, turnaround_ns=2 * MS, down_ns=10 * MS)
    assert (sample.offset_ns, sample.delay_ns) == (-10 * MS, 40 * MS)


def test_offset_may_be_a_half_nanosecond() -> None:
    """An odd sum of differences gives a .5 ns offset, not a rounded one."""
    sample = make_sample(0, 0, 0, 1)
    assert isinstance(sample, Sample)
    assert sample.offset_ns == 0.5


def test_server_mid_is_the_middle_of_the_exchange() -> None:
    """server_mid_ns is (t0 + t3) / 2 in server time."""
    sample = make_sample(100, 5_000, 5_010, 131)
    assert isinstance(sample, Sample)
    assert sample.server_mid_ns == 115.5


def test_zero_delay_is_accepted() -> None:
    """A turnaround equal to the round trip is a valid sample with delay 0."""
    sample = make_sample(0, 50, 80, 30)
    assert isinstance(sample, Sample) and sample.delay_ns == 0


def test_server_time_backwards_is_rejected() -> None:
    """t3 before t0 returns SERVER_TIME_BACKWARDS."""
    assert make_sample(1_000, 0, 10, 999) is Rejection.SERVER_TIME_BACKWARDS


def test_device_time_backwards_is_rejected() -> None:
    """t2 before t1 returns DEVICE_TIME_BACKWARDS."""
    assert make_sample(0, 500, 499, 1_000) is Rejection.DEVICE_TIME_BACKWARDS


def test_negative_delay_is_rejected() -> None:
    """A device turnaround longer than the round trip returns NEGATIVE_DELAY."""
    assert make_sample(0, 0, 31, 30) is Rejection.NEGATIVE_DELAY


def test_rejections_are_returned_not_raised() -> None:
    """Every rejection is a Rejection value with a human-readable reason."""
    for stamps in ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 10, 5)):
        result = make_sample(*stamps)
        assert isinstance(result, Rejection) and result.value


@pytest.mark.parametrize("seed", range(5))
def test_true_offset_within_half_the_delay(seed: int) -> None:
    """For any split of the delay, |true offset - sample.offset_ns| <= delay_ns / 2."""
    rng = random.Random(seed)
    for _ in range(2_000):
        offset = rng.randint(-10 * S, 10 * S)
        if rng.random() < 0.5:
            up = down = rng.randint(0, 300 * MS)
        else:
            up, down = rng.randint(0, 300 * MS), rng.randint(0, 300 * MS)
        sample = exchange(offset, up, rng.randint(0, 50 * MS), down, t0_server_ns=rng.randint(0, 10**6 * S))
        assert sample.delay_ns == up + down
        assert abs(offset - sample.offset_ns) <= sample.delay_ns / 2


def test_all_delay_on_one_side_reaches_the_bound_exactly() -> None:
    """With the whole delay on one path the error is exactly delay / 2: the bound is tight."""
    sample = exchange(offset_ns=7 * S, up_ns=0, turnaround_ns=1 * MS, down_ns=40 * MS)
    assert abs(7 * S - sample.offset_ns) == sample.delay_ns / 2 == 20 * MS


def test_a_device_clock_centuries_away_is_out_of_range() -> None:
    """One-way readings must fit the estimator's 64-bit window; the protocol's range allows more."""
    t0 = 1_795_000_000_000_000_000
    far = -9_000_000_000_000_000_000  # the protocol's lowest device time (-9e15 us), in ns
    assert make_sample(t0, far, far + 50_000, t0 + 4_000_000) is Rejection.OUT_OF_RANGE
    near = t0 - 10**15  # eleven days away: fine
    assert isinstance(make_sample(t0, near, near + 50_000, t0 + 4_000_000), Sample)
