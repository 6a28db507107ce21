// Tests of clients/web/js/schedule.js: when and where the track starts.
import test from 'node:test';
import assert from 'node:assert/strict';

import {
  computeStart, latestSchedule, outputLatencyS, pickOutputTimestamp, contextTimeAt, deviceTimeAt,
} from '../../clients/web/js/schedule.js';

// The page's clocks: performance.timeOrigin, and an output timestamp saying
// audio time 10 s is audible at performance time 5000 ms, i.e. device time NOW_US.
const TIME_ORIGIN_MS = 1_700_000_000_000;
const STAMP = { contextTime: 10, performanceTime: 5000 };
const NOW_US = 1_700_000_005_000_000;
// Server is 2 s ahead of the device, no drift.
const ESTIMATE = { type: 'estimate', at_us: NOW_US, offset_us: 2_000_000, rate_ppm: 0, bound_us: 500, bound_growth_ppm: 0 };

function inputs(overrides = {}) {
  return {
    schedule: { epoch: 4, state: 'scheduled', start_us: 1_700_000_012_000_000 },
    estimate: ESTIMATE, deviceNowUs: NOW_US, outputTimestamp: STAMP, timeOriginMs: TIME_ORIGIN_MS,
    latencyS: 0, ...overrides,
  };
}

