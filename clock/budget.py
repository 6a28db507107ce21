"""The server's ping budget: how many clock exchanges per second all devices share. Pure.

Each exchange costs the server a ping, a pong and an estimate; with tens of
thousands of phones, the sessions' own schedules (a join burst of 24-40 pings
50 ms apart, then one every 2 s) would ask for more than a process can serve,
and a saturated event loop delays every timestamp, which is error no estimate
can see. So pings are paid from one token bucket. Urgent pings (a session
whose bound is above its target: joining, recovering) may spend it all;
routine pings of synced sessions only spend above a reserve, so a join storm
is never starved by the crowd already in sync, and a synced session's bound,
which grows by its few ppm of rate error, waits a little longer instead.
Time is passed in (nanoseconds).
"""

from __future__ import annotations

from dataclasses import dataclass

# Routine pings leave this share of the bucket to urgent ones.
ROUTINE_RESERVE = 0.5


@dataclass
class PingBudget:
    """A token bucket: ``rate_per_s`` pings per second, up to ``capacity`` saved for bursts."""

    rate_per_s: float
    capacity: float
    tokens: float = -1.0
    updated_ns: int | None = None

    def __post_init__(self) -> None:
        if not self.rate_per_s > 0 or not self.capacity >= 1:
            raise ValueError(f"ping budget: expected a positive rate and a capacity >= 1, found {self.rate_per_s}, {self.capacity}")
        if self.tokens < 0:
            self.tokens = self.capacity

    def _refill(self, now_ns: int) -> None:
        if self.updated_ns is not None and now_ns > self.updated_ns:
            self.tokens = min(self.capacity, self.tokens + (now_ns - self.updated_ns) * self.rate_per_s / 1e9)
        if self.updated_ns is None or now_ns > self.updated_ns:
            self.updated_ns = now_ns

    def take(self, now_ns: int, urgent: bool) -> int:
        """Spend one ping now: 0 if granted, else how many ns until one may be (nothing spent)."""
        self._refill(now_ns)
        floor = 0.0 if urgent else ROUTINE_RESERVE * self.capacity
        if self.tokens >= floor + 1:
            self.tokens -= 1
            return 0
        missing = floor + 1 - self.tokens
        return max(1, int(missing * 1e9 / self.rate_per_s))
