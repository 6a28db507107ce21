"""Drift correction during playback: keep the audible track position on time.

Python twin of ``clients/web/js/drift.js``: the same algorithm, constants and
floating-point operations in the same order, so that both replay
``tests/fixtures/drift_vectors.json`` to 1e-9. Change one, change the other,
and regenerate the vectors (``tests/fixtures/make_drift_vectors.py``).

Clock domain: the audio clock (``AudioContext`` time, seconds). A source
started with ``start(context_when_s, position_s)`` renders ``position_s`` at
audio time ``context_when_s``; from then on the position advances by
``playback_rate`` seconds per audio-clock second. The controller keeps its own
record of the rates it asked for, so it knows the played position at any
audio time exactly, and needs only the target: ``measure(audible_context_time_s,
target_position_s)`` says which track position *should* be heard at the instant
audio time ``audible_context_time_s`` is heard (the glue reads the pair from
``getOutputTimestamp`` and the server clock estimate). Sign, once:
``error = played - target``; positive means the device plays ahead.

The loop (run at every measurement, ~1 s apart):

1. error = played position - target, pushed into a window of the last
   ``FILTER_LENGTH`` errors; nothing is done until the window is full, then
   the median is the filtered error (robust to a stray measurement).
2. |filtered error| > ``REALIGN_THRESHOLD_S``: re-align, once: a new source at
   the target position ``APPLY_LEAD_S`` from now, at the rate estimate; the
   window starts empty again, so the next decision waits for fresh samples.
3. Otherwise a PI loop on the part of the filtered error outside
   ``DEADBAND_S``. The integral term is the rate estimate: the playback rate
   that cancels the audio clock's own rate error against the server. Inside
   the deadband nothing moves, so once locked the rate holds at the estimate
   and noise does not make it hunt; a rate error left in the estimate walks
   the error to the deadband's edge, where the loop corrects both. The gains
   make a second-order loop of time constant ``LOOP_TIME_CONSTANT_S`` and
   damping ``LOOP_DAMPING``; the integral is clamped and stops while the rate
   is saturated (no wind-up).
4. The rate is clamped to 1 +- ``MAX_RATE_DEVIATION`` and sent only when it
   moved by ``MIN_RATE_STEP`` or more since the last one sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

# playbackRate may differ from 1 by at most this: 500 ppm is 0.87 cent, under
# the ~5 cent pitch difference a listener notices; snapcast corrects drift
# within the same +-500 ppm.
MAX_RATE_DEVIATION = 500e-6
# Errors larger than this are re-aligned (the source restarted at the right
# position) rather than slewed. 50 ms is where two copies of the same music
# stop fusing and are heard as an echo (FIELD-NOTES, perception), and is
# snapcast's largest jump threshold; slewing it away at the 300 ppm left once
# a 200 ppm clock error is cancelled would take almost 3 minutes.
REALIGN_THRESHOLD_S = 0.05
# Median over this many measurements (odd). At one measurement a second it
# delays the loop by ~2 s, against a loop time constant of 30 s, and outvotes
# up to two stray measurements (a getOutputTimestamp glitch, a bad estimate).
FILTER_LENGTH = 5
# The loop ignores this much error. Filtered measurement noise is ~0.5-1 ms
# (estimate 0.1-2 ms, render quantum 2.9 ms, performanceTime 0.1-1 ms,
# through the median); a 1 ms deadband keeps most of it out of the rate (a
# quiet device changes its rate ~2 times a minute instead of every second), and
# 1 ms is well inside the 1-5 ms within which two clicks fuse.
DEADBAND_S = 0.001
# Natural time constant of the loop, and its damping. Tuned in simulated time
# (tests/fixtures/make_drift_vectors.py's SimulatedDevice, +-100 ppm): with
# 30 s the played position stays within 0.7 ms of target at 1 ms estimate
# noise and 1.4 ms at 2 ms, and re-locks within 2 minutes after the clock
# estimate's rate changes by 250 ppm; 45-90 s halved the rate jitter but
# doubled the overshoot and the re-lock time. Damping 1.5 (rather than the
# critical 1) cuts the overshoot after an offset, which the integral term
# absorbs and gives back, from ~3.5 to ~2.5 ms per 20 ms.
LOOP_TIME_CONSTANT_S = 30.0
LOOP_DAMPING = 1.5
# PI on the error e outside the deadband: rate - 1 = I - KP e, dI/dt = -KI e;
# closed loop s^2 + KP s + KI = s^2 + 2 zeta w s + w^2 with w = 1 / tau.
PROPORTIONAL_GAIN_PER_S = 2.0 * LOOP_DAMPING / LOOP_TIME_CONSTANT_S
INTEGRAL_GAIN_PER_S2 = 1.0 / (LOOP_TIME_CONSTANT_S * LOOP_TIME_CONSTANT_S)
# A rate change smaller than this is not sent: 1 ppm moves the position by
# 1 us a second, far below anything measurable, and saves the audio thread a
# parameter event every second.
MIN_RATE_STEP = 1e-6
# Rate changes and re-aligns take effect this long after the context's
# current time: a render quantum is ~3 ms and a busy phone's main thread can
# stall tens of ms (as schedule.js's LATE_START_MARGIN_S).
APPLY_LEAD_S = 0.1

Action = Literal["keep", "rate", "realign"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a measurement.

    - ``keep``: nothing.
    - ``rate``: ``source.playbackRate.setValueAtTime(rate, at_context_time_s)``.
    - ``realign``: stop the source; start a new one at audio time
      ``at_context_time_s`` from track position ``position_s``, with
      playbackRate ``rate``.
    ``error_s`` is the filtered error (played - target, s) that led to it.
    """

    action: Action
    rate: float
    at_context_time_s: float
    position_s: float
    error_s: float


