"""The server's reference clock: monotonic, anchored once to wall time.

Server time looks like Unix time in nanoseconds, but it never jumps: it is the
wall time read once at start plus the monotonic time elapsed since. A wall clock
step (NTP, an operator) after start does not move a scheduled start. The I/O
layer reads the two clocks and passes the readings in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReferenceClock:
    """Maps monotonic readings to server time. Both arguments in nanoseconds."""

    anchor_wall_ns: int
    anchor_monotonic_ns: int

    def server_ns(self, monotonic_ns: int) -> int:
        """Server time (ns since the Unix epoch, as of the anchor) at a monotonic reading."""
        return self.anchor_wall_ns + (monotonic_ns - self.anchor_monotonic_ns)

    def monotonic_ns(self, server_ns: int) -> int:
        """The monotonic reading at which the server clock shows ``server_ns``."""
        return server_ns - self.anchor_wall_ns + self.anchor_monotonic_ns

    def wall_drift_ns(self, wall_ns: int, monotonic_ns: int) -> int:
        """How far the wall clock has moved from server time since the anchor (wall - server)."""
        return wall_ns - self.server_ns(monotonic_ns)
