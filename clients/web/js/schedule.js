/**
 * When and where to start the track: pure start computation (PROTOCOL.md section 5).
 *
 * Pure: every time comes in as an argument. Clock domains, by suffix:
 *   *Us      device time, µs (`(performance.timeOrigin + performance.now()) * 1000`)
 *   start_us server time, µs (from the `schedule` message)
 *   *Ms      performance time, ms (`performance.now()` and `performance.timeOrigin`)
 *   context* the AudioContext's clock, s
 * Track position p (s) must be audible at server time start_us + p * 1e6.
 */

import { ClockEstimate } from './sync.js';

// A late joiner starts this far ahead of now: enough for the audio thread to
// pick up the scheduled start (a render quantum is ~3 ms, a busy phone's main
// thread can stall tens of ms), small enough not to be noticed.
export const LATE_START_MARGIN_S = 0.1;
// Output latencies above this are not believed: wired and built-in outputs
// report 5-50 ms, Bluetooth up to ~300 ms; larger values come from buggy
// implementations, and subtracting them would start the track audibly early.
export const MAX_PLAUSIBLE_LATENCY_S = 0.5;
// An output timestamp whose performanceTime is further than this from now is
// stale or in another time domain (browsers return 0 before the audio device
// has started), so the context's currentTime is used instead.
export const MAX_OUTPUT_TIMESTAMP_AGE_MS = 1000;

/** The schedule to act on: `incoming` unless `current` has a higher epoch (PROTOCOL.md section 2). */
export function latestSchedule(current, incoming) {
  if (incoming == null) return current ?? null;
  if (current == null || incoming.epoch >= current.epoch) return incoming;
  return current;
}

/** One latency value (s) if it is plausible (finite, in [0, MAX_PLAUSIBLE_LATENCY_S]), else 0. */
function plausibleLatencyS(value) {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 && value <= MAX_PLAUSIBLE_LATENCY_S ? value : 0;
}

/** The output latency (s) to subtract: baseLatency + outputLatency, each ignored when unknown or implausible. */
export function outputLatencyS(baseLatency, outputLatency) {
  return plausibleLatencyS(plausibleLatencyS(baseLatency) + plausibleLatencyS(outputLatency));
}

/**
 * The audio/performance clock pair to map with: `reported` (the result of
 * getOutputTimestamp(), or undefined when the browser lacks it) if plausible,
 * else {contextTime: currentTimeS, performanceTime: perfNowMs} read now.
 *
 * `includesLatency` says whether the pair maps audio time to the instant it is
 * *heard*: getOutputTimestamp() does by definition (its contextTime is the frame
 * the output device is playing at performanceTime, so the output latency is
 * already in it), the currentTime fallback does not (currentTime is what the
 * graph renders now, heard baseLatency + outputLatency later).
 */
export function pickOutputTimestamp(reported, currentTimeS, perfNowMs) {
  const contextTime = reported?.contextTime;
  const performanceTime = reported?.performanceTime;
  const plausible =
    Number.isFinite(contextTime) && contextTime > 0 &&
    Number.isFinite(performanceTime) && performanceTime > 0 &&
    Math.abs(perfNowMs - performanceTime) <= MAX_OUTPUT_TIMESTAMP_AGE_MS;
  if (plausible) return { contextTime, performanceTime, includesLatency: true };
  return { contextTime: currentTimeS, performanceTime: perfNowMs, includesLatency: false };
}

/** The AudioContext time (s) audible at device time `deviceUs`, through an output timestamp. */
export function contextTimeAt(deviceUs, outputTimestamp, timeOriginMs) {
  const stampDeviceUs = (timeOriginMs + outputTimestamp.performanceTime) * 1000;
  return outputTimestamp.contextTime + (deviceUs - stampDeviceUs) / 1e6;
}

/** The device time (µs, float) at which AudioContext time `contextTimeS` is audible: inverse of contextTimeAt. */
export function deviceTimeAt(contextTimeS, outputTimestamp, timeOriginMs) {
  const stampDeviceUs = (timeOriginMs + outputTimestamp.performanceTime) * 1000;
  return stampDeviceUs + (contextTimeS - outputTimestamp.contextTime) * 1e6;
}

/**
 * Where and when to start the track, or null when there is nothing to play.
 *
 * Inputs: `schedule` {epoch, state, start_us}; `estimate` (the `estimate`
 * message or a ClockEstimate); `deviceNowUs`; `outputTimestamp`
 * {contextTime (s), performanceTime (ms)} from pickOutputTimestamp;
 * `timeOriginMs` (performance.timeOrigin); `latencyS` (outputLatencyS; an
 * implausible value counts as 0; not applied when the output timestamp
 * already includes the latency, see pickOutputTimestamp); optional
 * `manualLatencyS` (the participant's own adjustment, e.g. 0.2 for Bluetooth
 * headphones the browser does not report: always added, may be negative);
 * optional `currentTimeS` (the context's
 * currentTime: nothing is scheduled before it); optional `durationS` (the
 * track's length: null once the show has passed its end); `marginS`.
 *
 * Returns {epoch, startUs, contextWhen, offsetS, audibleContextTime, deviceStartUs}:
 * call source.start(contextWhen, offsetS); position offsetS is audible at
 * audio time audibleContextTime = contextWhen + latency; deviceStartUs is the
 * device time (integer µs) at which track position 0 sounds (in the past for
 * a late joiner), startUs the schedule's start_us (server time).
 * A start that is already past (or closer than marginS) starts marginS from
 * now at the position the show has reached by then.
 */
export function computeStart({
  schedule, estimate, deviceNowUs, outputTimestamp, timeOriginMs, latencyS,
  manualLatencyS = 0, currentTimeS = -Infinity, durationS = Infinity, marginS = LATE_START_MARGIN_S,
}) {
  if (schedule == null || estimate == null) return null;
  if (schedule.state !== 'scheduled' && schedule.state !== 'playing') return null;
  if (schedule.start_us == null) return null;
  const clock = estimate instanceof ClockEstimate ? estimate : new ClockEstimate(estimate);
  const manual = Number.isFinite(manualLatencyS) ? manualLatencyS : 0;
  const latency = (outputTimestamp.includesLatency ? 0 : plausibleLatencyS(latencyS)) + manual;

  const deviceStartUs = clock.serverToDevice(schedule.start_us);
  const startContextTime = contextTimeAt(deviceStartUs, outputTimestamp, timeOriginMs);
  const earliestWhen = Math.max(contextTimeAt(deviceNowUs, outputTimestamp, timeOriginMs), currentTimeS) + marginS;

  let contextWhen = startContextTime - latency;
  let offsetS = 0;
  if (contextWhen < earliestWhen) {
    // Late: start soon, at the position that will then be audible, reckoned in
    // server time so the clock's rate is applied over the whole time since the start.
    contextWhen = earliestWhen;
    const audibleDeviceUs = deviceTimeAt(contextWhen + latency, outputTimestamp, timeOriginMs);
    offsetS = Math.max(0, (clock.deviceToServer(audibleDeviceUs) - schedule.start_us) / 1e6);
  }
  if (offsetS >= durationS) return null;
  return {
    epoch: schedule.epoch,
    startUs: schedule.start_us,
    contextWhen,
    offsetS,
    audibleContextTime: contextWhen + latency,
    deviceStartUs: Math.round(deviceStartUs),
  };
}
