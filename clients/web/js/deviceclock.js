/**
 * The page's clocks, read in one place (glue: touches `performance`).
 *
 * Device time is PROTOCOL.md's: integer µs of `performance.timeOrigin +
 * performance.now()`, monotonic; never Date.now(), which jumps.
 */

/** Device time now, integer µs. */
export function deviceNowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/** performance.now(), ms: the domain of AudioContext.getOutputTimestamp().performanceTime. */
export function perfNowMs() {
  return performance.now();
}

/** performance.timeOrigin, ms. */
export function timeOriginMs() {
  return performance.timeOrigin;
}
