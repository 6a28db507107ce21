// Tests of clients/web/js/drift.js: the shared vectors (clock/drift.py wrote them), then behaviour in simulated time.
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { DriftController, MAX_RATE_DEVIATION, FILTER_LENGTH } from '../../clients/web/js/drift.js';

const VECTORS = JSON.parse(readFileSync(new URL('../fixtures/drift_vectors.json', import.meta.url), 'utf8'));
const QUANTUM_S = 128 / 48000;
const HOUR_S = 3600;
const SETTLED_S = 300;

function near(actual, expected, tolerance, what) {
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual} is not within ${tolerance} of ${expected}`);
}

// Seeded PRNG (mulberry32) and Gaussian (Box-Muller): the simulations are repeatable.
function prng(seed) {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const gauss = () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
  return { uniform, gauss };
}

/**
 * A phone playing a track in virtual time (as tests/fixtures/make_drift_vectors.py's
 * SimulatedDevice): true time t is the server's; the audio clock runs audioPpm
 * fast, heard latencyS after rendering; the track should be at position t
 * (+ targetStepS from targetStepAtS, + targetPpm drift from targetChangeAtS).
 * Measurements carry render-quantum, performance-clock and estimate noise.
 * Returns the controller, its decisions and the true-error trace [t, error].
 */
function simulate({
  durationS, audioPpm = 0, seed = 1, latencyS = 0.03, estimateNoiseS = 0.001, perfResolutionS = 0.001,
  quantumS = QUANTUM_S, initialErrorS = 0, targetStepAtS = null, targetStepS = 0, targetChangeAtS = null, targetPpm = 0,
}) {
  const rng = prng(seed);
  const contextAt = (t) => 10 + t * (1 + audioPpm * 1e-6);
  const targetAt = (t) => {
    let target = t;
    if (targetStepAtS !== null && t >= targetStepAtS) target += targetStepS;
    if (targetChangeAtS !== null && t > targetChangeAtS) target += (t - targetChangeAtS) * targetPpm * 1e-6;
    return target;
  };
  // The simulator's own record of what the source plays: [context, position, rate].
  let segments = [[contextAt(-latencyS), initialErrorS, 1]];
  const playedAt = (c) => {
    let segment = segments[0];
    for (const s of segments) if (s[0] <= c) segment = s;
    return segment[1] + (c - segment[0]) * segment[2];
  };
  const controller = new DriftController();
  controller.start(segments[0][0], initialErrorS);
  const decisions = [];
  const trace = [];
  for (let t = 0.5; t < durationS; t += 1 + (rng.uniform() - 0.5) * 0.1) {
    trace.push([t, playedAt(contextAt(t - latencyS)) - targetAt(t)]);
    const heard = contextAt(t - latencyS) + (rng.uniform() - 0.5) * quantumS;
    const perfT = Math.round(t / perfResolutionS) * perfResolutionS;
    const d = controller.measure({
      audibleContextTimeS: heard, targetPositionS: targetAt(perfT) + rng.gauss() * estimateNoiseS, contextNowS: contextAt(t),
    });
    if (d.action === 'rate') {
      segments = [...segments.filter((s) => s[0] < d.atContextTimeS).slice(-2), [d.atContextTimeS, playedAt(d.atContextTimeS), d.rate]];
    } else if (d.action === 'realign') {
      segments = [[d.atContextTimeS, d.positionS, d.rate]];
    }
    decisions.push(d);
  }
  return { controller, decisions, trace };
}

const maxErrorAfter = (trace, t0) => Math.max(...trace.filter(([t]) => t > t0).map(([, e]) => Math.abs(e)));
const settledAfter = (trace, limit) => Math.max(0, ...trace.filter(([, e]) => Math.abs(e) >= limit).map(([t]) => t));

for (const scenario of VECTORS.scenarios) {
  test(`replays the shared vector "${scenario.name}" as clock/drift.py decided it`, () => {
    const controller = new DriftController();
    controller.start(...scenario.start);
    scenario.steps.forEach(([[c, target, now], expected, state], i) => {
      const d = controller.measure({ audibleContextTimeS: c, targetPositionS: target, contextNowS: now });
      assert.equal(d.action, expected[0], `step ${i}`);
      [d.rate, d.atContextTimeS, d.positionS, d.errorS].forEach((v, k) => near(v, expected[k + 1], 1e-9, `step ${i} field ${k + 1}`));
      if (state[0] === null) assert.equal(controller.errorS, null, `step ${i}`);
      else near(controller.errorS, state[0], 1e-9, `step ${i} errorS`);
      near(controller.rate, state[1], 1e-9, `step ${i} rate`);
      near(controller.rateEstimatePpm, state[2], 1e-9, `step ${i} rateEstimatePpm`);
      assert.equal(controller.realigns, state[3], `step ${i} realigns`);
    });
  });
}

for (const audioPpm of [100, -100, 0]) {
  test(`at ${audioPpm} ppm the position stays within 2 ms of target for 60 simulated minutes once settled`, () => {
    const { controller, trace } = simulate({ durationS: HOUR_S, audioPpm, seed: 21 });
    assert.ok(maxErrorAfter(trace, SETTLED_S) < 0.002, `${maxErrorAfter(trace, SETTLED_S) * 1e3} ms`);
    assert.equal(controller.realigns, 0);
    near(controller.rateEstimatePpm, -audioPpm, 20, 'rate estimate (ppm)');
  });
}

test('with 2 ms estimate noise the rate never leaves 1 +- 500 ppm, even slewing a 40 ms error', () => {
  for (const audioPpm of [100, -100]) {
    const { decisions, trace } = simulate({ durationS: HOUR_S, audioPpm, seed: 22, estimateNoiseS: 0.002, initialErrorS: 0.04 });
    const rates = decisions.filter((d) => d.action !== 'keep').map((d) => d.rate);
    assert.ok(rates.length > 0);
    assert.ok(Math.max(...rates.map((r) => Math.abs(r - 1))) <= MAX_RATE_DEVIATION + 1e-15);
    assert.ok(maxErrorAfter(trace, SETTLED_S) < 0.002, `${maxErrorAfter(trace, SETTLED_S) * 1e3} ms`);
  }
});

test('a 20 ms offset is under 5 ms within 60 s and under 2 ms for good within 150 s, without a re-align', () => {
  for (const audioPpm of [100, -100, 0]) {
    for (const initialErrorS of [0.02, -0.02]) {
      const { controller, trace } = simulate({ durationS: 600, audioPpm, seed: 23, initialErrorS });
      assert.ok(settledAfter(trace, 0.005) < 60, `${audioPpm} ppm, ${initialErrorS} s: ${settledAfter(trace, 0.005)}`);
      assert.ok(settledAfter(trace, 0.002) < 150, `${audioPpm} ppm, ${initialErrorS} s: ${settledAfter(trace, 0.002)}`);
      assert.equal(controller.realigns, 0);
    }
  }
});

test('an 80 ms jump of the target is re-aligned once, within 10 s, and the hour then stays within 2 ms', () => {
  const { controller, decisions, trace } = simulate({ durationS: HOUR_S, audioPpm: 100, seed: 24, targetStepAtS: 900, targetStepS: 0.08 });
  assert.equal(controller.realigns, 1);
  const realign = decisions.filter((d) => d.action === 'realign');
  assert.equal(realign.length, 1);
  near(realign[0].errorS, -0.08, 0.005, 'error that led to the re-align');
  assert.ok(settledAfter(trace.filter(([t]) => t > 900), 0.005) < 910);
  assert.ok(maxErrorAfter(trace, 900 + SETTLED_S) < 0.002);
});

test('an estimate whose rate moves by 150 ppm mid-show is followed: under 5 ms, back under 2 ms within 3 min', () => {
  const { controller, trace } = simulate({ durationS: HOUR_S, audioPpm: 100, seed: 25, targetChangeAtS: 1800, targetPpm: -150 });
  const after = trace.filter(([t]) => t > 1800);
  assert.ok(maxErrorAfter(after, 0) < 0.005);
  assert.ok(settledAfter(after, 0.002) < 1800 + 180);
  assert.equal(controller.realigns, 0);
  near(controller.rateEstimatePpm, -250, 20, 'rate estimate (ppm)');
});

test('without measurement noise a locked controller stops changing the rate (no hunting)', () => {
  const { controller, decisions, trace } = simulate({ durationS: HOUR_S, audioPpm: 80, seed: 26, estimateNoiseS: 0, quantumS: 0, perfResolutionS: 1e-9 });
  const late = decisions.filter((d, i) => trace[i][0] > 900 && d.action !== 'keep');
  assert.ok(late.length <= 5, `${late.length} rate changes`);
  assert.ok(maxErrorAfter(trace, 900) <= 0.0011);
  near(controller.ratePpm, -80, 2, 'rate (ppm)');
});

test('nothing is decided before the filter window is full, and two stray measurements are outvoted', () => {
  const controller = new DriftController();
  controller.start(10, 0);
  const targets = [1, 2, 3, 4, 5, 6.3, 7, 7.5];
  const actions = targets.map((target, k) => controller.measure({ audibleContextTimeS: 11 + k, targetPositionS: target }).action);
  assert.deepEqual(actions, Array(targets.length).fill('keep'));
  assert.equal(controller.errorS, 0);
  assert.equal(FILTER_LENGTH, 5);
});

test('status() gives the display errorMs, ratePpm and realigns', () => {
  const controller = new DriftController();
  assert.deepEqual(controller.status(), { errorMs: null, ratePpm: 0, rateEstimatePpm: 0, realigns: 0 });
  controller.start(10, 0);
  controller.measure({ audibleContextTimeS: 11, targetPositionS: 0.998 });
  near(controller.status().errorMs, 2, 1e-9, 'errorMs');
});

test('non-finite input and a measurement before any start throw RangeError', () => {
  const controller = new DriftController();
  assert.throws(() => controller.measure({ audibleContextTimeS: 1, targetPositionS: 1 }), RangeError);
  controller.start(0, 0);
  for (const bad of [Number.NaN, Infinity, undefined]) {
    assert.throws(() => controller.measure({ audibleContextTimeS: bad, targetPositionS: 1 }), RangeError);
    assert.throws(() => controller.measure({ audibleContextTimeS: 1, targetPositionS: bad }), RangeError);
  }
  assert.throws(() => controller.measure({ audibleContextTimeS: 1, targetPositionS: 1, contextNowS: Number.NaN }), RangeError);
});
