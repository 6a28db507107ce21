"""Seeded network and device models, shared by every bench mode and by the peers.

A network model is a *delay field*: for each direction and each 1 ms cell of
send time, the one-way delay (ms) a message sent then would take, or NaN when
the network is gone. Generating it up front as arrays makes the same trace
replayable exactly by the real-socket bench, the virtual-time simulator and the
Node.js peer runner (which reads the exported float32 arrays). TCP's ordering
(no overtaking) is applied by whoever delivers, not here.

The numbers come from ../shared/FIELD-NOTES.md:
- lan: RTT about 2 ms.
- wifi: power save holds downlink frames until the next beacon (an idle phone's
  pings took 48-204 ms against ~2 ms under traffic); channel scans stall all
  traffic ~100 ms.
- 4g: RTT 30-60 ms; the uplink waits for a scheduling grant (request periods of
  tens of ms) and hybrid retransmissions add ~8 ms, so it is slower and
  jitterier; heavy-tailed; queueing that comes and goes.
- crowd: 4G in a crowd of 10,000: loss 5-30 % in bursts (over TCP: late by a
  retransmission timeout of >= 200 ms, not lost), bufferbloat of hundreds of
  ms, multi-second stalls.
- outage overlay: no network at all for the last 20 minutes of the show.

Every model keeps the *floor* of the two directions equal: a constant
difference between uplink and downlink is invisible to any two-way method, and
is modelled apart (``asym_ms``) and reported apart.

Both endpoints' scheduling delays are part of every model: the server's event
loop stamps a receipt late now and then (uplink), the phone's main thread runs
the message handler late now and then (downlink).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Cell of send time: 1 ms for start runs (shared with the peers), coarser for
# hour-long virtual runs, where nothing is sent closer than 50 ms apart anyway.
CELL_S = 0.001
MODELS = ("lan", "wifi", "4g", "crowd")
# A lost segment over TCP is retransmitted after the RTO: at least 200 ms on
# Linux (RTO_MIN), doubling with each further loss.
TCP_RTO_MIN_MS = 200.0


@dataclass(frozen=True)
class Trace:
    """One device's network: delays in ms per 1 ms cell of send time, NaN = gone."""

    model: str
    up_ms: np.ndarray  # device -> server
    down_ms: np.ndarray  # server -> device
    cell_s: float = CELL_S

    @property
    def duration_s(self) -> float:
        return len(self.up_ms) * self.cell_s

    def up(self, t_s: float) -> float:
        """One-way uplink delay (s) for a message sent at ``t_s`` (s since the trace began); NaN: gone."""
        return _lookup(self.up_ms, t_s / self.cell_s)

    def down(self, t_s: float) -> float:
        """One-way downlink delay (s) for a message sent at ``t_s``; NaN: gone."""
        return _lookup(self.down_ms, t_s / self.cell_s)


def _lookup(cells: np.ndarray, index: float) -> float:
    i = int(index)
    if i < 0:
        i = 0
    elif i >= len(cells):
        i = len(cells) - 1
    return float(cells[i]) / 1000.0


def _rng(seed: int, device: int, stream: str) -> np.random.Generator:
    # Independent, reproducible streams per (seed, device, purpose).
    return np.random.default_rng([seed, device, sum(ord(c) << (8 * i) for i, c in enumerate(stream[:7]))])


def _intervals(rng: np.random.Generator, n: int, cell: float, rate_per_s: float, low_s: float, high_s: float) -> list[tuple[int, int]]:
    """Poisson-timed intervals [start, end) in cells, durations uniform in [low, high] s."""
    out: list[tuple[int, int]] = []
    t = 0.0
    total_s = n * cell
    while rate_per_s > 0:
        t += rng.exponential(1.0 / rate_per_s)
        if t >= total_s:
            break
        start = int(t / cell)
        end = min(n, start + max(1, int(rng.uniform(low_s, high_s) / cell)))
        out.append((start, end))
    return out


def _hold_until_end(delay: np.ndarray, intervals: list[tuple[int, int]], cell: float) -> None:
    """A message sent during a stall leaves when the stall ends: add the time remaining."""
    for start, end in intervals:
        delay[start:end] += (end - np.arange(start, end)) * (cell * 1000.0)


