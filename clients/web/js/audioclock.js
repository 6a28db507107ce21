/**
 * The audio clock against performance time: at which performance time
 * (ms) each AudioContext time (s) is heard, from readings the glue takes.
 *
 * Pure: no DOM, no AudioContext, no performance; readings come in as
 * arguments, so Node's test runner drives it with simulated engines.
 *
 * Two series of readings, each fitted on its lower envelope:
 * - render readings (currentTime, then performance.now() read right after):
 *   currentTime moves in steps when the audio thread renders a buffer, so a
 *   reading taken right after a step is the tightest; every reading is an
 *   upper bound on the render offset D in `rendered at c * 1000 + D`. With a
 *   coarse performance.now() (1 ms in Safari and Firefox) a reading is up to
 *   one tick early, so half a tick is added back.
 * - output timestamps (getOutputTimestamp()): `contextTime` heard at
 *   `performanceTime`. Believed only when plausible against the render
 *   series: the latency they imply (heard - rendered) lies in
 *   [-TOLERANCE, MAX_PLAUSIBLE_LATENCY] and stays put as both clocks run
 *   (slope ~1). WebKit returns performanceTime ~ now + contextTime * 1000, whose
 *   implied latency grows a second per second; Firefox returns (currentTime,
 *   now), a latency of ~0 with the render series' jitter (the envelope takes it out).
 *
 * The mapping: heard(c) = c * 1000 + D(c) + latency, with latency the output
 * timestamps' when plausible, else the reported baseLatency + outputLatency
 * (outputLatency 0 or missing is unknown, not zero: Safari < 18.4 and WebKitGTK
 * report 0), else 0 with latencyKnown false.
 */

// Readings older than this (audio-clock seconds) are forgotten: the fit
// follows a slowly changing rate without a drift model of its own.
export const WINDOW_S = 30;
// The mapping's point comes from the readings of this much recent audio
// time: an audio clock that stalls (Firefox on a busy machine lost 660 ms in
// its first 4 s of running: tests/browser/engines) is followed within it.
export const RECENT_S = 2;
// ... and from only the last SHORT_S when their envelope lies more than
// STALL_MS above the RECENT_S one: the clock stalled (it only ever falls
// behind), and the older readings would map the start early for up to
// RECENT_S. 20 readings at random phase against a 10 ms callback miss the
// envelope by 3 ms with odds of 0.7^20 (< 0.1 %).
export const SHORT_S = 0.5;
export const STALL_MS = 3;
// The slope fitted over WINDOW_S is used only when the bucket minima lie this
// close to its line; otherwise the clock is not steady and the recent
// envelope alone (slope 0 over RECENT_S) maps it.
export const MAX_SLOPE_RESIDUAL_MS = 1.5;
// Lower envelope per bucket of this many audio-clock seconds, then a line
// through the bucket minima (its slope is the audio clock's rate against
// performance time: tens to hundreds of ppm on phones, FIELD-NOTES).
export const BUCKET_S = 2;
// Latencies above this are not believed (as schedule.js's MAX_PLAUSIBLE_LATENCY_S).
export const MAX_PLAUSIBLE_LATENCY_MS = 500;
// An implied latency may be this far below 0 (timer tick + render quantum
// of jitter in the two envelopes) and still be plausible.
export const LATENCY_TOLERANCE_MS = 4;
// Output timestamps are judged over at least this much audio time: WebKit's
// wrong ones drift by 1 ms per ms, so 0.5 s of them is unmistakable.
export const MIN_STAMP_SPAN_S = 0.5;
// ... and their implied latency may move by at most this across the window
// (a good stamp's moves by the envelopes' noise, < 1 ms; 200 ppm over 30 s is 6 ms).
export const MAX_LATENCY_WANDER_MS = 8;
// Renders fewer than this many readings are not fitted yet.
export const MIN_READINGS = 8;
// Output timestamps are judged once RECENT_S holds this many (player.js reads
// one every 200 ms: 10 in RECENT_S; a good stamp has no render-step noise).
export const MIN_STAMPS = 6;
// A stamp is derived from currentTime and outputLatency (Firefox: contextTime =
// currentTime - outputLatency at performanceTime = now - outputLatency, nothing
// measured) when both agree this closely: float rounding of (c - L) + L, and
// performance.now()'s tick plus the time between the reads (ms).
export const DERIVED_CONTEXT_TOLERANCE_S = 1e-6;
export const DERIVED_PERF_TOLERANCE_MS = 1;
// The slope fitted through bucket minima is clamped to this (ppm): beyond it
// a clock is broken, not skewed (AirPlay's 2,000 ppm is the worst on record).
export const MAX_RATE_PPM = 2000;

