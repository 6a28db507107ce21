"""A device's clock offset with an error bound that holds, from its samples.

First estimator (issue 2): keep a sliding window of samples and, at time
``now``, use the sample whose guaranteed bound is smallest now. A sample's true
error is at most half its delay plus the timestamp resolution (``sample``); that
interval widens by at most the worst relative clock rate times the sample's age.
Choosing the sample that minimises this sum prefers low-delay samples (the
delay floor) but lets a slightly slower, fresher sample win over an old one.
Rate (skew) estimation comes later and will narrow the growth term.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from clock.sample import Rejection, Sample


@dataclass(frozen=True, slots=True)
class EstimatorConfig:
    """Tuning of the estimator. Units in the names."""

    # Samples kept; at the sparse polling rate (2 s) this is two minutes.
    window: int = 64
    # Phones: crystals +-20 ppm, sound cards quoted at +-100 ppm (FIELD-NOTES);
    # 200 ppm covers a +-100 ppm device against a server that is not perfect.
    max_rate_error_ppm: float = 200.0
    # Device timestamp resolution: 1 ms covers Safari and Firefox (Chrome: 0.1 ms).
    device_resolution_ns: int = 1_000_000
    # Server timestamp resolution (monotonic_ns on Linux is far finer than this).
    server_resolution_ns: int = 1_000

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window: expected at least 1 sample, found {self.window}")
        if not (math.isfinite(self.max_rate_error_ppm) and self.max_rate_error_ppm >= 0):
            raise ValueError(f"max_rate_error_ppm: expected a finite number >= 0, found {self.max_rate_error_ppm}")
        for name in ("device_resolution_ns", "server_resolution_ns"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected nanoseconds >= 0, found {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class ClockEstimate:
    """Server clock minus device clock, valid at server time ``at_server_ns``.

    The true offset lies within ``offset_ns +- bound_ns`` at ``at_server_ns``; the
    interval widens by ``bound_growth_ppm`` of the time elapsed since.
    ``rate_ppm`` is how fast the offset changes (0 until rate estimation exists).
    """

    at_server_ns: int
    offset_ns: float
    bound_ns: float
    rate_ppm: float
    bound_growth_ppm: float
    samples: int

    def offset_at(self, server_ns: int) -> float:
        """Extrapolated offset at another server time."""
        return self.offset_ns + self.rate_ppm * 1e-6 * (server_ns - self.at_server_ns)

    def bound_at(self, server_ns: int) -> float:
        """The error bound at another server time."""
        return self.bound_ns + self.bound_growth_ppm * 1e-6 * abs(server_ns - self.at_server_ns)


class OffsetEstimator:
    """Offset of one device's clock, from samples fed in order of arrival."""

    def __init__(self, config: EstimatorConfig | None = None) -> None:
        self.config = config or EstimatorConfig()
        self._samples: deque[Sample] = deque(maxlen=self.config.window)

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, sample: Sample) -> Rejection | None:
        """Take a sample. Returns None if kept, or why it was not."""
        if any(s == sample for s in self._samples):
            return Rejection.DUPLICATE
        self._samples.append(sample)
        return None

    def reset(self) -> None:
        """Forget every sample (the device's clock stepped, or it restarted)."""
        self._samples.clear()

    def sample_bound_ns(self, sample: Sample, now_server_ns: int) -> float:
        """The guaranteed error of ``sample``'s offset, as of server time ``now``."""
        cfg = self.config
        age_ns = max(0.0, now_server_ns - sample.server_mid_ns)
        return (
            sample.delay_ns / 2
            + 1.5 * cfg.device_resolution_ns
            + cfg.server_resolution_ns
            + cfg.max_rate_error_ppm * 1e-6 * age_ns
        )

    def estimate(self, now_server_ns: int) -> ClockEstimate | None:
        """The best estimate as of server time ``now``, or None before any sample."""
        if not self._samples:
            return None
        best = min(self._samples, key=lambda s: self.sample_bound_ns(s, now_server_ns))
        return ClockEstimate(
            at_server_ns=now_server_ns,
            offset_ns=best.offset_ns,
            bound_ns=self.sample_bound_ns(best, now_server_ns),
            rate_ppm=0.0,
            bound_growth_ppm=self.config.max_rate_error_ppm,
            samples=len(self._samples),
        )
