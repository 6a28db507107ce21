"""clock.estimator: the reported bound holds on simulated networks, and the filter's rules.

Like chrony's test/unit/samplefilt.c: many seeded random configurations (clock
offset and skew, delay distributions with tails, spikes and asymmetry, loss,
coarse device timestamps), asserting invariants at every step rather than
particular numbers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from clock.estimator import ClockEstimate, EstimatorConfig, OffsetEstimator
from clock.sample import Rejection, Sample, make_sample

US = 1_000
MS = 1_000_000
S = 1_000_000_000

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


def uniform(low_ms: float, high_ms: float) -> Delay:
    return lambda rng: rng.uniform(low_ms, high_ms) * MS


def exponential_tail(base_ms: float, mean_extra_ms: float, cap_ms: float = 500) -> Delay:
    return lambda rng: (base_ms + min(rng.expovariate(1 / mean_extra_ms), cap_ms)) * MS


def with_spikes(inner: Delay, probability: float) -> Delay:
    """Now and then a spike of 50-200 ms on top of ``inner`` (a 4G scheduler, a Wi-Fi retry)."""
    return lambda rng: inner(rng) + (rng.uniform(50, 200) * MS if rng.random() < probability else 0.0)


def random_delay(rng: random.Random) -> Delay:
    base = rng.uniform(0.5, 40)
    kind = rng.choice(["uniform", "exponential", "spiky uniform", "spiky exponential"])
    delay = uniform(base, base + rng.uniform(0, 30)) if "uniform" in kind else exponential_tail(base, rng.uniform(0.5, 50))
    return with_spikes(delay, rng.uniform(0.05, 0.3)) if "spiky" in kind else delay


@dataclass(frozen=True)
class Network:
    device: SimulatedDevice
    up: Delay
    down: Delay  # a different distribution from ``up`` makes the path asymmetric
    loss: float
    config: EstimatorConfig


def random_network(rng: random.Random, resolution_ns: int) -> Network:
    max_rate_ppm = rng.choice([100.0, 200.0])
    skew_limit_ppm = min(100.0, max_rate_ppm)
    device = SimulatedDevice(
        offset0_ns=rng.randint(-10 * S, 10 * S),
        skew_ppm=rng.choice([skew_limit_ppm, -skew_limit_ppm, rng.uniform(-skew_limit_ppm, skew_limit_ppm)]),
        resolution_ns=resolution_ns,
        rounding=rng.choice(["floor", "round"]),
    )
    up = random_delay(rng)
    path = rng.choice(["symmetric", "asymmetric", "one-sided up", "one-sided down"])
    down = up if path == "symmetric" else random_delay(rng)
    # One-sided: almost all of the delay on one path, where the error nears delay / 2.
    if path == "one-sided up":
        down = uniform(0.01, 0.2)
    elif path == "one-sided down":
        up = uniform(0.01, 0.2)
    config = EstimatorConfig(window=rng.choice([1, 8, 64]), max_rate_error_ppm=max_rate_ppm, device_resolution_ns=resolution_ns)
    return Network(device, up, down, rng.uniform(0, 0.2), config)


def exchange(network: Network, rng: random.Random, t0_true_ns: int) -> tuple[Sample | Rejection, int]:
    """One ping-pong at server time ``t0_true_ns``; returns the sample and the server time of the pong."""
    server_res = network.config.server_resolution_ns
    t1_true = t0_true_ns + network.up(rng)
    t2_true = t1_true + rng.uniform(0, 5) * MS  # the device's turnaround
    t3_true = t2_true + network.down(rng)
    t0 = t0_true_ns // server_res * server_res
    t3 = int(t3_true) // server_res * server_res
    return make_sample(t0, network.device.read_ns(t1_true), network.device.read_ns(t2_true), t3), int(t3_true)


def assert_within_bound(estimate: ClockEstimate, device: SimulatedDevice, server_ns: int) -> None:
    truth = device.true_offset_ns(server_ns)
    error = abs(truth - estimate.offset_at(server_ns))
    assert error <= estimate.bound_at(server_ns), (error, estimate, device)


def run_network(seed: int, resolution_ns: int, steps: int = 120) -> None:
    rng = random.Random(seed)
    network = random_network(rng, resolution_ns)
    estimator = OffsetEstimator(network.config)
    now = rng.randint(0, 3600 * S)
    assert estimator.estimate(now) is None
    kept = 0
    for _ in range(steps):
        now += rng.choice([50 * MS, 500 * MS, 2 * S, rng.randint(1, 10 * S)])
        if rng.random() < network.loss:
            continue
        sample, now = exchange(network, rng, now)
        assert isinstance(sample, Sample)  # time never runs backwards in this simulation
        assert estimator.add(sample) is None
        kept += 1
        estimate = estimator.estimate(now)
        assert estimate is not None
        assert estimate.samples == len(estimator) == min(kept, network.config.window)
        assert estimate.at_server_ns == now
        assert estimate.bound_growth_ppm == network.config.max_rate_error_ppm
        assert_within_bound(estimate, network.device, now)
        later = now + rng.randint(0, 30 * S)
        assert_within_bound(estimate, network.device, later)
        later_estimate = estimator.estimate(later)
        assert later_estimate is not None
        assert_within_bound(later_estimate, network.device, later)


@pytest.mark.parametrize("resolution_ns", [1 * MS, 100 * US], ids=["1ms", "0.1ms"])
@pytest.mark.parametrize("seeds", [range(0, 40), range(40, 80)], ids=["seeds0-39", "seeds40-79"])
def test_true_offset_always_within_reported_bound(resolution_ns: int, seeds: range) -> None:
    """On random networks (skew <= max_rate_error_ppm), the true offset is always within offset +- bound."""
    for seed in seeds:
        run_network(seed, resolution_ns)


def test_bound_holds_across_a_reset_after_a_clock_step() -> None:
    """After the device clock steps by 3 s and the estimator is reset, the bound holds again."""
    rng = random.Random(7)
    network = Network(SimulatedDevice(2 * S, 50.0, 1 * MS, "floor"), exponential_tail(5, 10), uniform(2, 8), 0.0, EstimatorConfig())
    estimator = OffsetEstimator(network.config)
    now = 100 * S
    for _ in range(20):
        sample, now = exchange(network, rng, now + 500 * MS)
        assert isinstance(sample, Sample) and estimator.add(sample) is None
    stepped = SimulatedDevice(network.device.offset0_ns - 3 * S, 50.0, 1 * MS, "floor")
    network = Network(stepped, network.up, network.down, 0.0, network.config)
    estimator.reset()
    assert estimator.estimate(now) is None
    for _ in range(20):
        sample, now = exchange(network, rng, now + 500 * MS)
        assert isinstance(sample, Sample) and estimator.add(sample) is None
        estimate = estimator.estimate(now)
        assert estimate is not None
        assert_within_bound(estimate, stepped, now)


# --- literal rules -------------------------------------------------------------------


def sample_at(mid_ns: int, delay_ns: int, offset_ns: int = 0) -> Sample:
    """A sample centred on server time ``mid_ns`` with the given delay and offset (delay and offset even)."""
    t0 = mid_ns - delay_ns // 2
    t1 = t0 + delay_ns // 2 - offset_ns
    sample = make_sample(t0, t1, t1, t0 + delay_ns)
    assert isinstance(sample, Sample) and sample.offset_ns == offset_ns and sample.delay_ns == delay_ns
    return sample


EXACT = EstimatorConfig(device_resolution_ns=0, server_resolution_ns=0, max_rate_error_ppm=100.0)


def test_estimate_is_none_before_any_sample() -> None:
    """A new estimator has no estimate and no samples."""
    estimator = OffsetEstimator()
    assert estimator.estimate(0) is None and estimator.estimate(10**18) is None
    assert len(estimator) == 0


def test_single_sample_bound_is_half_delay_plus_resolutions() -> None:
    """With one sample estimated at its own middle: bound = delay/2 + 1.5 device res + server res."""
    estimator = OffsetEstimator()
    assert estimator.add(sample_at(10 * S, 20 * MS, offset_ns=-2 * S)) is None
    assert estimator.estimate(10 * S) == ClockEstimate(
        at_server_ns=10 * S, offset_ns=-2e9, bound_ns=10 * MS + 1_500_000 + 1_000, rate_ppm=0.0, bound_growth_ppm=200.0, samples=1
    )


def test_duplicate_sample_is_rejected() -> None:
    """Adding the same sample twice returns DUPLICATE and keeps one copy."""
    estimator = OffsetEstimator()
    sample = sample_at(5 * S, 4 * MS, offset_ns=1_000)
    assert estimator.add(sample) is None
    assert estimator.add(Sample(*[getattr(sample, name) for name in ("t0_server_ns", "t1_device_ns", "t2_device_ns", "t3_server_ns")])) is Rejection.DUPLICATE
    assert len(estimator) == 1


def test_reset_clears_every_sample() -> None:
    """After reset there is no estimate, and a previously kept sample is accepted again."""
    estimator = OffsetEstimator()
    sample = sample_at(5 * S, 4 * MS)
    estimator.add(sample)
    estimator.add(sample_at(6 * S, 4 * MS))
    estimator.reset()
    assert len(estimator) == 0 and estimator.estimate(7 * S) is None
    assert estimator.add(sample) is None


def test_window_keeps_only_the_newest_samples() -> None:
    """With window 3, the 4th sample evicts the first, even when the first was the best."""
    estimator = OffsetEstimator(EstimatorConfig(window=3, max_rate_error_ppm=0.0))
    estimator.add(sample_at(1 * S, 2 * MS, offset_ns=111))
    for index in range(3):
        estimator.add(sample_at((2 + index) * S, 50 * MS, offset_ns=222))
    estimate = estimator.estimate(5 * S)
    assert estimate is not None
    assert len(estimator) == 3 and estimate.samples == 3
    assert estimate.offset_ns == 222


def test_lower_delay_sample_wins() -> None:
    """Of two samples at the same time, the one with the lower delay gives the estimate."""
    estimator = OffsetEstimator(EXACT)
    estimator.add(sample_at(10 * S, 30 * MS, offset_ns=5 * MS))
    estimator.add(sample_at(10 * S, 4 * MS, offset_ns=7 * MS))
    estimator.add(sample_at(10 * S, 12 * MS, offset_ns=9 * MS))
    estimate = estimator.estimate(10 * S)
    assert estimate is not None
    assert (estimate.offset_ns, estimate.bound_ns) == (7 * MS, 2 * MS)


@pytest.mark.parametrize(
    ("age_s", "winner_offset_ns", "bound_ns"),
    [(100, 2, 3 * MS), (5, 1, 2_500_000)],
    ids=["fresh-6ms-beats-100s-old-4ms", "5s-old-4ms-beats-fresh-6ms"],
)
def test_smallest_bound_now_wins_between_old_and_fresh(age_s: int, winner_offset_ns: int, bound_ns: int) -> None:
    """An old 4 ms sample (bound 2 ms + 100 ppm x age) loses to a fresh 6 ms one (3 ms) only once older than 10 s."""
    estimator = OffsetEstimator(EXACT)
    estimator.add(sample_at(0, 4 * MS, offset_ns=1))
    estimator.add(sample_at(age_s * S, 6 * MS, offset_ns=2))
    estimate = estimator.estimate(age_s * S)
    assert estimate is not None
    assert estimate.offset_ns == winner_offset_ns
    assert estimate.bound_ns == pytest.approx(bound_ns, abs=1e-6)


def test_bound_grows_with_age_at_bound_growth_ppm() -> None:
    """With one sample, the bound 10 s later is 200 ppm x 10 s = 2 ms larger, both ways of asking."""
    estimator = OffsetEstimator()
    estimator.add(sample_at(20 * S, 8 * MS))
    first = estimator.estimate(20 * S)
    later = estimator.estimate(30 * S)
    assert first is not None and later is not None
    assert later.bound_ns - first.bound_ns == pytest.approx(2 * MS, abs=1e-6)
    assert first.bound_at(30 * S) == pytest.approx(later.bound_ns, abs=1e-6)
    assert first.bound_at(10 * S) == pytest.approx(first.bound_ns + 2 * MS, abs=1e-6)


def test_no_growth_before_the_sample_middle() -> None:
    """Asked at a time before the sample's middle, the bound does not shrink below the sample's own."""
    estimator = OffsetEstimator(EXACT)
    estimator.add(sample_at(20 * S, 8 * MS))
    estimate = estimator.estimate(20 * S - 2 * MS)
    assert estimate is not None and estimate.bound_ns == 4 * MS


def test_offset_at_applies_the_rate() -> None:
    """offset_at extrapolates by rate_ppm; the estimator reports rate 0 so the offset is constant."""
    estimate = ClockEstimate(at_server_ns=10 * S, offset_ns=500.0, bound_ns=1.0, rate_ppm=-20.0, bound_growth_ppm=100.0, samples=1)
    assert estimate.offset_at(20 * S) == pytest.approx(500 - 200_000)
    assert estimate.bound_at(20 * S) == pytest.approx(1 + 1_000_000)
    estimator = OffsetEstimator()
    estimator.add(sample_at(1 * S, 2 * MS, offset_ns=-40))
    current = estimator.estimate(1 * S)
    assert current is not None and current.rate_ppm == 0.0 and current.offset_at(99 * S) == -40


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"window": 0}, "window"),
        ({"window": -5}, "window"),
        ({"max_rate_error_ppm": -1.0}, "max_rate_error_ppm"),
        ({"max_rate_error_ppm": math.nan}, "max_rate_error_ppm"),
        ({"max_rate_error_ppm": math.inf}, "max_rate_error_ppm"),
    ],
)
def test_config_error_names_the_option(options: dict[str, float], name: str) -> None:
    """An invalid EstimatorConfig raises ValueError whose text starts with the option's name."""
    with pytest.raises(ValueError, match=f"^{name}:"):
        EstimatorConfig(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [{"device_resolution_ns": -1}, {"server_resolution_ns": -1}])
def test_negative_resolution_is_rejected(options: dict[str, int]) -> None:
    """A negative timestamp resolution raises ValueError."""
    with pytest.raises(ValueError):
        EstimatorConfig(**options)  # type: ignore[arg-type]


def test_default_config_is_valid() -> None:
    """The defaults are 64 samples, 200 ppm, 1 ms device and 1 us server resolution."""
    assert EstimatorConfig() == EstimatorConfig(window=64, max_rate_error_ppm=200.0, device_resolution_ns=1_000_000, server_resolution_ns=1_000)


@pytest.mark.parametrize("name", ["device_resolution_ns", "server_resolution_ns"])
def test_negative_resolution_error_names_the_option(name: str) -> None:
    """A negative resolution raises ValueError whose text starts with the option's name."""
    with pytest.raises(ValueError, match=f"^{name}:"):
        EstimatorConfig(**{name: -1})
