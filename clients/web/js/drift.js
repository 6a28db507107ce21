/**
 * Drift correction during playback: keep the audible track position on time.
 *
 * Pure: no DOM, no performance, no AudioContext; every time comes in as an
 * argument. JavaScript twin of clock/drift.py: the same algorithm, constants
 * and floating-point operations in the same order, so that both replay
 * tests/fixtures/drift_vectors.json to 1e-9. Change one, change the other,
 * and regenerate the vectors (tests/fixtures/make_drift_vectors.py).
 *
 * Clock domain: the AudioContext's clock, s. A source started with
 * start(contextWhenS, positionS) renders positionS at audio time contextWhenS;
 * from then on the position advances by playbackRate seconds per audio-clock
 * second. The controller keeps its own record of the rates it asked for, so it
 * knows the played position at any audio time, and needs only the target:
 * measure({audibleContextTimeS, targetPositionS}) says which track position
 * SHOULD be heard at the instant audio time audibleContextTimeS is heard (the
 * glue reads the pair from getOutputTimestamp and the server clock estimate).
 * Sign, once: error = played - target; positive means the device plays ahead.
 *
 * The loop, at every measurement (~1 s apart): the median of the last
 * FILTER_LENGTH errors is the filtered error; above REALIGN_THRESHOLD_S a new
 * source is started at the target position; otherwise a PI loop on the error
 * outside DEADBAND_S, whose integral term is the rate estimate (the
 * playbackRate that cancels the audio clock's own rate error). Inside the
 * deadband nothing moves, so once locked the rate holds and noise does not
 * make it hunt. The rate is clamped to 1 +- MAX_RATE_DEVIATION, with the
 * integral stopped while saturated.
 */

// playbackRate may differ from 1 by at most this: 500 ppm is 0.87 cent, under
// the ~5 cent pitch difference a listener notices; snapcast corrects drift
// within the same +-500 ppm.
export const MAX_RATE_DEVIATION = 500e-6;
// Errors larger than this are re-aligned (the source restarted at the right
// position) rather than slewed. 50 ms is where two copies of the same music
// stop fusing and are heard as an echo (FIELD-NOTES, perception), and is
// snapcast's largest jump threshold; slewing it away at the 300 ppm left once
// a 200 ppm clock error is cancelled would take almost 3 minutes.
export const REALIGN_THRESHOLD_S = 0.05;
// Median over this many measurements (odd). At one measurement a second it
// delays the loop by ~2 s, against a loop time constant of 30 s, and outvotes
// up to two stray measurements (a getOutputTimestamp glitch, a bad estimate).
export const FILTER_LENGTH = 5;
// The loop ignores this much error. Filtered measurement noise is ~0.5-1 ms
// (estimate 0.1-2 ms, render quantum 2.9 ms, performanceTime 0.1-1 ms,
// through the median); a 1 ms deadband keeps most of it out of the rate, and
// 1 ms is well inside the 1-5 ms within which two clicks fuse.
export const DEADBAND_S = 0.001;
// Natural time constant and damping of the loop, tuned in simulated time
// (+-100 ppm, 1-2 ms estimate noise): see clock/drift.py for the trade-off.
export const LOOP_TIME_CONSTANT_S = 30.0;
export const LOOP_DAMPING = 1.5;
// PI on the error e outside the deadband: rate - 1 = I - KP e, dI/dt = -KI e;
// closed loop s^2 + KP s + KI = s^2 + 2 zeta w s + w^2 with w = 1 / tau.
export const PROPORTIONAL_GAIN_PER_S = 2.0 * LOOP_DAMPING / LOOP_TIME_CONSTANT_S;
export const INTEGRAL_GAIN_PER_S2 = 1.0 / (LOOP_TIME_CONSTANT_S * LOOP_TIME_CONSTANT_S);
// A rate change smaller than this is not sent: 1 ppm moves the position by
// 1 µs a second, far below anything measurable.
export const MIN_RATE_STEP = 1e-6;
// Rate changes and re-aligns take effect this long after the context's
// current time: a render quantum is ~3 ms and a busy phone's main thread can
// stall tens of ms (as schedule.js's LATE_START_MARGIN_S).
export const APPLY_LEAD_S = 0.1;

function clamp(value, low, high) {
  return value < low ? low : value > high ? high : value;
}

function finite(name, value) {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new RangeError(`${name}: expected a finite number of seconds, found ${value}`);
  }
}

/**
 * Rate and re-align decisions for one playing source. Time: audio-clock seconds.
 *
 * measure() returns {action, rate, atContextTimeS, positionS, errorS}:
 * - 'keep': nothing to do;
 * - 'rate': source.playbackRate.setValueAtTime(rate, atContextTimeS);
 * - 'realign': stop the source, start a new one with playbackRate `rate` at
 *   audio time atContextTimeS from track position positionS.
 * errorS is the filtered error (played - target, s) behind the decision.
 */
export class DriftController {
  constructor() {
    this.segments = []; // {contextS, positionS, rate}: from contextS on, position = positionS + (c - contextS) * rate
    this.errorsS = [];
    this.lastContextS = -Infinity;
    this.rateEstimate = 0; // integral term: playbackRate - 1 that holds the target
    this.errorS = null; // latest (filtered) error, s, for display
    this.realigns = 0;
  }

  /** The playbackRate most recently decided (1 before any source). */
  get rate() {
    return this.segments.length > 0 ? this.segments[this.segments.length - 1].rate : 1.0;
  }

