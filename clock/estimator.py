"""A device's clock offset and rate, with an error bound, from its samples.

Every exchange gives two one-way readings (see ``sample``), each a network
delay plus or minus the offset theta(t) = server - device:

    down_i = t1 - t0 = d_down + (-theta(t_i))      up_i = t3 - t2 = d_up + theta(t_i)

A one-way delay never goes below its path's floor, so the *lower envelope* of
each series over time is floor -/+ theta(t): delay spikes, loss (late
retransmissions), reordering, queueing and a busy event loop only ever lift
points above it. With theta(t) = theta0 + r t, each envelope is a line. Its
fit is the lower convex hull edge that spans the window's mean time (Moon,
Skelly and Towsley, "Estimation and removal of clock skew from network delay
measurements", 1999), and

    theta(t) = (UP(t) - DOWN(t)) / 2      r = (slope_up - slope_down) / 2

up to half the difference of the two floors, a constant asymmetry that no
two-way method can see. Until the window spans ``min_fit_span_ns``, the rate
is taken as 0 and each envelope as a constant (the series' minimum).

The bound has two parts, and the smaller one is used:
- hard: any sample's own interval (its offset +- half its delay, RFC 5905
  section 8) widened by the worst rate times its age, plus the distance from
  it to the estimate. It holds whatever the network did.
- statistical: how far above its floor each envelope may still sit. From the
  gap G_k between the envelope and the k-th nearest point above it: if points
  near the floor are roughly evenly spread, the envelope's excess exceeds
  c_k G_k with probability (1 + c_k)^-k; c_k is chosen for 0.5 % per
  direction. Plus the rate's uncertainty times the distance from the window's
  middle, and the timestamp resolutions.

A sample whose own hard interval misses the estimate's interval is suspect.
Suspects are kept aside; ``STEP_CONFIRMATIONS`` consecutive suspects that agree
with each other mean the device's clock stepped: the window restarts from
them. A sample that fits again means the suspects were glitches: they are
dropped.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

from clock.sample import Rejection, Sample

# Miss probability per direction for the statistical bound: two directions
# make the whole bound hold for 99 % of estimates.
PER_DIRECTION_MISS = 0.005
# Points above the envelope used for its gap: more is steadier but assumes an
# even spread further from the floor, so it grows with the window: one in five
# points, between 4 and 8.
GAP_POINTS_MIN = 4
GAP_POINTS_MAX = 8
# The envelopes' gaps measure how far points lie above the fitted lines, not how
# far the lines lie above the floor; where few exchanges ever reach the floor
# (loss, queues that rarely drain: the crowd model) the second is up to ~3x the
# first at the fit's pivot. The statistical part is widened by this factor so
# the bound keeps holding for 99 % of devices there too (bench.report coverage).
# It applies once the rate is fitted: that is where the lines pivot.
STAT_MARGIN = 1.5
# Consecutive suspect samples, consistent with each other, that confirm a step.
STEP_CONFIRMATIONS = 3
# Device clock resolutions recognised from the stamps themselves: Safari and
# Firefox 1 ms, Chrome 0.1 ms, cross-origin isolated pages 5-20 us.
KNOWN_RESOLUTIONS_NS = (1_000_000, 100_000, 10_000, 1_000)
# The window is refitted at least this often, even when no sample lies low.
REFIT_INTERVAL_NS = 30_000_000_000
# Samples the hard bound is computed from: the lowest-delay and the newest ones.
HARD_CANDIDATES = 8


@dataclass(frozen=True, slots=True)
class EstimatorConfig:
    """Tuning of the estimator. Units in the names."""

    # Samples kept, and their maximum age: at the sparse polling rate (2 s)
    # 256 samples are 8.5 minutes (IRCAM's sync fits its skew over 900 s).
    window: int = 256
    max_age_ns: int = 900_000_000_000
    # Phones: crystals +-20 ppm, sound cards quoted at +-100 ppm (FIELD-NOTES);
    # 200 ppm covers a +-100 ppm device against a server that is not perfect.
    max_rate_error_ppm: float = 200.0
    # The rate is fitted once the window spans this long and holds this many samples.
    min_fit_span_ns: int = 20_000_000_000
    min_fit_samples: int = 12
    # A crystal's rate wanders with temperature by a fraction of a ppm over minutes.
    rate_wander_ppm: float = 0.5
    # Device timestamp resolution: 1 ms covers Safari and Firefox (Chrome: 0.1 ms).
    device_resolution_ns: int = 1_000_000
    # Server timestamp resolution (monotonic_ns on Linux is far finer than this).
    server_resolution_ns: int = 1_000

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window: expected at least 2 samples, found {self.window}")
        if self.max_age_ns <= 0:
            raise ValueError(f"max_age_ns: expected a positive duration, found {self.max_age_ns}")
        for name in ("max_rate_error_ppm", "rate_wander_ppm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, found {value}")
        if self.min_fit_samples < 3:
            raise ValueError(f"min_fit_samples: expected at least 3, found {self.min_fit_samples}")
        for name in ("device_resolution_ns", "server_resolution_ns", "min_fit_span_ns"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected nanoseconds >= 0, found {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class ClockEstimate:
    """Server clock minus device clock, valid at server time ``at_server_ns``.

    The true offset lies within ``offset_ns +- bound_ns`` at ``at_server_ns``; the
    interval widens by ``bound_growth_ppm`` of the time elapsed since. The offset
    changes by ``rate_ppm`` of the elapsed time.
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