function near(actual, expected, tolerance, what) {
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual} is not within ${tolerance} of ${expected}`);
}

test('contextTimeAt and deviceTimeAt map through the output timestamp and invert each other', () => {
  assert.equal(contextTimeAt(NOW_US + 2_500_000, STAMP, TIME_ORIGIN_MS), 12.5);
  assert.equal(deviceTimeAt(12.5, STAMP, TIME_ORIGIN_MS), NOW_US + 2_500_000);
});

test('an on-time start plays position 0 at the audio time of start_us', () => {
  // start_us is server +12 s = device +10 s = 5 s after NOW = audio time 15 s.
  const start = computeStart(inputs());
  assert.equal(start.offsetS, 0);
  near(start.contextWhen, 15, 1e-6, 'contextWhen');
  near(start.audibleContextTime, 15, 1e-6, 'audibleContextTime');
  assert.equal(start.deviceStartUs, 1_700_000_010_000_000);
  assert.equal(start.startUs, 1_700_000_012_000_000);
  assert.equal(start.epoch, 4);
});

test('the output latency is subtracted from the scheduling time, not from the audible time', () => {
  const start = computeStart(inputs({ latencyS: 0.04 }));
  near(start.contextWhen, 14.96, 1e-6, 'contextWhen');
  near(start.audibleContextTime, 15, 1e-6, 'audibleContextTime');
  assert.equal(start.offsetS, 0);
});

test('a real output timestamp already includes the latency: nothing more is subtracted', () => {
  const outputTimestamp = { contextTime: 10, performanceTime: 5000, includesLatency: true };
  const start = computeStart(inputs({ latencyS: 0.04, outputTimestamp }));
  near(start.contextWhen, 15, 1e-6, 'contextWhen');
  near(start.audibleContextTime, 15, 1e-6, 'audibleContextTime');
});

test('the manual latency is added to the reported one, and applies with a real output timestamp too', () => {
  const bluetooth = computeStart(inputs({ latencyS: 0.04, manualLatencyS: 0.2 }));
  near(bluetooth.contextWhen, 14.76, 1e-6, 'contextWhen');
  near(bluetooth.audibleContextTime, 15, 1e-6, 'audibleContextTime');
  const outputTimestamp = { contextTime: 10, performanceTime: 5000, includesLatency: true };
  const stamped = computeStart(inputs({ latencyS: 0.04, outputTimestamp, manualLatencyS: -0.02 }));
  near(stamped.contextWhen, 15.02, 1e-6, 'contextWhen (negative adjustment)');
});

test('implausible latencies are ignored', () => {
  for (const latencyS of [Number.NaN, -0.01, 0.75, Infinity, undefined]) {
    const start = computeStart(inputs({ latencyS }));
    near(start.contextWhen, 15, 1e-6, `latency ${latencyS}`);
  }
});

test('outputLatencyS sums the plausible parts only', () => {
  near(outputLatencyS(0.01, 0.03), 0.04, 1e-12, 'both known');
  assert.equal(outputLatencyS(0.01, undefined), 0.01);
  assert.equal(outputLatencyS(Number.NaN, 0.02), 0.02);
  assert.equal(outputLatencyS(-1, 3), 0);
  assert.equal(outputLatencyS(0.4, 0.4), 0);
});

test('a late joiner starts a margin from now at the position then audible', () => {
  // start_us = server +(-1) s = device -3 s = audio time 7 s; now is audio 10 s.
  const start = computeStart(inputs({ schedule: { epoch: 5, state: 'playing', start_us: 1_700_000_004_000_000 }, latencyS: 0.04 }));
  near(start.contextWhen, 10.1, 1e-6, 'contextWhen');
  near(start.audibleContextTime, 10.14, 1e-6, 'audibleContextTime');
  near(start.offsetS, 3.14, 1e-6, 'offsetS');
  assert.equal(start.deviceStartUs, 1_700_000_002_000_000);
});

test('a late joiner’s position applies the clock rate since the start', () => {
  // 100 ppm: at the audible device time (NOW + 0.14 s) the offset is 2 s + 14 µs.
  const estimate = { ...ESTIMATE, rate_ppm: 100 };
  const start = computeStart(inputs({ estimate, schedule: { epoch: 5, state: 'playing', start_us: 1_700_000_004_000_000 }, latencyS: 0.04 }));
  near(start.offsetS, 3.140014, 1e-6, 'offsetS');
});

test('a late start is never scheduled before the context’s currentTime', () => {
  const start = computeStart(inputs({ schedule: { epoch: 5, state: 'playing', start_us: 1_700_000_004_000_000 }, currentTimeS: 10.3 }));
  near(start.contextWhen, 10.4, 1e-6, 'contextWhen');
  near(start.offsetS, 3.4, 1e-6, 'offsetS');
});

test('a start closer than the margin is treated as late', () => {
  // start at device NOW + 50 ms: audio 10.05 s, earlier than 10.1 s.
  const start = computeStart(inputs({ schedule: { epoch: 1, state: 'scheduled', start_us: 1_700_000_007_050_000 } }));
  near(start.contextWhen, 10.1, 1e-6, 'contextWhen');
  near(start.offsetS, 0.05, 1e-6, 'offsetS');
});

test('idle, ended, a missing start_us or a missing estimate give nothing to play', () => {
  assert.equal(computeStart(inputs({ schedule: { epoch: 6, state: 'idle', start_us: null } })), null);
  assert.equal(computeStart(inputs({ schedule: { epoch: 7, state: 'ended', start_us: 1_700_000_004_000_000 } })), null);
  assert.equal(computeStart(inputs({ schedule: { epoch: 7, state: 'playing', start_us: null } })), null);
  assert.equal(computeStart(inputs({ estimate: null })), null);
  assert.equal(computeStart(inputs({ schedule: null })), null);
});

test('a late joiner after the end of the track has nothing to play', () => {
  const late = { epoch: 5, state: 'playing', start_us: 1_700_000_004_000_000 };
  assert.equal(computeStart(inputs({ schedule: late, durationS: 3 })), null);
  assert.notEqual(computeStart(inputs({ schedule: late, durationS: 4 })), null);
});

test('latestSchedule keeps the highest epoch and ignores a stale one', () => {
  const five = { epoch: 5, state: 'scheduled', start_us: 1 };
  const four = { epoch: 4, state: 'idle', start_us: null };
  const six = { epoch: 6, state: 'idle', start_us: null };
  assert.equal(latestSchedule(null, four), four);
  assert.equal(latestSchedule(five, four), five);
  assert.equal(latestSchedule(five, six), six);
  assert.equal(latestSchedule(five, { ...five }).epoch, 5);
  assert.equal(latestSchedule(five, null), five);
});

test('pickOutputTimestamp keeps a plausible stamp and falls back otherwise', () => {
  assert.deepEqual(pickOutputTimestamp({ contextTime: 10, performanceTime: 4990 }, 10.02, 5000), { contextTime: 10, performanceTime: 4990, includesLatency: true });
  const fallback = { contextTime: 10.02, performanceTime: 5000, includesLatency: false };
  assert.deepEqual(pickOutputTimestamp(undefined, 10.02, 5000), fallback);
  assert.deepEqual(pickOutputTimestamp({ contextTime: 0, performanceTime: 0 }, 10.02, 5000), fallback);
  assert.deepEqual(pickOutputTimestamp({ contextTime: 10, performanceTime: 1000 }, 10.02, 5000), fallback);
  assert.deepEqual(pickOutputTimestamp({ contextTime: Number.NaN, performanceTime: 4990 }, 10.02, 5000), fallback);
});