def _queueing(rng: np.random.Generator, n: int, cell: float, knot_s: float, scale_ms: float, cap_ms: float) -> np.ndarray:
    """Queueing that comes and goes: episodes (every ~20 s, 2-10 s long) of a
    slowly varying delay (a reflected random walk, linearly interpolated); the
    queue is drained between episodes."""
    knots = max(2, int(n * cell / knot_s) + 2)
    steps = rng.normal(0.0, scale_ms, knots)
    walk = np.empty(knots)
    level = 0.0
    for i, step in enumerate(steps):
        level = min(cap_ms, abs(level + step))
        walk[i] = level
    x = np.arange(n) * cell / knot_s
    queue = np.interp(x, np.arange(knots), walk)
    busy = np.zeros(n, dtype=bool)
    for start, end in _intervals(rng, n, cell, 1 / 20.0, 2.0, 10.0):
        busy[start:end] = True
    return np.where(busy, queue, 0.0)


def _endpoint_delays(rng: np.random.Generator, n: int, mean_ms: float, p_late: float, late_ms: tuple[float, float]) -> np.ndarray:
    """A scheduler's delay before a stamp: mostly small, sometimes a busy stretch."""
    d = rng.exponential(mean_ms, n)
    late = rng.random(n) < p_late
    d[late] += rng.uniform(*late_ms, int(late.sum()))
    return d


def _tcp_loss(rng: np.random.Generator, n: int, cell: float, p_loss: float, burst_s: float, rtt_ms: float) -> np.ndarray:
    """Extra delay from losses retransmitted by TCP, in bursts (Gilbert-Elliott, two states).

    In the bad state half the segments are lost; its share of time is set so the
    average loss rate is ``p_loss``. A loss costs one RTO (>= 200 ms); a second
    loss in a row (still in the bad state) doubles it.
    """
    p_bad_loss = 0.5
    share_bad = min(0.95, p_loss / p_bad_loss)
    extra = np.zeros(n)
    mean_bad_s = burst_s
    mean_good_s = burst_s * (1 - share_bad) / max(share_bad, 1e-9)
    t = rng.exponential(mean_good_s)
    rto = max(TCP_RTO_MIN_MS, 3 * rtt_ms)
    while t < n * cell:
        length = rng.exponential(mean_bad_s)
        start, end = int(t / cell), min(n, int((t + length) / cell))
        cells = end - start
        if cells > 0:
            first = rng.random(cells) < p_bad_loss
            second = first & (rng.random(cells) < p_bad_loss)
            extra[start:end] += first * rto + second * 2 * rto
        t += length + rng.exponential(mean_good_s)
    return extra


def make_trace(
    model: str,
    seed: int,
    device: int,
    duration_s: float,
    *,
    outage_last_s: float = 0.0,
    asym_ms: float = 0.0,
    cell_s: float = CELL_S,
) -> Trace:
    """The delay field of one device on one network model. Deterministic in its arguments.

    ``outage_last_s``: no network for that many seconds at the end (NaN cells).
    ``asym_ms``: a constant extra uplink delay (path asymmetry, reported apart).
    """
    if model not in MODELS:
        raise ValueError(f"model: expected one of {', '.join(MODELS)}, found {model!r}")
    cell = cell_s
    n = int(round(duration_s / cell))
    rng = _rng(seed, device, model)
    # The endpoints: the server's event loop (receipt stamped late: uplink) and
    # the phone's main thread (handler run late: downlink).
    server_loop = _endpoint_delays(rng, n, 0.05, 0.002, (2.0, 20.0))
    phone_thread = _endpoint_delays(rng, n, 0.2, 0.005, (5.0, 40.0))

    if model == "lan":
        floor = rng.uniform(0.4, 0.8)
        up = floor + rng.exponential(0.05, n)
        down = floor + rng.exponential(0.05, n)
        spikes = rng.random(n) < 0.002
        down[spikes] += rng.uniform(1.0, 5.0, int(spikes.sum()))
    elif model == "wifi":
        floor = rng.uniform(1.0, 3.0)
        up = floor + rng.exponential(0.4, n) + rng.uniform(0.0, 2.0, n) * (rng.random(n) < 0.2)
        down = floor + rng.exponential(0.4, n)
        # Power save: dozing stretches during which downlink frames wait for the
        # next beacon the phone listens to (102.4 ms beacons, listen interval 1-2).
        listen_ms = 102.4 * rng.integers(1, 3)
        phase = rng.uniform(0.0, listen_ms)
        t_ms = np.arange(n) * (cell * 1000.0)
        to_beacon = (phase - t_ms) % listen_ms
        dozing = np.zeros(n, dtype=bool)
        for start, end in _intervals(rng, n, cell, 1 / 6.0, 0.5, 3.0):
            dozing[start:end] = True
        down = down + np.where(dozing, to_beacon + rng.uniform(0, 100.0, n) * (rng.random(n) < 0.3), 0.0)
        stalls = _intervals(rng, n, cell, 1 / 30.0, 0.08, 0.12)
        _hold_until_end(up, stalls, cell)
        _hold_until_end(down, stalls, cell)
    else:  # 4g and crowd
        floor = rng.uniform(10.0, 20.0)
        # Downlink: small jitter, sometimes a few ms more; queueing that comes and goes.
        down = floor + rng.exponential(1.5, n)
        more = rng.random(n) < 0.02
        down[more] += rng.uniform(5.0, 20.0, int(more.sum()))
        # Uplink: wait for a grant (scheduling request period 10 ms), hybrid
        # retransmissions (~10 % each, +8 ms), and a heavy (Pareto) tail.
        up = floor + rng.uniform(0.0, 10.0, n)
        for _ in range(3):
            up += 8.0 * (rng.random(n) < 0.1)
        tail = rng.random(n) < 0.01
        up[tail] += np.minimum(2000.0, 5.0 * (rng.pareto(1.5, int(tail.sum())) + 1))
        bloat_cap = 20.0 if model == "4g" else 300.0
        down += _queueing(rng, n, cell, 1.0, bloat_cap / 6, bloat_cap)
        up += _queueing(rng, n, cell, 1.0, bloat_cap / 12, bloat_cap / 2)
        if model == "crowd":
            p_loss = rng.uniform(0.05, 0.30)
            rtt = 2 * floor
            up += _tcp_loss(rng, n, cell, p_loss, 0.5, rtt)
            down += _tcp_loss(rng, n, cell, p_loss, 0.5, rtt)
            stalls = _intervals(rng, n, cell, 1 / 60.0, 1.0, 5.0)
            _hold_until_end(up, stalls, cell)
            _hold_until_end(down, stalls, cell)

    up = up + server_loop + asym_ms
    down = down + phone_thread
    if outage_last_s > 0:
        cut = max(0, n - int(outage_last_s / cell))
        up[cut:] = np.nan
        down[cut:] = np.nan
    return Trace(model, up.astype(np.float32), down.astype(np.float32), cell)


