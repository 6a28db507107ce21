// Tests of clients/web/js/cues.js: which cue fires when, on simulated clocks and late timers.
import test from 'node:test';
import assert from 'node:assert/strict';

import * as CUES_MODULE from '../../clients/web/js/cues.js';
import { CueTimer, cueDueUs, waitBefore, FIRE_EARLY_US, MAX_WAIT_MS, RECHECK_LEAD_MS, STALE_US } from '../../clients/web/js/cues.js';
import { ClockEstimate } from '../../clients/web/js/sync.js';

const START_US = 1_700_000_100_000_000; // server time of track position 0
const DEVICE_AT_US = 5_000_000_000; // a device clock far from the server's
// The device runs 1.5 s behind the server and 50 ppm slow.
const CLOCK = new ClockEstimate({ at_us: DEVICE_AT_US, offset_us: START_US - 10_000_000 - DEVICE_AT_US, rate_ppm: 50, bound_us: 500, bound_growth_ppm: 1 });
const CUES = [
  { at_us: 0, text: 'one', colour: '#ff0000', vibrate: [100] },
  { at_us: 2_500_000, text: 'two', colour: null, vibrate: null },
  { at_us: 2_500_000, text: 'two too', colour: null, vibrate: null },
  { at_us: 60_000_000, text: 'three', colour: '#00ff00', vibrate: null },
];
const SCHEDULED = { epoch: 1, state: 'scheduled', start_us: START_US };

/** A seeded PRNG (mulberry32), so the late timers are the same every run. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Drives a CueTimer as the page does: call update, "sleep" the wait it asks for plus a
 * random timer lateness, repeat. Returns [{index, firedUs, dueUs}] until `endUs`.
 */
function run(timer, schedule, clock, fromUs, endUs, latenessMs) {
  const fired = [];
  let nowUs = fromUs;
  while (nowUs < endUs) {
    const result = timer.update(schedule, clock, nowUs);
    for (const { index, dueUs } of result.fire) fired.push({ index, firedUs: nowUs, dueUs });
    if (result.waitMs === null) break;
    nowUs += (result.waitMs + latenessMs()) * 1000;
  }
  return fired;
}

test('a cue is due at start_us + at_us in server time, converted by the clock estimate', () => {
  const dueUs = cueDueUs(CUES[1], SCHEDULED, CLOCK);
  assert.ok(Math.abs(CLOCK.deviceToServer(dueUs) - (START_US + 2_500_000)) < 1e-3);
});

test('every cue fires once, in order, within 20 ms of its time despite timers up to 4 ms late', () => {
  const late = rng(1);
  const timer = new CueTimer(CUES);
  const fromUs = CLOCK.serverToDevice(START_US - 3_000_000);
  const fired = run(timer, SCHEDULED, CLOCK, fromUs, fromUs + 70_000_000, () => late() * 4);
  assert.deepEqual(fired.map((f) => f.index), [0, 1, 2, 3]);
  for (const { firedUs, dueUs } of fired) {
    assert.ok(firedUs >= dueUs - FIRE_EARLY_US, `fired ${(dueUs - firedUs) / 1000} ms early`);
    assert.ok(firedUs - dueUs <= 20_000, `fired ${(firedUs - dueUs) / 1000} ms late`);
    // With timers at most 4 ms late the re-check lands within 5 ms.
    assert.ok(Math.abs(firedUs - dueUs) <= 5_000, `fired ${(firedUs - dueUs) / 1000} ms off`);
  }
});

test('the wait never exceeds a second, so a new estimate is taken into account', () => {
  const timer = new CueTimer(CUES);
  const nowUs = CLOCK.serverToDevice(START_US + 3_000_000);
  const result = timer.update(SCHEDULED, CLOCK, nowUs);
  assert.equal(result.next.index, 3);
  assert.equal(result.waitMs, MAX_WAIT_MS);
});

test('waitBefore aims RECHECK_LEAD_MS before a far cue and right at a near one', () => {
  assert.equal(waitBefore(100_000, 0), 100 - RECHECK_LEAD_MS);
  assert.equal(waitBefore(6_000, 0), 6 - FIRE_EARLY_US / 1000);
  assert.equal(waitBefore(0, 10_000), 0);
  assert.equal(waitBefore(10_000_000, 0), MAX_WAIT_MS);
});

