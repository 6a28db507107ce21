"""clock.reference: server time from monotonic readings, its inverse, and wall drift."""

from __future__ import annotations

import random

from clock.reference import ReferenceClock

S = 1_000_000_000
WALL_AT_START_NS = 1_700_000_000 * S
MONOTONIC_AT_START_NS = 55 * S
CLOCK = ReferenceClock(anchor_wall_ns=WALL_AT_START_NS, anchor_monotonic_ns=MONOTONIC_AT_START_NS)


def test_server_time_at_the_anchor_is_the_wall_time_read() -> None:
    """At the anchor's monotonic reading, server time equals the anchored wall time."""
    assert CLOCK.server_ns(MONOTONIC_AT_START_NS) == WALL_AT_START_NS


def test_server_time_advances_with_monotonic_time() -> None:
    """2.5 s of monotonic time later, server time is 2.5 s later."""
    assert CLOCK.server_ns(57_500_000_000) == WALL_AT_START_NS + 2_500_000_000


def test_server_time_before_the_anchor() -> None:
    """A monotonic reading 1 ns before the anchor maps to 1 ns before the anchored wall time."""
    assert CLOCK.server_ns(MONOTONIC_AT_START_NS - 1) == WALL_AT_START_NS - 1


def test_monotonic_is_the_inverse_of_server() -> None:
    """monotonic_ns(server_ns(m)) == m and server_ns(monotonic_ns(s)) == s, to the nanosecond."""
    rng = random.Random(3)
    for _ in range(1_000):
        monotonic = rng.randint(0, 10**6 * S)
        server = rng.randint(0, 2 * WALL_AT_START_NS)
        assert CLOCK.monotonic_ns(CLOCK.server_ns(monotonic)) == monotonic
        assert CLOCK.server_ns(CLOCK.monotonic_ns(server)) == server


def test_monotonic_at_a_scheduled_start() -> None:
    """A start 10 s after the anchor in server time is 10 s after the anchor in monotonic time."""
    assert CLOCK.monotonic_ns(WALL_AT_START_NS + 10 * S) == 65 * S


def test_wall_drift_is_zero_when_the_wall_clock_kept_pace() -> None:
    """A wall clock that advanced exactly with monotonic time has drifted 0 ns."""
    assert CLOCK.wall_drift_ns(WALL_AT_START_NS + 100 * S, MONOTONIC_AT_START_NS + 100 * S) == 0


def test_wall_drift_after_a_wall_step_forward() -> None:
    """A wall clock stepped 1.5 s forward shows drift +1.5e9 ns (wall - server); server time does not move."""
    monotonic = MONOTONIC_AT_START_NS + 100 * S
    assert CLOCK.wall_drift_ns(WALL_AT_START_NS + 101_500_000_000, monotonic) == 1_500_000_000
    assert CLOCK.server_ns(monotonic) == WALL_AT_START_NS + 100 * S


def test_wall_drift_after_a_wall_step_back() -> None:
    """A wall clock stepped 3 ms back shows drift -3e6 ns."""
    assert CLOCK.wall_drift_ns(WALL_AT_START_NS + 7 * S - 3_000_000, MONOTONIC_AT_START_NS + 7 * S) == -3_000_000
