"""clock.estimator: the reported bound holds on simulated networks, and the filter's rules.

Like chrony's test/unit/samplefilt.c: many seeded random configurations (clock
offset and skew, delay distributions with tails, spikes and loss, pongs
arriving out of order, coarse device timestamps), asserting invariants at every
step rather than particular numbers. The statistical bound is a 99 % bound on
paths whose two directions share a delay floor, so coverage is counted over all
estimates; the hard bound must hold at every one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from clock.estimator import (
    STEP_CONFIRMATIONS,
    ClockEstimate,
    EstimatorConfig,
    OffsetEstimator,
)
from clock.sample import Rejection, Sample, make_sample

US = 1_000
MS = 1_000_000
S = 1_000_000_000
# The worst rate the hard bound allows for: a +-100 ppm device against the server.
WORST_RATE = 200e-6

Delay = Callable[[random.Random], float]  # one one-way delay, in ns


@dataclass(frozen=True)
class SimulatedDevice:
    """A device clock: ``device = server - offset0_ns + skew_ppm * 1e-6 * server``, read at a resolution."""

    offset0_ns: int
    skew_ppm: float
    resolution_ns: int
    rounding: str  # "floor" (coarsened performance.now) or "round" (Math.round to the unit)

    def read_ns(self, server_ns: float) -> int:
        exact = server_ns - self.offset0_ns + self.skew_ppm * 1e-6 * server_ns
        units = exact / self.resolution_ns
        return (math.floor(units) if self.rounding == "floor" else round(units)) * self.resolution_ns

    def true_offset_ns(self, server_ns: float) -> float:
        """Server minus device at server time ``server_ns``, before any quantisation."""
        return self.offset0_ns - self.skew_ppm * 1e-6 * server_ns

    @property
    def rate_ppm(self) -> float:
        """How fast the true offset changes (server minus device, so minus the skew)."""
        return -self.skew_ppm


def uniform(low_ms: float, high_ms: float) -> Delay:
    return lambda rng: rng.uniform(low_ms, high_ms) * MS


def exponential_tail(base_ms: float, mean_extra_ms: float, cap_ms: float = 500) -> Delay:
    return lambda rng: (base_ms + min(rng.expovariate(1 / mean_extra_ms), cap_ms)) * MS


def with_spikes(inner: Delay, probability: float) -> Delay:
    """Now and then a spike of 50-200 ms on top of ``inner`` (a 4G scheduler, a Wi-Fi retry)."""
    return lambda rng: inner(rng) + (rng.uniform(50, 200) * MS if rng.random() < probability else 0.0)


def random_delay(rng: random.Random, floor_ms: float) -> Delay:
    """A random one-way delay distribution that never goes below ``floor_ms``."""
    kind = rng.choice(["uniform", "exponential", "spiky uniform", "spiky exponential"])
    if "uniform" in kind:
        delay = uniform(floor_ms, floor_ms + rng.uniform(0, 30))
    else:
        delay = exponential_tail(floor_ms, rng.uniform(0.5, 50))
    return with_spikes(delay, rng.uniform(0.05, 0.3)) if "spiky" in kind else delay


@dataclass(frozen=True)
class Network:
    device: SimulatedDevice
    up: Delay
    down: Delay  # a different distribution from ``up`` makes the path asymmetric
    loss: float
    config: EstimatorConfig


def random_device(rng: random.Random, resolution_ns: int) -> SimulatedDevice:
    return SimulatedDevice(
        offset0_ns=rng.randint(-10 * S, 10 * S),
        skew_ppm=rng.choice([100.0, -100.0, rng.uniform(-100, 100)]),
        resolution_ns=resolution_ns,
        rounding=rng.choice(["floor", "round"]),
    )


def random_config(rng: random.Random, resolution_ns: int) -> EstimatorConfig:
    return EstimatorConfig(window=rng.choice([8, 64, 256]), device_resolution_ns=resolution_ns)


def random_network(rng: random.Random, resolution_ns: int) -> Network:
    """Both directions rest on the same floor; their tails and spikes may differ."""
    floor_ms = rng.uniform(0.5, 40)
    up = random_delay(rng, floor_ms)
    down = up if rng.random() < 0.5 else random_delay(rng, floor_ms)
    return Network(random_device(rng, resolution_ns), up, down, rng.uniform(0, 0.2), random_config(rng, resolution_ns))


def exchange(network: Network, rng: random.Random, t0_true_ns: int) -> tuple[Sample, int]:
    """One ping-pong sent at server time ``t0_true_ns``; returns the sample and the server time of the pong."""
    server_res = network.config.server_resolution_ns
    t1_true = t0_true_ns + network.up(rng)
    t2_true = t1_true + rng.uniform(0, 5) * MS  # the device's turnaround
    t3_true = t2_true + network.down(rng)
    t0 = t0_true_ns // server_res * server_res
    t3 = int(t3_true) // server_res * server_res
    sample = make_sample(t0, network.device.read_ns(t1_true), network.device.read_ns(t2_true), t3)
    assert isinstance(sample, Sample)  # time never runs backwards in this simulation
    return sample, int(t3_true)


def pongs_in_arrival_order(network: Network, rng: random.Random, start_ns: int, pings: int) -> list[tuple[int, Sample]]:
    """``(arrival, sample)`` of pings sent at random spacings from 50 ms, some lost, sorted by arrival.

    Pings 50 ms apart overtake each other when one of them meets a spike.
    """
    pongs = []
    now = start_ns
    for _ in range(pings):
        now += rng.choice([50 * MS, 500 * MS, 2 * S, rng.randint(1, 10 * S)])
        if rng.random() >= network.loss:
            sample, arrival = exchange(network, rng, now)
            pongs.append((arrival, sample))
    return sorted(pongs, key=lambda pong: pong[0])


def hard_bound(offset_ns: float, samples: list[Sample], now_ns: int, resolution_ns: float) -> float:
    """Computed here from RFC 5905's interval: no estimate can be further than this from the truth.

    Each sample holds the truth within half its delay, widened by the worst
    rate over its age (and over half its delay, the most by which its middle
    can miss the device's stamps), plus the stamps' resolutions.
    """
    return resolution_ns + min(
        abs(offset_ns - s.offset_ns) + s.delay_ns / 2 * (1 + WORST_RATE) + WORST_RATE * abs(now_ns - s.server_mid_ns)
        for s in samples
    )


def error_ns(estimate: ClockEstimate, device: SimulatedDevice, server_ns: int) -> float:
    return abs(device.true_offset_ns(server_ns) - estimate.offset_at(server_ns))


@dataclass
class Coverage:
    estimates: int = 0
    covered: int = 0

    def count(self, estimate: ClockEstimate, device: SimulatedDevice, server_ns: int) -> None:
        self.estimates += 1
        self.covered += error_ns(estimate, device, server_ns) <= estimate.bound_at(server_ns)


def run_network(seed: int, resolution_ns: int, coverage: Coverage) -> None:
    """Feed one random network's pongs as they arrive; check the invariants of every estimate."""
    rng = random.Random(seed)
    network = random_network(rng, resolution_ns)
    estimator = OffsetEstimator(network.config)
    start = rng.randint(0, 3600 * S)
    assert estimator.estimate(start) is None
    fed: list[Sample] = []
    for arrival, sample in pongs_in_arrival_order(network, rng, start, pings=150):
        assert estimator.add(sample) is None, (seed, len(fed))
        fed.append(sample)
        estimate = estimator.estimate(arrival)
        assert estimate is not None and estimate.at_server_ns == arrival
        assert estimate.samples == len(estimator) <= network.config.window
        # The hard bound: always, whatever the estimator did.
        simulated_resolution = resolution_ns + network.config.server_resolution_ns
        assert error_ns(estimate, network.device, arrival) <= hard_bound(estimate.offset_ns, fed, arrival, simulated_resolution)
        # The reported bound is capped by the hard bound of the newest sample.
        newest = max(fed, key=lambda s: s.server_mid_ns)
        own_resolution = estimator.device_resolution_ns + network.config.server_resolution_ns
        assert estimate.bound_ns <= hard_bound(estimate.offset_ns, [newest], arrival, own_resolution) + 1e-6
        coverage.count(estimate, network.device, arrival)
        later = arrival + rng.randint(0, 30 * S)
        coverage.count(estimate, network.device, later)
        later_estimate = estimator.estimate(later)
        assert later_estimate is not None
        coverage.count(later_estimate, network.device, later)
    assert estimator.steps == 0


@pytest.mark.parametrize("resolution_ns", [1 * MS, 100 * US], ids=["1ms", "0.1ms"])
def test_true_offset_within_reported_bound_for_99_percent_of_estimates(resolution_ns: int) -> None:
    """Over 100 random symmetric-floor networks, >= 99 % of estimates (now and extrapolated) hold the true offset."""
    coverage = Coverage()
    for seed in range(100):
        run_network(seed, resolution_ns, coverage)
    assert coverage.estimates > 30_000
    assert coverage.covered / coverage.estimates >= 0.99, coverage


def test_asymmetric_floors_move_the_estimate_by_at_most_half_their_difference() -> None:
    """With different floors per direction, the error stays within the bound plus half the floors' difference."""
    for seed in range(40):
        rng = random.Random(seed)
        up_floor_ms, down_floor_ms = rng.uniform(0.5, 40), rng.uniform(0.5, 40)
        resolution_ns = rng.choice([1 * MS, 100 * US])
        network = Network(
            random_device(rng, resolution_ns),
            random_delay(rng, up_floor_ms),
            random_delay(rng, down_floor_ms),
            rng.uniform(0, 0.2),
            random_config(rng, resolution_ns),
        )
        estimator = OffsetEstimator(network.config)
        for arrival, sample in pongs_in_arrival_order(network, rng, rng.randint(0, 3600 * S), pings=100):
            assert estimator.add(sample) is None
            estimate = estimator.estimate(arrival)
            assert estimate is not None
            unseen = abs(up_floor_ms - down_floor_ms) / 2 * MS
            assert error_ns(estimate, network.device, arrival) <= estimate.bound_ns + unseen, (seed, estimate)


# --- a clean network: rate and offset ------------------------------------------------------


def clean_network(skew_ppm: float, resolution_ns: int = 100 * US) -> Network:
    """5-5.2 ms each way, no loss: the envelopes are nearly exact."""
    device = SimulatedDevice(offset0_ns=3 * S, skew_ppm=skew_ppm, resolution_ns=resolution_ns, rounding="floor")
    return Network(device, uniform(5, 5.2), uniform(5, 5.2), 0.0, EstimatorConfig(device_resolution_ns=resolution_ns))


def run_every_2s(network: Network, seed: int, duration_s: int) -> list[tuple[int, float, ClockEstimate]]:
    """``(elapsed_ns, true offset, estimate)`` after each exchange, one every 2 s from server time 1000 s."""
    rng = random.Random(seed)
    estimator = OffsetEstimator(network.config)
    start = 1000 * S
    out = []
    for t0 in range(start, start + duration_s * S + 1, 2 * S):
        sample, arrival = exchange(network, rng, t0)
        assert estimator.add(sample) is None
        estimate = estimator.estimate(arrival)
        assert estimate is not None
        out.append((arrival - start, network.device.true_offset_ns(arrival), estimate))
    return out


SKEWS_PPM = [-100.0, -37.5, 0.0, 42.0, 100.0]


@pytest.mark.parametrize("skew_ppm", SKEWS_PPM)
@pytest.mark.parametrize("seed", range(3))
def test_rate_is_fitted_within_5_ppm_after_60_s(skew_ppm: float, seed: int) -> None:
    """Clean network, 0.1 ms stamps, one exchange per 2 s: from 60 s on, |rate error| < 5 ppm and <= bound_growth_ppm."""
    for elapsed, _, estimate in run_every_2s(clean_network(skew_ppm), seed, duration_s=90):
        if elapsed >= 60 * S:
            rate_error_ppm = abs(estimate.rate_ppm - clean_network(skew_ppm).device.rate_ppm)
            assert rate_error_ppm < 5
            assert rate_error_ppm <= estimate.bound_growth_ppm


@pytest.mark.parametrize("skew_ppm", SKEWS_PPM)
def test_rate_is_zero_and_growth_is_the_worst_before_min_fit_span(skew_ppm: float) -> None:
    """Until the window spans min_fit_span_ns (20 s), rate_ppm is 0 and bound_growth_ppm is max_rate_error_ppm."""
    early = [estimate for elapsed, _, estimate in run_every_2s(clean_network(skew_ppm), 0, duration_s=30) if elapsed < 20 * S]
    assert len(early) == 10
    for estimate in early:
        assert estimate.rate_ppm == 0.0
        assert estimate.bound_growth_ppm == pytest.approx(200.0)


@pytest.mark.parametrize("skew_ppm", SKEWS_PPM)
@pytest.mark.parametrize("seed", range(3))
def test_offset_error_below_0_2_ms_on_a_clean_network(skew_ppm: float, seed: int) -> None:
    """Clean network, 0.1 ms stamps: once the rate is fitted (60 s), the offset error is < 0.2 ms and within the bound."""
    for elapsed, truth, estimate in run_every_2s(clean_network(skew_ppm), seed, duration_s=90):
        if elapsed >= 60 * S:
            assert abs(estimate.offset_ns - truth) < 0.2 * MS
            assert abs(estimate.offset_ns - truth) <= estimate.bound_ns


# --- robustness --------------------------------------------------------------------------


def jittery_network(seed: int) -> Network:
    """1-3 ms each way on a 0.1 ms clock, skewed by up to 100 ppm."""
    rng = random.Random(seed)
    device = SimulatedDevice(rng.randint(-10 * S, 10 * S), rng.uniform(-100, 100), 100 * US, "floor")
    return Network(device, uniform(1, 3), uniform(1, 3), 0.0, EstimatorConfig(device_resolution_ns=100 * US))


def feed_and_check(network: Network, pongs: list[tuple[int, Sample]]) -> OffsetEstimator:
    """Feed ``pongs`` in the order given; every accepted one leaves the truth within the bound."""
    estimator = OffsetEstimator(network.config)
    latest = 0
    for arrival, sample in pongs:
        latest = max(latest, arrival)
        assert estimator.add(sample) is None
        estimate = estimator.estimate(latest)
        assert estimate is not None
        assert error_ns(estimate, network.device, latest) <= estimate.bound_ns
    return estimator


@pytest.mark.parametrize("seed", range(5))
def test_spikes_on_30_percent_of_samples_stay_within_the_bound(seed: int) -> None:
    """Spikes of 50-200 ms on 30 % of one-way delays never push the estimate beyond its bound."""
    network = jittery_network(seed)
    network = replace(network, up=with_spikes(network.up, 0.3), down=with_spikes(network.down, 0.3))
    rng = random.Random(seed)
    pongs = [exchange(network, rng, 100 * S + i * 2 * S)[::-1] for i in range(60)]
    estimator = feed_and_check(network, pongs)
    estimate = estimator.estimate(pongs[-1][0])
    assert estimate is not None and estimate.bound_ns < 5 * MS


@pytest.mark.parametrize("seed", range(5))
def test_out_of_order_arrival_stays_within_the_bound(seed: int) -> None:
    """Samples fed in a shuffled order (not by time) are all kept and keep the truth within the bound."""
    network = jittery_network(seed)
    rng = random.Random(seed)
    pongs = [exchange(network, rng, 100 * S + i * 2 * S)[::-1] for i in range(60)]
    rng.shuffle(pongs)
    feed_and_check(network, pongs)


@pytest.mark.parametrize("seed", range(5))
def test_a_stall_of_hundreds_of_ms_stays_within_the_bound(seed: int) -> None:
    """Twenty consecutive exchanges delayed by 300-800 ms each way (a stalled event loop) stay within the bound."""
    network = jittery_network(seed)
    stalled = replace(network, up=uniform(300, 800), down=uniform(300, 800))
    rng = random.Random(seed)
    pongs = []
    for i in range(80):
        sample, arrival = exchange(stalled if 30 <= i < 50 else network, rng, 100 * S + i * 500 * MS)
        pongs.append((arrival, sample))
    feed_and_check(network, sorted(pongs, key=lambda pong: pong[0]))


def test_duplicate_sample_is_rejected() -> None:
    """Adding an equal sample again returns DUPLICATE and keeps one copy."""
    estimator = OffsetEstimator()
    sample = sample_at(5 * S, 4 * MS, offset_ns=1_000)
    assert estimator.add(sample) is None
    assert estimator.add(Sample(sample.t0_server_ns, sample.t1_device_ns, sample.t2_device_ns, sample.t3_server_ns)) is Rejection.DUPLICATE
    assert len(estimator) == 1


def test_duplicates_among_many_samples_are_rejected_and_change_nothing() -> None:
    """Each sample fed twice: the second copy is DUPLICATE and the estimate equals the one without copies."""
    network = jittery_network(0)
    rng = random.Random(0)
    samples = [exchange(network, rng, 100 * S + i * 2 * S)[0] for i in range(30)]
    once, twice = OffsetEstimator(network.config), OffsetEstimator(network.config)
    for sample in samples:
        assert once.add(sample) is None
        assert twice.add(sample) is None
        assert twice.add(sample) is Rejection.DUPLICATE
    assert once.estimate(200 * S) == twice.estimate(200 * S)


# --- clock steps -------------------------------------------------------------------------


def sample_at(mid_ns: int, delay_ns: int, offset_ns: int = 0) -> Sample:
    """A sample centred on server time ``mid_ns`` with the given delay and offset (delay and offset even)."""
    t0 = mid_ns - delay_ns // 2
    t1 = t0 + delay_ns // 2 - offset_ns
    sample = make_sample(t0, t1, t1, t0 + delay_ns)
    assert isinstance(sample, Sample) and sample.offset_ns == offset_ns and sample.delay_ns == delay_ns
    return sample


@pytest.mark.parametrize("settled_samples", [10, 40], ids=["young-window", "fitted-window"])
def test_device_clock_step_is_detected_and_followed(settled_samples: int) -> None:
    """A +300 ms device step: STEP_CONFIRMATIONS - 1 OUTLIERs, then steps == 1 and the new offset within the bound."""
    network = jittery_network(1)
    stepped = replace(network, device=replace(network.device, offset0_ns=network.device.offset0_ns - 300 * MS))
    rng = random.Random(1)
    estimator = OffsetEstimator(network.config)
    t0 = 100 * S
    for _ in range(settled_samples):
        sample, arrival = exchange(network, rng, t0)
        assert estimator.add(sample) is None
        t0 += 2 * S
    results = []
    for _ in range(STEP_CONFIRMATIONS + 5):
        sample, arrival = exchange(stepped, rng, t0)
        results.append(estimator.add(sample))
        t0 += 2 * S
        if estimator.steps:
            estimate = estimator.estimate(arrival)
            assert estimate is not None
            assert error_ns(estimate, stepped.device, arrival) <= estimate.bound_ns
    assert results == [Rejection.OUTLIER] * (STEP_CONFIRMATIONS - 1) + [None] * 6
    assert estimator.steps == 1


@pytest.mark.parametrize("suspects", range(1, STEP_CONFIRMATIONS))
def test_fewer_than_step_confirmations_suspects_are_not_a_step(suspects: int) -> None:
    """Up to STEP_CONFIRMATIONS - 1 samples 300 ms off, then consistent ones: OUTLIER each, steps stays 0, truth in bound."""
    estimator = OffsetEstimator(EstimatorConfig(device_resolution_ns=0))
    t = 100 * S
    for _ in range(10):
        assert estimator.add(sample_at(t, 10 * MS, offset_ns=1 * S)) is None
        t += 2 * S
    for _ in range(suspects):
        assert estimator.add(sample_at(t, 10 * MS, offset_ns=1 * S + 300 * MS)) is Rejection.OUTLIER
        t += 2 * S
    for _ in range(10):
        assert estimator.add(sample_at(t, 10 * MS, offset_ns=1 * S)) is None
        estimate = estimator.estimate(t)
        assert estimate is not None and abs(estimate.offset_ns - 1 * S) <= estimate.bound_ns
        t += 2 * S
    assert estimator.steps == 0


def test_suspects_that_disagree_with_each_other_are_not_a_step() -> None:
    """STEP_CONFIRMATIONS suspects at +300, -300 and +300 ms do not agree with each other: no step."""
    estimator = OffsetEstimator(EstimatorConfig(device_resolution_ns=0))
    for i in range(10):
        assert estimator.add(sample_at((100 + 2 * i) * S, 10 * MS, offset_ns=1 * S)) is None
    for i, jump in enumerate([300 * MS, -300 * MS, 300 * MS]):
        assert estimator.add(sample_at((120 + 2 * i) * S, 10 * MS, offset_ns=1 * S + jump)) is Rejection.OUTLIER
    assert estimator.steps == 0


# --- device resolution from the stamps -------------------------------------------------------


def stamps_sample(index: int, unit_ns: int) -> Sample:
    """A sample whose device stamps are 37 + index units past an origin of 123_456_789 ns."""
    t1 = 123_456_789 + (37 + index) * unit_ns
    sample = make_sample(10 * S + index * S, t1, t1 + unit_ns, 10 * S + index * S + 10 * MS)
    assert isinstance(sample, Sample)
    return sample


@pytest.mark.parametrize("unit_ns", [1 * MS, 100 * US, 10 * US, 1 * US])
def test_resolution_is_read_from_the_first_stamps_off_a_coarser_grid(unit_ns: int) -> None:
    """Stamps whole units apart (the first pair one unit apart): the resolution read is the unit from the first sample on."""
    estimator = OffsetEstimator(EstimatorConfig(device_resolution_ns=1 * MS))
    assert estimator.device_resolution_ns == 1 * MS  # nothing seen: the configured one
    for index in range(12):
        estimator.add(stamps_sample(index, unit_ns))
        assert estimator.device_resolution_ns == unit_ns


def test_stamps_on_a_coarse_grid_by_chance_keep_the_configured_resolution_until_one_is_off_it() -> None:
    """A 10 us clock whose first stamps happen to lie 1 ms apart reads as the configured 1 ms, not finer, until a stamp
    leaves the 1 ms grid; from then on 10 us, and never coarser again."""
    estimator = OffsetEstimator(EstimatorConfig(device_resolution_ns=1 * MS))
    for index in range(3):
        t1 = 123_456_789 + index * MS
        sample = make_sample(10 * S + index * S, t1, t1 + 2 * MS, 10 * S + index * S + 10 * MS)
        assert isinstance(sample, Sample)
        estimator.add(sample)
        assert estimator.device_resolution_ns == 1 * MS
    for index in range(3, 8):
        estimator.add(stamps_sample(index, 10 * US))
        assert estimator.device_resolution_ns == 10 * US


def test_a_fine_clock_is_centred_right_from_its_second_stamp() -> None:
    """A 1 us clock, true offset 0, paths 1 ms each way: the very first estimate carries no half-millisecond centring."""
    estimator = OffsetEstimator(EstimatorConfig(device_resolution_ns=1 * MS))
    t0 = 10 * S
    sample = make_sample(t0, t0 + 1 * MS + 17 * US, t0 + 1 * MS + 40 * US, t0 + 2 * MS + 40 * US)
    assert isinstance(sample, Sample)
    assert estimator.add(sample) is None
    estimate = estimator.estimate(t0 + 3 * MS)
    assert estimate is not None
    assert abs(estimate.offset_ns) <= 25 * US  # was 500 us with the 1 ms centring of a coarse clock


def test_resolution_read_from_the_stamps_is_capped_by_the_config() -> None:
    """1 ms stamps with device_resolution_ns = 0.1 ms configured give 0.1 ms."""
    estimator = OffsetEstimator(EstimatorConfig(device_resolution_ns=100 * US))
    for index in range(10):
        estimator.add(stamps_sample(index, 1 * MS))
    assert estimator.device_resolution_ns == 100 * US


def test_unrecognised_stamps_keep_the_configured_resolution() -> None:
    """Stamps 7 ns apart match no known resolution: the configured 1 ms stays."""
    estimator = OffsetEstimator()
    for index in range(10):
        estimator.add(stamps_sample(index, 7))
    assert estimator.device_resolution_ns == 1 * MS


def test_one_finer_stamp_lowers_the_resolution_read() -> None:
    """Nine 1 ms stamps then one 0.1 ms off the grid: the resolution read is 0.1 ms."""
    estimator = OffsetEstimator()
    for index in range(9):
        estimator.add(stamps_sample(index, 1 * MS))
    assert estimator.device_resolution_ns == 1 * MS
    t1 = 123_456_789 + 100 * MS + 100 * US
    fine = make_sample(30 * S, t1, t1, 30 * S + 10 * MS)
    assert isinstance(fine, Sample)
    estimator.add(fine)
    assert estimator.device_resolution_ns == 100 * US


# --- literal rules -------------------------------------------------------------------


EXACT = EstimatorConfig(device_resolution_ns=0, server_resolution_ns=0, max_rate_error_ppm=100.0)


def test_estimate_is_none_before_any_sample() -> None:
    """A new estimator has no estimate and no samples."""
    estimator = OffsetEstimator()
    assert estimator.estimate(0) is None and estimator.estimate(10**18) is None
    assert len(estimator) == 0 and estimator.steps == 0


def test_single_exact_sample_gives_its_offset_and_half_its_delay() -> None:
    """With exact stamps, one sample estimated at its middle: its offset, bound delay/2, rate 0, growth the worst."""
    estimator = OffsetEstimator(EXACT)
    assert estimator.add(sample_at(10 * S, 20 * MS, offset_ns=-2 * S)) is None
    estimate = estimator.estimate(10 * S)
    assert estimate is not None
    assert (estimate.at_server_ns, estimate.offset_ns, estimate.rate_ppm, estimate.samples) == (10 * S, -2e9, 0.0, 1)
    assert estimate.bound_ns == pytest.approx(10 * MS * (1 + 100e-6))
    assert estimate.bound_growth_ppm == pytest.approx(100.0)


def test_single_coarse_sample_is_centred_by_half_the_resolution() -> None:
    """1 ms device stamps are taken as floored: the offset is the sample's minus 0.5 ms, and the bound covers both."""
    estimator = OffsetEstimator()
    sample = sample_at(10 * S, 20 * MS, offset_ns=-2 * S)
    estimator.add(sample)
    estimate = estimator.estimate(10 * S)
    assert estimate is not None and estimate.offset_ns == -2e9 - 0.5 * MS
    assert abs(estimate.offset_ns - sample.offset_ns) + 10 * MS <= estimate.bound_ns


def test_lower_delay_samples_win_the_envelope() -> None:
    """Of three samples at about the same time, the lowest-delay one sets the offset and bounds it."""
    estimator = OffsetEstimator(EXACT)
    estimator.add(sample_at(10 * S, 30 * MS, offset_ns=5 * MS))
    estimator.add(sample_at(10 * S + 2 * MS, 4 * MS, offset_ns=7 * MS))
    estimator.add(sample_at(10 * S + 4 * MS, 12 * MS, offset_ns=9 * MS))
    estimate = estimator.estimate(10 * S + 4 * MS)
    assert estimate is not None
    assert estimate.offset_ns == 7 * MS
    assert estimate.bound_ns <= 2 * MS * (1 + 100e-6) + 100e-6 * 2 * MS + 1e-6


def test_bound_grows_with_age_at_bound_growth_ppm() -> None:
    """With one exact sample, the bound 10 s later is 100 ppm x 10 s = 1 ms larger, both ways of asking."""
    estimator = OffsetEstimator(EXACT)
    estimator.add(sample_at(20 * S, 8 * MS))
    first = estimator.estimate(20 * S)
    later = estimator.estimate(30 * S)
    assert first is not None and later is not None
    assert later.bound_ns - first.bound_ns == pytest.approx(1 * MS)
    assert first.bound_at(30 * S) == pytest.approx(later.bound_ns)
    assert first.bound_at(10 * S) == pytest.approx(first.bound_ns + 1 * MS)


def test_offset_at_and_bound_at_apply_rate_and_growth() -> None:
    """offset_at extrapolates by rate_ppm, bound_at widens by bound_growth_ppm either way in time."""
    estimate = ClockEstimate(at_server_ns=10 * S, offset_ns=500.0, bound_ns=1.0, rate_ppm=-20.0, bound_growth_ppm=100.0, samples=1)
    assert estimate.offset_at(20 * S) == pytest.approx(500 - 200_000)
    assert estimate.bound_at(20 * S) == pytest.approx(1 + 1_000_000)
    assert estimate.bound_at(0) == pytest.approx(1 + 1_000_000)


def test_window_keeps_only_the_newest_samples() -> None:
    """With window 3, the 4th sample evicts the first, even when the first was the best."""
    estimator = OffsetEstimator(replace(EXACT, window=3))
    estimator.add(sample_at(1 * S, 2 * MS, offset_ns=111))
    for index in range(3):
        estimator.add(sample_at((2 + index) * S, 50 * MS, offset_ns=222))
    estimate = estimator.estimate(4 * S)
    assert estimate is not None
    assert len(estimator) == 3 and estimate.samples == 3
    assert estimate.offset_ns == 222


def test_samples_older_than_max_age_are_dropped() -> None:
    """With max_age_ns 10 s, a sample 30 s newer than the others leaves only itself in the window."""
    estimator = OffsetEstimator(replace(EXACT, max_age_ns=10 * S))
    for index in range(3):
        estimator.add(sample_at((1 + index) * S, 2 * MS, offset_ns=111))
    estimator.add(sample_at(33 * S, 40 * MS, offset_ns=222))
    estimate = estimator.estimate(33 * S)
    assert estimate is not None
    assert len(estimator) == 1 and estimate.samples == 1
    assert estimate.offset_ns == 222


def test_reset_clears_every_sample() -> None:
    """After reset there is no estimate, and a previously kept sample is accepted again."""
    estimator = OffsetEstimator()
    sample = sample_at(5 * S, 4 * MS)
    estimator.add(sample)
    estimator.add(sample_at(6 * S, 4 * MS))
    estimator.reset()
    assert len(estimator) == 0 and estimator.estimate(7 * S) is None
    assert estimator.add(sample) is None


def test_after_reset_a_far_offset_is_accepted_without_a_step() -> None:
    """After reset, a sample 3 s away from the old offset is kept at once (no OUTLIER, steps stays 0)."""
    estimator = OffsetEstimator()
    for index in range(5):
        estimator.add(sample_at((1 + index) * S, 4 * MS, offset_ns=0))
    estimator.reset()
    assert estimator.add(sample_at(10 * S, 4 * MS, offset_ns=3 * S)) is None
    estimate = estimator.estimate(10 * S)
    assert estimate is not None and abs(estimate.offset_ns - 3 * S) <= estimate.bound_ns
    assert estimator.steps == 0


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"window": 1}, "window"),
        ({"window": -5}, "window"),
        ({"max_age_ns": 0}, "max_age_ns"),
        ({"max_rate_error_ppm": -1.0}, "max_rate_error_ppm"),
        ({"max_rate_error_ppm": math.nan}, "max_rate_error_ppm"),
        ({"max_rate_error_ppm": math.inf}, "max_rate_error_ppm"),
        ({"rate_wander_ppm": -0.1}, "rate_wander_ppm"),
        ({"rate_wander_ppm": math.nan}, "rate_wander_ppm"),
        ({"min_fit_samples": 2}, "min_fit_samples"),
        ({"device_resolution_ns": -1}, "device_resolution_ns"),
        ({"server_resolution_ns": -1}, "server_resolution_ns"),
        ({"min_fit_span_ns": -1}, "min_fit_span_ns"),
    ],
)
def test_config_error_names_the_option(options: dict[str, float], name: str) -> None:
    """An invalid EstimatorConfig raises ValueError whose text starts with the option's name."""
    with pytest.raises(ValueError, match=f"^{name}:"):
        EstimatorConfig(**options)  # type: ignore[arg-type]