test('a changed clock estimate moves the cue: it fires on the new estimate', () => {
  const timer = new CueTimer([CUES[1]]);
  const beforeUs = CLOCK.serverToDevice(START_US);
  assert.deepEqual(timer.update(SCHEDULED, CLOCK, beforeUs).fire, []);
  // The new estimate says the device clock is 30 ms further ahead: the cue is due 30 ms later in device time.
  const moved = new ClockEstimate({ at_us: DEVICE_AT_US, offset_us: CLOCK.offsetUs - 30_000, rate_ppm: 50, bound_us: 500, bound_growth_ppm: 1 });
  const oldDueUs = cueDueUs(CUES[1], SCHEDULED, CLOCK);
  const newDueUs = cueDueUs(CUES[1], SCHEDULED, moved);
  assert.ok(Math.abs(newDueUs - oldDueUs - 30_000) < 5); // 30 ms / (1 + 50 ppm)
  assert.deepEqual(timer.update(SCHEDULED, moved, oldDueUs).fire, []);
  assert.deepEqual(timer.update(SCHEDULED, moved, newDueUs).fire.map((f) => f.index), [0]);
});

test('a late joiner does not replay past cues, but shows the latest one as current', () => {
  const timer = new CueTimer(CUES);
  const nowUs = CLOCK.serverToDevice(START_US + 10_000_000);
  const result = timer.update({ epoch: 2, state: 'playing', start_us: START_US }, CLOCK, nowUs);
  assert.deepEqual(result.fire, []);
  assert.equal(result.current, 2);
  assert.equal(result.next.index, 3);
});

test('cues found more than STALE_US late (a sleeping page) are passed over; recent ones still fire', () => {
  const timer = new CueTimer(CUES);
  timer.update(SCHEDULED, CLOCK, CLOCK.serverToDevice(START_US - 1_000_000));
  // The page wakes 3 s after cue 0 and 0.5 s after cues 1 and 2.
  const result = timer.update(SCHEDULED, CLOCK, CLOCK.serverToDevice(START_US + 3_000_000));
  assert.ok(3_000_000 > STALE_US);
  assert.deepEqual(result.fire.map((f) => f.index), [1, 2]);
  assert.equal(result.current, 2);
});

test('nothing fires without a clock, a schedule, or while idle or ended', () => {
  const timer = new CueTimer(CUES);
  const atCue = CLOCK.serverToDevice(START_US);
  assert.deepEqual(timer.update(null, CLOCK, atCue), { fire: [], current: -1, next: null, waitMs: null });
  assert.deepEqual(timer.update(SCHEDULED, null, atCue).fire, []);
  assert.deepEqual(timer.update({ epoch: 1, state: 'idle', start_us: null }, CLOCK, atCue).fire, []);
  assert.deepEqual(timer.update({ epoch: 3, state: 'ended', start_us: START_US }, CLOCK, atCue).fire, []);
});

test('an abort clears the cues; a new start fires them again from its own start_us', () => {
  const timer = new CueTimer([CUES[0]]);
  const atCue = CLOCK.serverToDevice(START_US);
  timer.update(SCHEDULED, CLOCK, atCue - 100_000);
  assert.equal(timer.update(SCHEDULED, CLOCK, atCue).fire.length, 1);
  assert.equal(timer.update(SCHEDULED, CLOCK, atCue + 10).fire.length, 0);
  assert.equal(timer.update({ epoch: 2, state: 'idle', start_us: null }, CLOCK, atCue + 20).current, -1);
  const restart = { epoch: 3, state: 'scheduled', start_us: START_US + 5_000_000 };
  const restartAt = CLOCK.serverToDevice(START_US + 5_000_000);
  assert.equal(timer.update(restart, CLOCK, restartAt - 500_000).fire.length, 0);
  assert.deepEqual(timer.update(restart, CLOCK, restartAt).fire.map((f) => f.index), [0]);
});

test('cues given out of order are sorted by at_us; no cues means nothing to wait for', () => {
  const timer = new CueTimer([CUES[3], CUES[0]]);
  assert.deepEqual(timer.cues.map((c) => c.text), ['one', 'three']);
  assert.equal(new CueTimer([]).update(SCHEDULED, CLOCK, 0).waitMs, null);
});

test('textColourOn picks black on light colours and white on dark ones', () => {
  const { textColourOn } = CUES_MODULE;
  assert.deepEqual(['#ffffff', '#ffd400', '#00ff00', '#000000', '#1d4ed8', '#d62828'].map(textColourOn), ['#000', '#000', '#000', '#fff', '#fff', '#fff']);
});