@dataclass(frozen=True, slots=True)
class _Envelope:
    """A lower line y = value + slope * (t - t_ref) under one direction's points, and its gap."""

    value: float
    slope: float
    gap: float  # distance from the line to the GAP_POINTS_MIN-th point above those on it
    gap_points: int
    excess: float  # how far above its floor the line may be (statistical, see module doc)


@dataclass(frozen=True, slots=True)
class _Fit:
    t_ref: float  # server ns, the window's mean time
    offset_ns: float  # at t_ref
    rate: float  # d offset / d t (dimensionless)
    rate_bound: float  # uncertainty of ``rate``, dimensionless
    stat_bound_ns: float  # statistical bound at t_ref, before rate and resolution terms
    span_ns: float
    made_at_ns: int
    sloped: bool
    theta0: float  # readings are stored relative to this offset
    half_resolution: float
    down: _Envelope
    up: _Envelope

    def residuals(self, sample: Sample) -> tuple[float, float]:
        """How far above each envelope a sample's readings lie (ns)."""
        dt = sample.server_mid_ns - self.t_ref
        down = float(sample.t1_device_ns - sample.t0_server_ns) + self.half_resolution + self.theta0
        up = float(sample.t3_server_ns - sample.t2_device_ns) - self.half_resolution - self.theta0
        return (
            down - (self.down.value + self.down.slope * dt),
            up - (self.up.value + self.up.slope * dt),
        )


def _gap_factor(k: int) -> float:
    """c_k with (1 + c_k)^-k = PER_DIRECTION_MISS."""
    return float(PER_DIRECTION_MISS ** (-1.0 / k) - 1.0)