def test_smallest_valid_config_is_accepted() -> None:
    """window 2, max_age_ns 1, zero rates, min_fit_samples 3 and zero resolutions and span are valid."""
    config = EstimatorConfig(
        window=2, max_age_ns=1, max_rate_error_ppm=0.0, rate_wander_ppm=0.0, min_fit_samples=3,
        device_resolution_ns=0, server_resolution_ns=0, min_fit_span_ns=0,
    )
    assert OffsetEstimator(config).config is config


def test_one_glitched_sample_does_not_spoil_the_estimate() -> None:
    """One sample 300 ms off amid consistent ones (steps stays 0) leaves the offset within the bound it had before."""
    estimator = OffsetEstimator(EstimatorConfig(device_resolution_ns=0))
    for index in range(30):
        assert estimator.add(sample_at((100 + 2 * index) * S, 10 * MS, offset_ns=1 * S)) is None
    before = estimator.estimate(160 * S)
    assert before is not None
    assert estimator.add(sample_at(160 * S, 10 * MS, offset_ns=1 * S + 300 * MS)) is Rejection.OUTLIER
    for index in range(1, 11):
        assert estimator.add(sample_at((160 + 2 * index) * S, 10 * MS, offset_ns=1 * S)) is None
        after = estimator.estimate((160 + 2 * index) * S)
        assert after is not None
        assert abs(after.offset_ns - 1 * S) <= before.bound_at(after.at_server_ns), (before, after)
    assert estimator.steps == 0
