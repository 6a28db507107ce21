/**
 * When the show's cues fire (PROTOCOL.md, the `cue` record): pure timing, no DOM.
 *
 * A cue at track position `at_us` is due at server time `start_us + at_us`,
 * which the clock estimate turns into device time. The glue calls
 * `CueTimer.update(schedule, clock, nowUs)` whenever something changes and
 * whenever the wait it was given runs out; `update` says which cues to fire
 * now and how long to wait before asking again. The wait aims a little before
 * the next cue (timers fire late, never early) and a short re-check then lands
 * on it: in a browser a cue fires within a few ms of its time.
 *
 * Clock domains, by suffix: *Us device time in µs (the `nowUs` passed in),
 * start_us / at_us server time and track position in µs, *Ms a duration in ms.
 */

// Fire a cue this close before its time rather than wait for a timer that
// may come a few ms late: well inside the 20 ms promise (issue 4, item 7).
export const FIRE_EARLY_US = 1000;
// Wake this long before a cue, then re-check with a short timer: setTimeout
// is late by 1-4 ms on an idle page and by 20-30 ms on a loaded phone or
// machine (measured in headless Chromium on 2 busy cores), so aiming at the
// cue itself would miss; the short re-check is rarely late by as much.
export const RECHECK_LEAD_MS = 25;
// Never wait longer than this, so a new clock estimate moves the next cue's time.
export const MAX_WAIT_MS = 1000;
// A cue found more than this late (the page was asleep, the screen off) is
// passed over silently: flashing and buzzing a stale cue would mislead.
export const STALE_US = 2_000_000;

const ACTIVE_STATES = new Set(['scheduled', 'playing']);

/** Device time (µs, float) at which `cue` is due, through `clock` (sync.js ClockEstimate). */
export function cueDueUs(cue, schedule, clock) {
  return clock.serverToDevice(schedule.start_us + cue.at_us);
}

/** Decides which cues fire when. Holds only which cues are done for the current start. */
export class CueTimer {
  /** `cues`: the `show` message's cues (sorted by at_us), or nothing yet. */
  constructor(cues = []) {
    this.setCues(cues);
  }

  /** New cues (a new `show`): forget what fired. */
  setCues(cues) {
    this.cues = Array.from(cues).sort((a, b) => a.at_us - b.at_us);
    this.reset();
  }

  reset() {
    this.armedStartUs = null;
    this.done = new Set();
    this.current = -1;
  }

  /**
   * What to do at device time `nowUs`, given the latest schedule and clock estimate (either may be null).
   *
   * Returns {fire: [{index, cue, dueUs}] to fire now in order, current: index of the
   * cue whose text shows now (-1: none), next: {index, dueUs} or null, waitMs: call
   * again after this many ms, or null when no cue is pending}.
   *
   * The first call for a start (a new `start_us`) arms it: cues already due
   * then are passed over (a late joiner or a reload does not replay them) but the
   * latest of them becomes `current`. An idle schedule (abort) clears everything;
   * a new start fires the cues again.
   */
  update(schedule, clock, nowUs) {
    if (!schedule || schedule.state === 'idle') this.reset();
    if (!clock || !schedule || schedule.start_us == null || !ACTIVE_STATES.has(schedule.state) || this.cues.length === 0) {
      return { fire: [], current: this.current, next: null, waitMs: null };
    }
    const dues = this.cues.map((cue) => cueDueUs(cue, schedule, clock));
    if (this.armedStartUs !== schedule.start_us) {
      this.reset();
      this.armedStartUs = schedule.start_us;
      dues.forEach((dueUs, index) => {
        if (dueUs < nowUs) this.pass(index);
      });
    }
    const fire = [];
    dues.forEach((dueUs, index) => {
      if (this.done.has(index) || dueUs > nowUs + FIRE_EARLY_US) return;
      if (dueUs < nowUs - STALE_US) this.pass(index);
      else {
        this.pass(index);
        fire.push({ index, cue: this.cues[index], dueUs });
      }
    });
    const nextIndex = dues.findIndex((_, index) => !this.done.has(index));
    if (nextIndex < 0) return { fire, current: this.current, next: null, waitMs: null };
    const dueUs = dues[nextIndex];
    return { fire, current: this.current, next: { index: nextIndex, dueUs }, waitMs: waitBefore(dueUs, nowUs) };
  }

  pass(index) {
    this.done.add(index);
    this.current = Math.max(this.current, index);
  }
}

/** How long (ms) to wait before checking again for a cue due at device time `dueUs`. */
export function waitBefore(dueUs, nowUs) {
  const remainingMs = (dueUs - nowUs) / 1000;
  if (remainingMs > 2 * RECHECK_LEAD_MS) return Math.min(MAX_WAIT_MS, remainingMs - RECHECK_LEAD_MS);
  return Math.max(0, remainingMs - FIRE_EARLY_US / 1000);
}

/** '#000' or '#fff', whichever reads better on background `colour` ('#rrggbb'): WCAG relative luminance. */
export function textColourOn(colour) {
  const channel = (offset) => {
    const c = parseInt(colour.slice(offset, offset + 2), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  const luminance = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
  // Contrast with black is (L + 0.05) / 0.05, with white 1.05 / (L + 0.05): equal at L = 0.179.
  return luminance > 0.179 ? '#000' : '#fff';
}