  /** (rate - 1) in ppm: positive plays faster. */
  get ratePpm() {
    return (this.rate - 1.0) * 1e6;
  }

  /** The integral term in ppm: the rate that holds the target once locked. */
  get rateEstimatePpm() {
    return this.rateEstimate * 1e6;
  }

  /** The display's view: {errorMs (null until measured), ratePpm, rateEstimatePpm, realigns}. */
  status() {
    return {
      errorMs: this.errorS === null ? null : this.errorS * 1000,
      ratePpm: this.ratePpm,
      rateEstimatePpm: this.rateEstimatePpm,
      realigns: this.realigns,
    };
  }

  /**
   * A source was started: positionS renders at audio time contextWhenS.
   * Forgets the measurements (they belong to the old source) and keeps the
   * rate estimate (the audio clock did not change).
   */
  start(contextWhenS, positionS, rate = 1.0) {
    finite('contextWhenS', contextWhenS);
    finite('positionS', positionS);
    finite('rate', rate);
    this.segments = [{ contextS: contextWhenS, positionS, rate }];
    this.errorsS = [];
    this.lastContextS = -Infinity;
  }

  /** The track position (s) that renders at audio time contextS, from the rates decided. */
  positionAt(contextS) {
    const segments = this.segments;
    if (segments.length === 0) throw new RangeError('positionAt: no source started');
    let i = segments.length - 1;
    while (i > 0 && segments[i].contextS > contextS) i -= 1;
    const segment = segments[i];
    return segment.positionS + (contextS - segment.contextS) * segment.rate;
  }

  /**
   * One measurement: audio time audibleContextTimeS is heard when
   * targetPositionS should be. contextNowS (optional) is the context's
   * currentTime (what renders now, later than what is heard by the output
   * latency); decisions take effect APPLY_LEAD_S after it, or after the
   * audible time when it is missing. A measurement from before the source's
   * start or not later than the previous one is ignored ('keep'). Throws
   * RangeError for non-finite input or when no source was started.
   */
  measure({ audibleContextTimeS, targetPositionS, contextNowS = null }) {
    const c = audibleContextTimeS;
    finite('audibleContextTimeS', c);
    finite('targetPositionS', targetPositionS);
    if (contextNowS !== null) finite('contextNowS', contextNowS);
    if (this.segments.length === 0) throw new RangeError('measure: no source started');
    if (c < this.segments[0].contextS || c <= this.lastContextS) return this.keep();
    const stepS = this.errorsS.length > 0 ? c - this.lastContextS : 0.0;
    this.lastContextS = c;
    const playedS = this.positionAt(c);
    const errorS = playedS - targetPositionS;
    const errors = this.errorsS;
    errors.push(errorS);
    if (errors.length > FILTER_LENGTH) errors.shift();
    if (errors.length < FILTER_LENGTH) {
      this.errorS = errorS;
      return this.keep();
    }
    const filteredS = [...errors].sort((a, b) => a - b)[Math.floor(FILTER_LENGTH / 2)];
    this.errorS = filteredS;
    let atS = (contextNowS === null || contextNowS < c ? c : contextNowS) + APPLY_LEAD_S;
    const last = this.segments[this.segments.length - 1];
    if (atS < last.contextS) atS = last.contextS;

    if (Math.abs(filteredS) > REALIGN_THRESHOLD_S) {
      const rate = 1.0 + this.rateEstimate;
      // The target at c, filtered, carried forward at the estimated rate.
      let positionS = (playedS - filteredS) + (atS - c) * rate;
      if (positionS < 0.0) { // the target is before the track: start it later, from 0
        atS = atS - positionS / rate;
        positionS = 0.0;
      }
      this.start(atS, positionS, rate);
      this.lastContextS = c;
      this.realigns += 1;
      this.errorS = null; // unknown until the new source is measured
      return { action: 'realign', rate, atContextTimeS: atS, positionS, errorS: filteredS };
    }

    const outsideS = filteredS - clamp(filteredS, -DEADBAND_S, DEADBAND_S);
    const unclamped = this.rateEstimate - PROPORTIONAL_GAIN_PER_S * outsideS;
    const deviation = clamp(unclamped, -MAX_RATE_DEVIATION, MAX_RATE_DEVIATION);
    // Anti-windup: the integral does not push further into a saturated rate.
    const integralStep = INTEGRAL_GAIN_PER_S2 * outsideS * stepS;
    if (unclamped === deviation || (unclamped > deviation) === (integralStep > 0.0)) {
      this.rateEstimate = clamp(this.rateEstimate - integralStep, -MAX_RATE_DEVIATION, MAX_RATE_DEVIATION);
    }
    const rate = 1.0 + deviation;
    if (Math.abs(rate - last.rate) < MIN_RATE_STEP) return this.keep();
    const positionS = this.positionAt(atS);
    const segment = { contextS: atS, positionS, rate };
    if (atS === last.contextS) {
      this.segments[this.segments.length - 1] = segment;
    } else {
      // Segments that start before this measurement are no longer needed
      // (measurements only move forward): keep the last of them.
      while (this.segments.length > 1 && this.segments[1].contextS <= c) this.segments.shift();
      this.segments.push(segment);
    }
    return { action: 'rate', rate, atContextTimeS: atS, positionS, errorS: filteredS };
  }

  keep() {
    return { action: 'keep', rate: this.rate, atContextTimeS: 0.0, positionS: 0.0, errorS: this.errorS ?? 0.0 };
  }
}