@dataclass(frozen=True)
class DeviceProfile:
    """A phone's clocks. Offsets in ns, rates in ppm, times in s since the trace began.

    device time = true time + offset_ns + system_ppm * 1e-6 * t (+ step after step_at_s),
    read with a resolution of ``resolution_ns`` (Chrome 0.1 ms, Safari 1 ms).
    The audio clock runs ``audio_ppm`` fast against the device's system clock.
    """

    offset_ns: int
    system_ppm: float
    audio_ppm: float
    resolution_ns: int
    step_at_s: float | None = None
    step_ns: int = 0

    def device_ns(self, true_s: float) -> int:
        """The (unquantised) device clock at true time ``true_s``."""
        value = self.offset_ns + true_s * 1e9 * (1 + self.system_ppm * 1e-6)
        if self.step_at_s is not None and true_s >= self.step_at_s:
            value += self.step_ns
        return int(value)

    def read_ns(self, true_s: float) -> int:
        """What the device's clock API returns: quantised to its resolution."""
        value = self.device_ns(true_s)
        return value - value % self.resolution_ns

    def true_s(self, device_ns: float) -> float:
        """Inverse of ``device_ns`` (ignoring quantisation)."""
        value = device_ns - self.offset_ns
        if self.step_at_s is not None and value >= self.step_at_s * 1e9 * (1 + self.system_ppm * 1e-6) + self.step_ns:
            value -= self.step_ns
        return value / 1e9 / (1 + self.system_ppm * 1e-6)

    def true_offset_ns(self, true_s: float) -> float:
        """server - device at true time ``true_s`` (server time is true time)."""
        return true_s * 1e9 - self.device_ns(true_s)


def make_device(seed: int, device: int, *, safari_share: float = 0.4, step: bool = False, duration_s: float = 3600.0) -> DeviceProfile:
    """A random phone: offset +-10 s, system clock +-100 ppm, audio +-100 ppm vs system."""
    rng = _rng(seed, device, "device")
    safari = rng.random() < safari_share
    step_at = float(rng.uniform(0.2, 0.8) * duration_s) if step else None
    step_ns = int(rng.choice([-1, 1]) * rng.uniform(0.05, 2.0) * 1e9) if step else 0
    return DeviceProfile(
        offset_ns=int(rng.uniform(-10e9, 10e9)),
        system_ppm=float(rng.uniform(-100.0, 100.0)),
        audio_ppm=float(rng.uniform(-100.0, 100.0)),
        resolution_ns=1_000_000 if safari else 100_000,
        step_at_s=step_at,
        step_ns=step_ns,
    )