def _lower_envelope(ts: list[float], ys: list[float], t_ref: float, fit_slope: bool, max_slope: float) -> _Envelope:
    """The lower envelope of points (t, y), t ascending, as a line about ``t_ref``.

    The slope is kept within +-``max_slope``: a steeper edge only joins a low
    point to points that never came down to the floor (a stall, a burst of
    retransmissions), it is not a clock rate.
    """
    if fit_slope:
        hull: list[int] = []
        for i in range(len(ts)):
            while len(hull) >= 2:
                o, a = hull[-2], hull[-1]
                cross = (ts[a] - ts[o]) * (ys[i] - ys[o]) - (ys[a] - ys[o]) * (ts[i] - ts[o])
                if cross <= 0:
                    hull.pop()
                else:
                    break
            hull.append(i)
        # The hull edge spanning t_ref minimises the total distance to the points.
        slope = 0.0
        for j in range(len(hull) - 1):
            p, q = hull[j], hull[j + 1]
            if ts[p] <= t_ref <= ts[q] and ts[q] > ts[p]:
                slope = (ys[q] - ys[p]) / (ts[q] - ts[p])
                break
        on_line = 2
        if abs(slope) > max_slope:
            slope = math.copysign(max_slope, slope)
            on_line = 1
        # The line of that slope resting on the lowest point (a hull vertex).
        value = min(y - slope * (t - t_ref) for t, y in zip(ts, ys))
    else:
        slope = 0.0
        value = min(ys)
        on_line = 1
    residuals = sorted(y - (value + slope * (t - t_ref)) for t, y in zip(ts, ys))
    above = len(residuals) - on_line
    k_most = min(max(GAP_POINTS_MIN, len(residuals) // 5), GAP_POINTS_MAX, above)
    if k_most < 1:
        return _Envelope(value, slope, math.inf, 0, math.inf)
    # The excess is the larger of what the nearest few and the nearest many
    # points say: a tight cluster just above the envelope (a queue that never
    # drained in this window) fools the many, a lone point fools the few.
    k_few = min(GAP_POINTS_MIN, above)
    excess = max(
        _gap_factor(k) * max(residuals[on_line - 1 + k], 0.0) for k in {k_few, k_most}
    )
    return _Envelope(value, slope, max(residuals[on_line - 1 + k_few], 0.0), k_few, excess)


class OffsetEstimator:
    """Offset and rate of one device's clock, from samples fed in order of arrival."""

    def __init__(self, config: EstimatorConfig | None = None) -> None:
        self.config = config or EstimatorConfig()
        # The window, oldest first, as three int64 arrays (24 bytes a sample,
        # where Sample objects took ~350): t0 + t3 (twice the exchange's server
        # middle), t1 - t0 and t3 - t2 (the two one-way readings). Offset and
        # delay follow: offset = (up - down) / 2, delay = up + down.
        self._mid2 = array("q")
        self._down = array("q")
        self._up = array("q")
        # The latest ping time (t0) of any sample taken: a sample sent later than
        # every one kept cannot be a copy, so the common case needs no search
        # (a set mirroring the window cost up to 8 KB per device).
        self._newest_t0: int | None = None
        self._suspects: list[Sample] = []
        self._fit: _Fit | None = None
        # The candidates as (offset, half delay widened by the worst rate, time): what _hard_bound reads,
        # flat in one float64 array (24 bytes a candidate, where a tuple of three floats took ~136).
        self._hard_terms = array("d")
        # The latest estimate made, for cheap upper bounds between samples (see bound_upper_ns).
        self._latest: ClockEstimate | None = None
        self.steps = 0  # clock steps detected (window restarts)
        self.fits = 0  # fits made: a new one means a new estimate to tell
        # Device resolution: the largest known one that divides every stamp's
        # distance from the first stamp (a coarse clock floors its readings).
        self._stamp_origin: int | None = None
        self._stamps_seen = 0
        self._resolution_candidates = list(KNOWN_RESOLUTIONS_NS)

    @property
    def device_resolution_ns(self) -> int:
        """The device clock's resolution read from its stamps, capped by the configured default.

        A clock that floors its readings to a resolution R only ever makes
        stamps a whole number of R apart, so one stamp off R's grid proves the
        clock finer than R, and it is believed at once: a phone with a
        microsecond clock loses the half-millisecond centring meant for a
        coarse one with its second stamp, not after a burst (in a crowd of
        15,000 the server's ping budget gives a phone a handful of samples
        before the start). Stamps still on a coarser grid than the default
        never raise the resolution above it: that may be chance.
        """
        candidates = self._resolution_candidates
        if self._stamps_seen == 0 or not candidates:
            return self.config.device_resolution_ns
        return min(candidates[0], self.config.device_resolution_ns)

    def _observe_stamps(self, sample: Sample) -> None:
        for stamp in (sample.t1_device_ns, sample.t2_device_ns):
            if self._stamp_origin is None:
                self._stamp_origin = stamp
                continue
            diff = stamp - self._stamp_origin
            self._resolution_candidates = [r for r in self._resolution_candidates if diff % r == 0]
        self._stamps_seen += 1

    def __len__(self) -> int:
        return len(self._mid2)

    def _holds(self, sample: Sample) -> bool:
        """Whether the window holds a sample with these readings (a copy)."""
        mid2 = sample.t0_server_ns + sample.t3_server_ns
        down = sample.t1_device_ns - sample.t0_server_ns
        up = sample.t3_server_ns - sample.t2_device_ns
        return any(m == mid2 and self._down[i] == down and self._up[i] == up for i, m in enumerate(self._mid2))

    def add(self, sample: Sample) -> Rejection | None:
        """Take a sample. Returns None if kept, or why it was not (kept aside as a suspect)."""
        newest = self._newest_t0
        if newest is not None and sample.t0_server_ns <= newest:
            if sample in self._suspects or self._holds(sample):
                return Rejection.DUPLICATE
        else:
            self._newest_t0 = sample.t0_server_ns
        self._observe_stamps(sample)
        if self._fit is not None and not self._consistent(sample):
            if self._suspects and not _agree(self._suspects[-1], sample):
                self._suspects.clear()
            self._suspects.append(sample)
            if len(self._suspects) >= STEP_CONFIRMATIONS:
                self.steps += 1
                self._clear_window()
                for suspect in self._suspects:
                    self._append(suspect)
                self._suspects.clear()
                self._refit(sample.t3_server_ns)
                return None
            return Rejection.OUTLIER
        # Suspects followed by a sample that fits were glitches, not a step: a
        # clock that stepped keeps disagreeing. They stay out of the window.
        self._suspects.clear()
        self._append(sample)
        self._hard_terms.extend(self._hard_term(sample))
        self._latest = None
        if self._needs_refit(sample):
            self._refit(sample.t3_server_ns)
        return None

    def _append(self, sample: Sample) -> None:
        if len(self._mid2) >= self.config.window:
            self._drop_oldest(1)
        self._mid2.append(sample.t0_server_ns + sample.t3_server_ns)
        self._down.append(sample.t1_device_ns - sample.t0_server_ns)
        self._up.append(sample.t3_server_ns - sample.t2_device_ns)

    def _drop_oldest(self, count: int) -> None:
        del self._mid2[:count], self._down[:count], self._up[:count]

    def _clear_window(self) -> None:
        self._drop_oldest(len(self._mid2))

    def _needs_refit(self, sample: Sample) -> bool:
        """Whether a new sample can change the fit: it lies low, or the fit is stale or young.

        A reading further above its envelope than the envelope's gap neither
        moves the envelope nor its gap; skipping those refits keeps a sparse
        sample's cost O(1) in the common case (the window is refitted at least
        every REFIT_INTERVAL_NS for ageing and the mean time's drift).
        """
        fit = self._fit
        if fit is None or len(self._mid2) < 2 * self.config.min_fit_samples:
            return True
        # Refit at least every REFIT_INTERVAL_NS, and more often while the window is young.
        if sample.t3_server_ns - fit.made_at_ns >= min(REFIT_INTERVAL_NS, fit.span_ns / 4):
            return True
        if not fit.sloped and sample.server_mid_ns - self._mid2[0] / 2 >= self.config.min_fit_span_ns:
            return True
        down, up = fit.residuals(sample)
        floor = 2 * fit.half_resolution  # a coarse clock ties many points at the floor
        return down <= max(fit.down.gap, floor) or up <= max(fit.up.gap, floor)

    def reset(self) -> None:
        """Forget every sample (the device restarted)."""
        self._clear_window()
        self._suspects.clear()
        del self._hard_terms[:]
        self._fit = None
        self._latest = None

    def estimate(self, now_server_ns: int) -> ClockEstimate | None:
        """The best estimate as of server time ``now``, or None before any sample."""
        fit = self._fit
        if fit is None:
            return None
        cfg = self.config
        dt = now_server_ns - fit.t_ref
        offset = fit.offset_ns + fit.rate * dt
        # After centring (see _refit), each device stamp is off by at most half
        # the resolution; the offset by at most the resolution.
        resolution = self.device_resolution_ns + cfg.server_resolution_ns
        # Before the rate is fitted its term already assumes the worst rate.
        margin = STAT_MARGIN if fit.sloped else 1.0
        stat = margin * (fit.stat_bound_ns + fit.rate_bound * abs(dt)) + resolution
        hard = self._hard_bound(offset, now_server_ns) + resolution
        estimate = ClockEstimate(
            at_server_ns=now_server_ns,
            offset_ns=offset,
            bound_ns=min(stat, hard),
            rate_ppm=fit.rate * 1e6,
            bound_growth_ppm=min(fit.rate_bound * 1e6, cfg.max_rate_error_ppm),
            samples=len(self._mid2),
        )
        self._latest = estimate
        return estimate

    def bound_upper_ns(self, now_server_ns: int) -> float | None:
        """An upper bound of ``estimate(now).bound_ns``, cheap between samples; None before any sample.

        The latest estimate's bound, grown at the worst rate error since: the
        true bound grows no faster. Polling decisions and the organizer's
        summaries ask this for every device, often; only a sample changes the fit.
        """
        latest = self._latest
        if latest is None:
            estimate = self.estimate(now_server_ns)
            return None if estimate is None else estimate.bound_ns
        growth = self.config.max_rate_error_ppm * 1e-6 + abs(latest.rate_ppm) * 1e-6
        return latest.bound_ns + growth * abs(now_server_ns - latest.at_server_ns)

    # --- internals -------------------------------------------------------------

    def _hard_term(self, sample: Sample) -> tuple[float, float, float]:
        worst = self.config.max_rate_error_ppm * 1e-6
        return sample.offset_ns, sample.delay_ns / 2 * (1 + worst), sample.server_mid_ns

    def _hard_bound(self, offset: float, now_ns: int) -> float:
        worst = self.config.max_rate_error_ppm * 1e-6
        best = math.inf
        terms = iter(self._hard_terms)
        for sample_offset, half_delay, mid in zip(terms, terms, terms):
            bound = abs(offset - sample_offset) + half_delay + worst * abs(now_ns - mid)
            if bound < best:
                best = bound
        return best

    def _consistent(self, sample: Sample) -> bool:
        """Does the sample's own interval meet the current estimate's interval?"""
        estimate = self.estimate(int(sample.server_mid_ns))
        assert estimate is not None
        slack = 1.5 * self.device_resolution_ns + self.config.server_resolution_ns
        return abs(sample.offset_ns - estimate.offset_ns) <= sample.delay_ns / 2 + estimate.bound_ns + slack

    def _refit(self, now_ns: int) -> None:
        self.fits += 1
        cfg = self.config
        mid2s, downs_ns, ups_ns = self._mid2, self._down, self._up
        stale = 0
        while stale < len(mid2s) and now_ns - mid2s[stale] / 2 > cfg.max_age_ns:
            stale += 1
        if stale:
            self._drop_oldest(stale)
        order = sorted(range(len(mid2s)), key=mid2s.__getitem__)
        self._latest = None
        if not order:
            self._fit = None
            self._hard_terms = array("d")
            return
        worst = cfg.max_rate_error_ppm * 1e-6
        lowest = sorted(order, key=lambda i: ups_ns[i] + downs_ns[i])[:HARD_CANDIDATES]
        candidates = lowest + [i for i in order[-HARD_CANDIDATES:] if i not in lowest]
        self._hard_terms = array("d", [
            term
            for i in candidates
            for term in ((ups_ns[i] - downs_ns[i]) / 2, (ups_ns[i] + downs_ns[i]) / 2 * (1 + worst), mid2s[i] / 2)
        ])
        base = order[0]
        base_mid2 = mid2s[base]
        t0 = base_mid2 / 2
        # Small numbers: times relative to the first sample, readings relative to its offset.
        ts = [(mid2s[i] - base_mid2) / 2 for i in order]
        theta0 = (ups_ns[base] - downs_ns[base]) / 2
        # A coarse device clock floors its stamps: the true instant is up to one
        # resolution later. Centring both stamps makes the two envelopes pick up
        # the same bias, which cancels in (UP - DOWN) / 2; uncentred, it would
        # leave half a resolution of offset (0.5 ms on Safari).
        half = self.device_resolution_ns / 2
        downs = [float(downs_ns[i]) + half + theta0 for i in order]
        ups = [float(ups_ns[i]) - half - theta0 for i in order]
        span = ts[-1] - ts[0]
        # The middle of the span, not the mean time: the join burst crowds many
        # samples into its first seconds, and the line should not pivot there.
        t_ref = (ts[0] + ts[-1]) / 2
        fit_slope = span >= cfg.min_fit_span_ns and len(order) >= cfg.min_fit_samples
        max_slope = cfg.max_rate_error_ppm * 1e-6
        down = _lower_envelope(ts, downs, t_ref, fit_slope, max_slope)
        up = _lower_envelope(ts, ups, t_ref, fit_slope, max_slope)
        excess = max(down.excess, up.excess)
        if fit_slope:
            rate = (up.slope - down.slope) / 2
            # Each slope may be off by about its envelope's excess over the span
            # (and a coarse clock hides where in its step the floor is); where
            # the two directions disagree on the rate, believe the difference.
            rate_bound = (
                (excess + 2 * half) / span
                + abs(up.slope + down.slope) / 2
                + cfg.rate_wander_ppm * 1e-6
            )
            rate_bound = min(rate_bound, cfg.max_rate_error_ppm * 1e-6)
        else:
            rate = 0.0
            rate_bound = cfg.max_rate_error_ppm * 1e-6
        self._fit = _Fit(
            t_ref=t0 + t_ref,
            offset_ns=theta0 + (up.value - down.value) / 2,
            rate=rate,
            rate_bound=rate_bound,
            stat_bound_ns=excess / 2,
            span_ns=span,
            made_at_ns=now_ns,
            sloped=fit_slope,
            theta0=theta0,
            half_resolution=half,
            down=down,
            up=up,
        )


def _agree(a: Sample, b: Sample) -> bool:
    """Could both samples see the same offset (their intervals overlap, ignoring rate)?"""
    return abs(a.offset_ns - b.offset_ns) <= (a.delay_ns + b.delay_ns) / 2 + 2_000_000