function finite(value) {
  return typeof value === 'number' && Number.isFinite(value);
}

/**
 * Whether an output timestamp only restates what the page read just before:
 * `currentTimeS` and `perfNowMs` (performance.now() right after it) shifted
 * back by the reported `outputLatencyS` (missing counts as 0). Such a stamp
 * carries no measurement (its implied latency is ~0 whatever the real one),
 * and in Firefox every getOutputTimestamp() costs a synchronous call to the
 * audio server (player.js): the glue stops reading them.
 */
export function derivedStamp(stamp, currentTimeS, perfNowMs, outputLatencyS, resolutionMs = 0) {
  if (!finite(stamp?.contextTime) || !finite(stamp?.performanceTime) || !finite(currentTimeS) || !finite(perfNowMs)) return false;
  const latencyS = finite(outputLatencyS) ? outputLatencyS : 0;
  if (Math.abs(stamp.contextTime + latencyS - currentTimeS) > DERIVED_CONTEXT_TOLERANCE_S) return false;
  const gapMs = perfNowMs - (stamp.performanceTime + latencyS * 1000);
  return gapMs >= -(DERIVED_PERF_TOLERANCE_MS + resolutionMs) && gapMs <= DERIVED_PERF_TOLERANCE_MS + resolutionMs;
}

/** Reported latency (s) if known: a finite value in (0, 0.5]; 0, negative, missing are unknown. */
export function knownLatencyS(value) {
  return finite(value) && value > 0 && value * 1000 <= MAX_PLAUSIBLE_LATENCY_MS ? value : null;
}

/**
 * A line offset(c) = a + b * (c - c0) through the lower envelope of
 * (contextTimeS, offsetMs) points: the minimum per BUCKET_S, then least
 * squares through the minima, its slope clamped to +-MAX_RATE_PPM. Returns
 * {at(c), slopePpm, residualMs, spanS} or null.
 */
export function envelopeFit(points) {
  if (points.length === 0) return null;
  const buckets = new Map(); // bucket -> {c, offsetMs, count}: its lowest point
  for (const point of points) {
    const key = Math.floor(point.c / BUCKET_S);
    const held = buckets.get(key);
    if (held === undefined) buckets.set(key, { ...point, count: 1 });
    else {
      held.count += 1;
      if (point.offsetMs < held.offsetMs) Object.assign(held, point);
    }
  }
  const all = [...buckets.values()];
  // A bucket of few readings (the newest, still filling) has a loose minimum:
  // it bounds the line from above but does not tilt it.
  const full = all.filter((p) => p.count >= MIN_READINGS);
  const c0 = points[points.length - 1].c;
  let slope = 0; // ms per audio-clock second, beyond the 1000 of the nominal rate
  const n = full.length;
  if (n >= 3) {
    const meanC = full.reduce((sum, p) => sum + p.c, 0) / n;
    const meanO = full.reduce((sum, p) => sum + p.offsetMs, 0) / n;
    let sxx = 0;
    let sxy = 0;
    for (const p of full) {
      sxx += (p.c - meanC) ** 2;
      sxy += (p.c - meanC) * (p.offsetMs - meanO);
    }
    if (sxx > 0) slope = Math.max(-MAX_RATE_PPM * 1e-3, Math.min(MAX_RATE_PPM * 1e-3, sxy / sxx));
  }
  // Through the lowest minimum relative to the slope (an envelope, not a mean).
  let intercept = Infinity;
  for (const p of all) intercept = Math.min(intercept, p.offsetMs - slope * (p.c - c0));
  let residualMs = 0;
  for (const p of full) residualMs = Math.max(residualMs, p.offsetMs - slope * (p.c - c0) - intercept);
  return {
    at: (c) => intercept + slope * (c - c0),
    slopePpm: slope * 1e3,
    residualMs,
    spanS: points[points.length - 1].c - points[0].c,
  };
}

