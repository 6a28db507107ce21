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

/**
 * performance.now()'s tick (ms): the smallest of STEPS steps seen while
 * spinning (Chrome 0.1, Safari and Firefox 1; FIELD-NOTES). Blocks the caller
 * for up to `budgetMs`; 0 if fewer than two steps were seen. The smallest,
 * because a step during which the thread was descheduled is long (on the
 * loaded test machine single steps of 13 and 21 ms were seen).
 */
export function perfResolutionMs(budgetMs = 20) {
  const STEPS = 6;
  const startMs = performance.now();
  let last = startMs;
  let steps = 0;
  let smallest = Infinity;
  while (steps < STEPS) {
    const now = performance.now();
    if (now !== last) {
      smallest = Math.min(smallest, now - last);
      last = now;
      steps += 1;
    }
    if (now - startMs > budgetMs) break;
  }
  return steps >= 2 ? smallest : 0;
}
