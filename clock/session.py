"""One device's sync session, sans I/O: when to ping, what a pong means.

The server drives the exchange (see ``sample``): it asks ``poll(now)`` whether a
ping is due, sends it, and hands every pong to ``receive_pong(..., now)``. The
polling policy follows snapcast's quick syncs: a burst of exchanges at join for
a usable estimate within a second, then sparse ones, faster again while the
bound is above target. The same object runs in the server and in the bench's
virtual-time simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from clock.estimator import ClockEstimate, EstimatorConfig, OffsetEstimator
from clock.sample import Rejection, Sample, make_sample

SEQ_MODULO = 2**32
# How many of the latest round trips ``recent_rtt_ns`` looks at.
RECENT_RTTS = 8


@dataclass(frozen=True, slots=True)
class PollingConfig:
    """When the server pings a device. Units in the names."""

    # Exchanges in the join burst and their spacing: 12 x 50 ms gives a first
    # estimate in well under a second on 4G (Beatsync: 16 probes at 50 ms).
    # The burst goes on, up to ``burst_max``, while the bound is above target.
    burst_count: int = 24
    burst_max: int = 40
    burst_interval_ns: int = 50_000_000
    # Afterwards: one exchange every 2 s (Beatsync: 2.5 s; snapcast: 1 s) ...
    sparse_interval_ns: int = 2_000_000_000
    # ... or every 500 ms while the bound is above this target.
    target_bound_ns: int = 5_000_000
    boost_interval_ns: int = 500_000_000
    # A ping unanswered this long no longer holds back the next one. Over TCP
    # the pong is late, not lost; it is still matched while remembered.
    answer_timeout_ns: int = 3_000_000_000
    max_outstanding: int = 8

    def __post_init__(self) -> None:
        for name in ("burst_interval_ns", "sparse_interval_ns", "boost_interval_ns", "answer_timeout_ns"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive duration, found {getattr(self, name)}")
        if self.burst_count < 0 or self.max_outstanding < 1:
            raise ValueError("burst_count >= 0 and max_outstanding >= 1 expected")


class DeviceSession:
    """Clock sync state of one connected device. Time: server nanoseconds."""

    def __init__(
        self,
        polling: PollingConfig | None = None,
        estimator: EstimatorConfig | None = None,
    ) -> None:
        self.polling = polling or PollingConfig()
        self.estimator = OffsetEstimator(estimator)
        self._next_seq = 0
        # seq -> t0 ns, oldest first (a dict keeps insertion order; an OrderedDict
        # costs ~0.3 KB more a device for its linked list).
        self._outstanding: dict[int, int] = {}
        self._last_send_ns: int | None = None
        self._accepted = 0
        self._burst_start = 0  # accepted count when the current burst began
        self._steps_seen = 0
        self.rejections: dict[Rejection, int] = {}
        # Round trips of the latest answered pings, and when the latest answer came:
        # what the organizer's safe lead time and laggard list are made of.
        # A ring of RECENT_RTTS entries in a list (a bounded deque costs ~0.75 KB a
        # device, its first 64-slot block); only their maximum is read.
        self._rtts_ns: list[int] = []
        self._rtt_index = 0
        self.last_answer_ns: int | None = None

    def next_deadline(self, now_ns: int) -> int:
        """Server time at which ``poll`` should next be called."""
        if self._last_send_ns is None:
            return now_ns
        # Only the newest ping holds back the next one: an older ping lost long
        # ago must not stall polling once a later one was answered.
        # During the join burst pings are pipelined (TCP keeps them in order), so
        # a slow path still yields a sample every burst interval.
        newest_outstanding = (self._next_seq - 1) % SEQ_MODULO in self._outstanding
        interval = self._interval_ns(now_ns)
        pipelined = interval == self.polling.burst_interval_ns and len(self._outstanding) < self.polling.max_outstanding
        waiting = newest_outstanding and not pipelined and now_ns - self._last_send_ns < self.polling.answer_timeout_ns
        if waiting:
            return self._last_send_ns + self.polling.answer_timeout_ns
        return self._last_send_ns + interval

    def poll(self, now_ns: int) -> tuple[int, int] | None:
        """``(seq, t0_ns)`` of a ping to send now, or None if none is due yet."""
        if now_ns < self.next_deadline(now_ns):
            return None
        seq = self._next_seq
        self._next_seq = (seq + 1) % SEQ_MODULO
        self._outstanding[seq] = now_ns
        while len(self._outstanding) > self.polling.max_outstanding:
            del self._outstanding[next(iter(self._outstanding))]
        self._last_send_ns = now_ns
        return seq, now_ns

    def receive_pong(self, seq: int, t0_us: int, t1_device_ns: int, t2_device_ns: int, now_ns: int) -> Sample | Rejection:
        """Match a pong to its ping and feed the estimator. ``now_ns``: receipt time (t3)."""
        t0_ns = self._outstanding.pop(seq, None)
        if t0_ns is None:
            return self._reject(Rejection.UNKNOWN_PING)
        if t0_ns // 1000 != t0_us:
            return self._reject(Rejection.ECHO_MISMATCH)
        if len(self._rtts_ns) < RECENT_RTTS:
            self._rtts_ns.append(now_ns - t0_ns)
        else:
            self._rtts_ns[self._rtt_index] = now_ns - t0_ns
            self._rtt_index = (self._rtt_index + 1) % RECENT_RTTS
        self.last_answer_ns = now_ns
        sample = make_sample(t0_ns, t1_device_ns, t2_device_ns, now_ns)
        if isinstance(sample, Rejection):
            return self._reject(sample)
        rejected = self.estimator.add(sample)
        if rejected is not None:
            return self._reject(rejected)
        self._accepted += 1
        return sample

    def recent_rtt_ns(self) -> int | None:
        """The longest of the latest few round trips (server time), or None before any answer."""
        return max(self._rtts_ns) if self._rtts_ns else None

    @property
    def last_send_ns(self) -> int | None:
        """Server time of the latest ping sent, or None before the first."""
        return self._last_send_ns

    def urgent(self, now_ns: int) -> bool:
        """Whether the next ping is urgent: the session is in its burst or its bound is above target."""
        return self._interval_ns(now_ns) != self.polling.sparse_interval_ns

    def bound_upper_ns(self, now_ns: int) -> float | None:
        """A cheap upper bound of the current estimate's bound (see OffsetEstimator.bound_upper_ns)."""
        return self.estimator.bound_upper_ns(now_ns)

    def estimate(self, now_ns: int) -> ClockEstimate | None:
        """The current estimate of this device's offset, or None before any sample."""
        return self.estimator.estimate(now_ns)

    def _interval_ns(self, now_ns: int) -> int:
        if self.estimator.steps != self._steps_seen:  # the clock stepped: burst again
            self._steps_seen = self.estimator.steps
            self._burst_start = self._accepted
        in_burst = self._accepted - self._burst_start
        if in_burst < self.polling.burst_count:
            return self.polling.burst_interval_ns
        bound = self.estimator.bound_upper_ns(now_ns)
        if bound is None or bound > self.polling.target_bound_ns:
            if in_burst < self.polling.burst_max:
                return self.polling.burst_interval_ns
            return self.polling.boost_interval_ns
        return self.polling.sparse_interval_ns

    def _reject(self, reason: Rejection) -> Rejection:
        self.rejections[reason] = self.rejections.get(reason, 0) + 1
        return reason
