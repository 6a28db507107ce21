r"""The four-timestamp exchange, initiated by the server.

    server  t0 ----ping---->            t3  (server clock)
                        \          /
    device               t1 ---- t2         (device clock)

offset_ns = ((t0 - t1) + (t3 - t2)) / 2   server clock minus device clock
delay_ns  = (t3 - t0) - (t2 - t1)         round trip minus the device's turnaround

Whatever the split of the delay between the two directions, the true offset lies
within offset_ns +- delay_ns / 2 (RFC 5905 section 8); a constant asymmetry moves
the estimate inside that interval and no two-way method can see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


INT64 = 2**63


class Rejection(str, Enum):
    """Why a sample was not used. Returned, not raised: bad samples are normal."""

    SERVER_TIME_BACKWARDS = "server receive stamp precedes its send stamp"
    DEVICE_TIME_BACKWARDS = "device send stamp precedes its receive stamp"
    NEGATIVE_DELAY = "device turnaround longer than the round trip"
    UNKNOWN_PING = "pong answers no outstanding ping"
    ECHO_MISMATCH = "pong echoes a different t0 than was sent"
    DUPLICATE = "sample already received"
    OUTLIER = "sample far outside the delay floor"
    OUT_OF_RANGE = "device clock over 290 years from the server's"


@dataclass(frozen=True, slots=True)
class Sample:
    """One completed exchange. All stamps in nanoseconds, each in its own clock.

    ``offset_ns``, ``delay_ns`` and ``server_mid_ns`` are derived once here: the
    estimator reads them many times per sample.
    """

    t0_server_ns: int
    t1_device_ns: int
    t2_device_ns: int
    t3_server_ns: int
    # Server clock minus device clock, at the middle of the exchange.
    offset_ns: float = field(init=False, repr=False, compare=False)
    # Round-trip network delay: the exchange minus the device's own turnaround.
    delay_ns: int = field(init=False, repr=False, compare=False)
    # Server time at the middle of the exchange, where the offset is measured.
    server_mid_ns: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        t0, t1, t2, t3 = self.t0_server_ns, self.t1_device_ns, self.t2_device_ns, self.t3_server_ns
        object.__setattr__(self, "offset_ns", ((t0 - t1) + (t3 - t2)) / 2)
        object.__setattr__(self, "delay_ns", (t3 - t0) - (t2 - t1))
        object.__setattr__(self, "server_mid_ns", (t0 + t3) / 2)


def make_sample(t0_server_ns: int, t1_device_ns: int, t2_device_ns: int, t3_server_ns: int) -> Sample | Rejection:
    """A Sample, or the reason these four stamps cannot be one."""
    if t3_server_ns < t0_server_ns:
        return Rejection.SERVER_TIME_BACKWARDS
    if t2_device_ns < t1_device_ns:
        return Rejection.DEVICE_TIME_BACKWARDS
    sample = Sample(t0_server_ns, t1_device_ns, t2_device_ns, t3_server_ns)
    if sample.delay_ns < 0:
        return Rejection.NEGATIVE_DELAY
    # The estimator keeps each one-way reading in 64 bits (an int64 window).
    if not (-INT64 <= t1_device_ns - t0_server_ns < INT64 and -INT64 <= t3_server_ns - t2_device_ns < INT64):
        return Rejection.OUT_OF_RANGE
    return sample