@dataclass(frozen=True, slots=True)
class _Segment:
    """From audio time ``context_s`` on, the position is ``position_s + (c - context_s) * rate``."""

    context_s: float
    position_s: float
    rate: float


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number of seconds, found {value}")


class DriftController:
    """Rate and re-align decisions for one playing source. Time: audio-clock seconds."""

    def __init__(self) -> None:
        self._segments: list[_Segment] = []
        self._errors_s: list[float] = []
        self._last_context_s = -math.inf
        self._rate_estimate = 0.0  # integral term: playbackRate - 1 that holds the target
        self.error_s: float | None = None
        self.realigns = 0

    @property
    def rate(self) -> float:
        """The playbackRate most recently decided (1 before any source)."""
        return self._segments[-1].rate if self._segments else 1.0

    @property
    def rate_ppm(self) -> float:
        """(rate - 1) in ppm: positive plays faster."""
        return (self.rate - 1.0) * 1e6

    @property
    def rate_estimate_ppm(self) -> float:
        """The integral term in ppm: the rate that holds the target once locked."""
        return self._rate_estimate * 1e6

    def start(self, context_when_s: float, position_s: float, rate: float = 1.0) -> None:
        """A source was started: ``position_s`` renders at audio time ``context_when_s``.

        Forgets the measurements (they belong to the old source) and keeps the
        rate estimate (the audio clock did not change).
        """
        _finite("context_when_s", context_when_s)
        _finite("position_s", position_s)
        _finite("rate", rate)
        self._segments = [_Segment(context_when_s, position_s, rate)]
        self._errors_s = []
        self._last_context_s = -math.inf

    def position_at(self, context_s: float) -> float:
        """The track position (s) that renders at audio time ``context_s``, from the rates decided."""
        segments = self._segments
        if not segments:
            raise ValueError("position_at: no source started")
        i = len(segments) - 1
        while i > 0 and segments[i].context_s > context_s:
            i -= 1
        segment = segments[i]
        return segment.position_s + (context_s - segment.context_s) * segment.rate

    def measure(
        self,
        audible_context_time_s: float,
        target_position_s: float,
        context_now_s: float | None = None,
    ) -> Decision:
        """One measurement: audio time ``audible_context_time_s`` is heard when ``target_position_s`` should be.

        ``context_now_s`` is the context's currentTime (what renders now, later
        than what is heard by the output latency); decisions take effect
        APPLY_LEAD_S after it, or after the audible time when it is None.
        A measurement from before the source's start or not later than the
        previous one is ignored (``keep``). Raises ValueError for non-finite
        input or when no source was started.
        """
        c = audible_context_time_s
        _finite("audible_context_time_s", c)
        _finite("target_position_s", target_position_s)
        if context_now_s is not None:
            _finite("context_now_s", context_now_s)
        if not self._segments:
            raise ValueError("measure: no source started")
        if c < self._segments[0].context_s or c <= self._last_context_s:
            return self._keep()
        step_s = c - self._last_context_s if self._errors_s else 0.0
        self._last_context_s = c
        played_s = self.position_at(c)
        error_s = played_s - target_position_s
        errors = self._errors_s
        errors.append(error_s)
        if len(errors) > FILTER_LENGTH:
            del errors[0]
        if len(errors) < FILTER_LENGTH:
            self.error_s = error_s
            return self._keep()
        filtered_s = sorted(errors)[FILTER_LENGTH // 2]
        self.error_s = filtered_s
        at_s = (c if context_now_s is None or context_now_s < c else context_now_s) + APPLY_LEAD_S
        last = self._segments[-1]
        if at_s < last.context_s:
            at_s = last.context_s

        if abs(filtered_s) > REALIGN_THRESHOLD_S:
            rate = 1.0 + self._rate_estimate
            # The target at c, filtered, carried forward at the estimated rate.
            position_s = (played_s - filtered_s) + (at_s - c) * rate
            if position_s < 0.0:  # the target is before the track: start it later, from 0
                at_s = at_s - position_s / rate
                position_s = 0.0
            self.start(at_s, position_s, rate)
            self._last_context_s = c
            self.realigns += 1
            self.error_s = None  # unknown until the new source is measured
            return Decision("realign", rate, at_s, position_s, filtered_s)

        outside_s = filtered_s - _clamp(filtered_s, -DEADBAND_S, DEADBAND_S)
        unclamped = self._rate_estimate - PROPORTIONAL_GAIN_PER_S * outside_s
        deviation = _clamp(unclamped, -MAX_RATE_DEVIATION, MAX_RATE_DEVIATION)
        # Anti-windup: the integral does not push further into a saturated rate.
        integral_step = INTEGRAL_GAIN_PER_S2 * outside_s * step_s
        if unclamped == deviation or (unclamped > deviation) == (integral_step > 0.0):
            self._rate_estimate = _clamp(
                self._rate_estimate - integral_step, -MAX_RATE_DEVIATION, MAX_RATE_DEVIATION
            )
        rate = 1.0 + deviation
        if abs(rate - last.rate) < MIN_RATE_STEP:
            return self._keep()
        position_s = self.position_at(at_s)
        segment = _Segment(at_s, position_s, rate)
        if at_s == last.context_s:
            self._segments[-1] = segment
        else:
            # Segments that start before this measurement are no longer needed
            # (measurements only move forward): keep the last of them.
            while len(self._segments) > 1 and self._segments[1].context_s <= c:
                del self._segments[0]
            self._segments.append(segment)
        return Decision("rate", rate, at_s, position_s, filtered_s)

    def _keep(self) -> Decision:
        return Decision("keep", self.rate, 0.0, 0.0, self.error_s if self.error_s is not None else 0.0)
