/**
 * What the participant page shows: its state and texts, from plain facts.
 *
 * Pure: no DOM, no clock; the glue passes the facts in. The state names are
 * also the test hook's `window.unisono.state`.
 */

// A device counts as synced when its bound is at most this, as the server's
// overview counts `synced` (PROTOCOL.md section 3).
export const SYNCED_BOUND_US = 10_000;

/**
 * One of 'connecting', 'joined', 'loaded', 'unlocked', 'scheduled', 'playing',
 * 'idle', 'ended', 'error'.
 *
 * facts: {error (text or null), joined (a welcome arrived once), loaded,
 * unlocked, schedule (latest or null), everStarted (a scheduled/playing
 * schedule was seen), start (computeStart's result for the running source,
 * or null), audioNowS (the context's currentTime, or null), trackEnded}.
 * The connection dropping later does not change the state: a scheduled start
 * plays without the network.
 */
export function participantState(facts) {
  const { error, joined, loaded, unlocked, schedule, everStarted, start, audioNowS, trackEnded } = facts;
  if (error) return 'error';
  if (!joined) return 'connecting';
  if (schedule?.state === 'ended' || trackEnded) return 'ended';
  if (start && audioNowS != null && audioNowS >= start.audibleContextTime) return 'playing';
  if (schedule?.state === 'scheduled' || schedule?.state === 'playing') return 'scheduled';
  if (schedule?.state === 'idle' && everStarted) return 'idle';
  if (unlocked) return 'unlocked';
  if (loaded) return 'loaded';
  return 'joined';
}

/** "synced ±3 ms" from the current error bound (µs), "syncing…" while unknown or too wide. */
export function syncText(boundUs) {
  if (boundUs == null || !Number.isFinite(boundUs)) return 'syncing…';
  const boundMs = boundUs / 1000;
  const shown = boundMs < 1 ? '<1' : String(Math.round(boundMs));
  return boundUs <= SYNCED_BOUND_US ? `synced ±${shown} ms` : `syncing… ±${shown} ms`;
}

/** A countdown: "0:05", "12:00", "1:02:03"; whole seconds rounded up, never negative. */
export function countdownText(seconds) {
  const total = Math.max(0, Math.ceil(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = String(total % 60).padStart(2, '0');
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, '0')}:${secs}` : `${minutes}:${secs}`;
}
