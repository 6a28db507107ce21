/**
 * Phone realities, decided from plain facts (FIELD-NOTES.md): when to resume
 * the AudioContext, when a resumed show must be re-aligned, when to hold the
 * screen's wake lock, and the participant's manual latency adjustment kept
 * per device. Pure: the glue (participant.js, player.js) passes the facts in
 * and does what these say.
 */

// localStorage key of the manual latency adjustment (ms).
export const LATENCY_KEY = 'unisono.latency_ms';
// The adjustment's range: Bluetooth adds 150-300 ms (FIELD-NOTES.md), some
// speakers more; a negative value undoes a reported latency that is too big.
export const MIN_MANUAL_LATENCY_MS = -500;
export const MAX_MANUAL_LATENCY_MS = 1000;

/** The AudioContext states after which audio stopped without the page asking: iOS says 'interrupted'. */
const STOPPED_STATES = new Set(['suspended', 'interrupted']);

/**
 * Whether to call context.resume() now: the participant unlocked audio once,
 * the context is suspended or interrupted (a call, a notification, a tab
 * switch), and the page is visible (a hidden page may not get audio back).
 */
export function shouldResume({ unlockedOnce, contextState, visible }) {
  return Boolean(unlockedOnce) && STOPPED_STATES.has(contextState) && Boolean(visible);
}

/**
 * Whether the show must be re-aligned on a context state change from `from`
 * to `to`: the audio clock stood still while suspended or interrupted, so the
 * sources scheduled on it now play late by as long as it stood.
 */
export function realignAfterStateChange(from, to) {
  return to === 'running' && STOPPED_STATES.has(from);
}

/** Whether the screen wake lock should be held: during the show (scheduled or playing), while the page is visible. */
export function wakeLockWanted({ state, visible }) {
  return Boolean(visible) && (state === 'scheduled' || state === 'playing');
}

/** A manual latency (ms) as a whole number within its range; anything unreadable is 0. */
export function clampManualLatencyMs(value) {
  const number = typeof value === 'string' ? Number(value.trim() === '' ? 0 : value) : value;
  if (typeof number !== 'number' || !Number.isFinite(number)) return 0;
  return Math.min(MAX_MANUAL_LATENCY_MS, Math.max(MIN_MANUAL_LATENCY_MS, Math.round(number))) + 0;
}

/** The manual latency (ms) stored for this device, 0 if none. */
export function loadManualLatencyMs(storage) {
  try {
    return clampManualLatencyMs(storage?.getItem(LATENCY_KEY) ?? 0);
  } catch {
    return 0;
  }
}

/** Store the manual latency (ms) for this device; returns the value kept (clamped). */
export function saveManualLatencyMs(storage, value) {
  const ms = clampManualLatencyMs(value);
  try {
    storage?.setItem(LATENCY_KEY, String(ms));
  } catch {
    // Private mode or a full quota: it holds for this page only.
  }
  return ms;
}