/**
 * Readings in, a mapping out. addRender(currentTimeS, perfAfterMs) and
 * addOutputTimestamp({contextTime, performanceTime}) as often as is cheap
 * (every few tens of ms); setResolution(ms) once measured; mapping(...) when
 * a time is needed.
 */
export class AudioClock {
  constructor() {
    this.render = []; // {c, offsetMs}: perf after - c * 1000
    this.stamps = []; // {c, offsetMs}: performanceTime - contextTime * 1000
    this.resolutionMs = 0;
  }

  /** performance.now()'s tick (ms), as the glue measured it; 0 if unknown. */
  setResolution(resolutionMs) {
    this.resolutionMs = finite(resolutionMs) && resolutionMs > 0 && resolutionMs < 100 ? resolutionMs : 0;
  }

  /** Forget the output timestamps (the glue found them derived: derivedStamp). */
  dropStamps() {
    this.stamps = [];
  }

  /** Forget everything (the context was suspended: its clock stood still while performance time ran). */
  reset() {
    this.render = [];
    this.stamps = [];
  }

  /** A reading of currentTime (s) and performance.now() (ms) read right after it. Ignores non-finite and c <= 0. */
  addRender(currentTimeS, perfAfterMs) {
    this.push(this.render, currentTimeS, perfAfterMs);
  }

  /** A getOutputTimestamp() result; ignored if missing, non-finite or contextTime <= 0 (device not started). */
  addOutputTimestamp(stamp) {
    this.push(this.stamps, stamp?.contextTime, stamp?.performanceTime);
  }

  push(series, c, perfMs) {
    if (!finite(c) || !finite(perfMs) || c <= 0) return;
    const last = series[series.length - 1];
    if (last !== undefined && c < last.c) series.length = 0; // a new context or a reset clock
    series.push({ c, offsetMs: perfMs - c * 1000 });
    const oldest = c - WINDOW_S;
    while (series.length > 0 && series[0].c < oldest) series.shift();
  }

  /**
   * The output timestamps' verdict: {plausible, latencyMs, reason}. latencyMs
   * is the latency they imply (heard - rendered) at the latest stamp.
   */
  judgeStamps(renderAt) {
    const stamps = this.stamps.filter((stamp) => stamp.c >= this.stamps[this.stamps.length - 1].c - RECENT_S);
    if (stamps.length < MIN_STAMPS) return { plausible: false, latencyMs: null, reason: 'too few output timestamps' };
    const first = stamps[0];
    const last = stamps[stamps.length - 1];
    if (last.c - first.c < MIN_STAMP_SPAN_S) return { plausible: false, latencyMs: null, reason: 'output timestamps span too little audio time' };
    // The latency each stamp implies; its lower envelope over the older and
    // the newer half of the window must agree (a wrong stamp's runs away).
    const middleS = (first.c + last.c) / 2;
    let olderMs = Infinity;
    let newerMs = Infinity;
    for (const stamp of stamps) {
      const impliedMs = stamp.offsetMs - renderAt(stamp.c);
      if (stamp.c < middleS) olderMs = Math.min(olderMs, impliedMs);
      else newerMs = Math.min(newerMs, impliedMs);
    }
    const latencyMs = newerMs;
    const wanderMs = Math.abs(newerMs - olderMs);
    if (latencyMs < -LATENCY_TOLERANCE_MS - this.resolutionMs || latencyMs > MAX_PLAUSIBLE_LATENCY_MS) {
      return { plausible: false, latencyMs, reason: `implied latency ${latencyMs.toFixed(1)} ms` };
    }
    if (wanderMs > MAX_LATENCY_WANDER_MS) return { plausible: false, latencyMs, reason: `implied latency wanders ${wanderMs.toFixed(1)} ms` };
    return { plausible: true, latencyMs: Math.max(0, latencyMs), reason: 'plausible' };
  }

  /**
   * The mapping to start and measure with, or null before MIN_READINGS render readings:
   * {contextTime, performanceTime, includesLatency: true, source, latencyS,
   * latencyKnown, residualMs, renderReadings, stalled, steady, reason}: contextTime (s) is heard at
   * performanceTime (ms), at the latest reading, the latency already in it
   * (schedule.js's outputTimestamp). `baseLatency`/`outputLatency` are the
   * context's reports (s), used only when the output timestamps are not plausible.
   */
  mapping({ baseLatency, outputLatency } = {}) {
    if (this.render.length < MIN_READINGS) return null;
    const renderFit = envelopeFit(this.render);
    const c = this.render[this.render.length - 1].c;
    const slopeMsPerS = renderFit.residualMs <= MAX_SLOPE_RESIDUAL_MS ? renderFit.slopePpm * 1e-3 : 0;
    let recent = Infinity; // the lower envelopes, at c, of the last RECENT_S and SHORT_S
    let short = Infinity;
    for (const point of this.render) {
      const offsetMs = point.offsetMs - slopeMsPerS * (point.c - c);
      if (point.c >= c - RECENT_S) recent = Math.min(recent, offsetMs);
      if (point.c >= c - SHORT_S) short = Math.min(short, offsetMs);
    }
    const stalled = short - recent > STALL_MS;
    // Steady: RECENT_S of readings, and each SHORT_S slice of them has its
    // envelope within STALL_MS of the RECENT_S one (no stall anywhere in it).
    const slices = new Array(Math.round(RECENT_S / SHORT_S)).fill(Infinity);
    for (const point of this.render) {
      const slice = Math.floor((c - point.c) / SHORT_S);
      if (slice < slices.length) slices[slice] = Math.min(slices[slice], point.offsetMs - slopeMsPerS * (point.c - c));
    }
    const steady = c - this.render[0].c >= RECENT_S && slices.every((envelope) => envelope - recent <= STALL_MS);
    const intercept = stalled ? short : recent;
    const renderAt = (contextS) => intercept + slopeMsPerS * (contextS - c);
    const renderedMs = c * 1000 + intercept + this.resolutionMs / 2;
    const verdict = this.judgeStamps(renderAt);
    let latencyS;
    let latencyKnown;
    let source;
    if (verdict.plausible) {
      latencyS = verdict.latencyMs / 1000;
      latencyKnown = true;
      source = 'outputTimestamp';
    } else {
      const base = knownLatencyS(baseLatency);
      const output = knownLatencyS(outputLatency);
      latencyS = Math.min((base ?? 0) + (output ?? 0), MAX_PLAUSIBLE_LATENCY_MS / 1000);
      latencyKnown = output !== null;
      source = 'render';
    }
    return {
      contextTime: c,
      performanceTime: renderedMs + latencyS * 1000,
      includesLatency: true,
      source,
      latencyS,
      latencyKnown,
      residualMs: renderFit.residualMs,
      ratePpm: slopeMsPerS * 1e3,
      renderReadings: this.render.length,
      stalled,
      steady,
      reason: verdict.reason,
    };
  }
}
