// Tests of clients/web/js/audioclock.js: the audio-clock mapping against
// simulated engines (Chromium, WebKit, Firefox quirks), in simulated time.
import test from 'node:test';
import assert from 'node:assert/strict';

import { AudioClock, derivedStamp, envelopeFit, knownLatencyS } from '../../clients/web/js/audioclock.js';

/** Reading phases for seed `seed`: a golden-ratio sequence (even spread, the same every run). */
function phases(seed) {
  let x = seed * 0.1234;
  return () => {
    x = (x + 0.6180339887) % 1;
    return x;
  };
}

/**
 * A simulated engine. The audio clock starts at performance time startMs and
 * runs (1 + ratePpm) fast; the audio thread renders blocks of blockMs, so
 * currentTime steps at each block; what renders at audio time c is heard
 * latencyMs later. performance.now() is floored to resolutionMs.
 * stamp: 'good' (Chromium: the audio time heard at an exact performance time),
 * 'webkit' (performanceTime ~ now + contextTime * 1000), 'firefox' ((currentTime, now)),
 * 'none' (no getOutputTimestamp).
 */
function engine({ startMs = 1000, ratePpm = 0, blockMs = 10, latencyMs = 40, resolutionMs = 0.1, stamp = 'good' }) {
  const rate = 1 + ratePpm * 1e-6;
  const audioS = (perfMs) => ((perfMs - startMs) * rate) / 1000; // audio time rendered by perfMs (continuous)
  const perfOfAudio = (c) => startMs + (c * 1000) / rate; // when audio time c is rendered
  const floor = (ms) => Math.floor(ms / resolutionMs) * resolutionMs;
  const blockS = blockMs / 1000;
  return {
    heardMs: (c) => perfOfAudio(c) + latencyMs,
    currentTime: (perfMs) => Math.floor(audioS(perfMs) / blockS) * blockS,
    perfNow: (perfMs) => floor(perfMs),
    outputTimestamp(perfMs) {
      const current = Math.floor(audioS(perfMs) / blockS) * blockS;
      if (stamp === 'none') return undefined;
      if (stamp === 'firefox') return { contextTime: current, performanceTime: floor(perfMs) };
      if (stamp === 'webkit') return { contextTime: current, performanceTime: floor(perfMs) + current * 1000 };
      const heard = Math.max(0, audioS(perfMs - latencyMs)); // the frame heard now
      return { contextTime: heard, performanceTime: floor(perfOfAudio(heard) + latencyMs) };
    },
  };
}

/** Feed `seconds` of readings every ~25 ms (as player.js) (random phase), a stamp every `stampEveryMs`, and return the clock. */
function feed(sim, { seconds = 4, seed = 1, fromMs = 1100, resolutionMs = 0.1, stampEveryMs = 0 } = {}) {
  const clock = new AudioClock();
  clock.setResolution(resolutionMs);
  const next = phases(seed);
  let stampMs = -Infinity;
  for (let t = fromMs; t < fromMs + seconds * 1000; t += 20 + 10 * next()) {
    clock.addRender(sim.currentTime(t), sim.perfNow(t + 0.005));
    if (t - stampMs < stampEveryMs) continue;
    stampMs = t;
    clock.addOutputTimestamp(sim.outputTimestamp(t + 0.01));
  }
  return clock;
}

/** How far (ms) the mapping puts the instant audio time `c` is heard, `aheadS` past the mapping's point. */
function errorMs(mapping, sim, aheadS = 0) {
  const c = mapping.contextTime + aheadS;
  return mapping.performanceTime + aheadS * 1000 - sim.heardMs(c);
}

test('Chromium: a good output timestamp is used, with the latency it implies', () => {
  const sim = engine({ latencyMs: 42, stamp: 'good' });
  const mapping = feed(sim).mapping({ baseLatency: 0.01, outputLatency: 0.032 });
  assert.equal(mapping.source, 'outputTimestamp');
  assert.ok(Math.abs(mapping.latencyS - 0.042) < 0.0015, mapping.latencyS);
  assert.ok(Math.abs(errorMs(mapping, sim)) < 1, errorMs(mapping, sim));
  assert.ok(Math.abs(errorMs(mapping, sim, 3)) < 1);
});

test('WebKit: performanceTime off by the context time is refused; the render fit maps within 1 ms', () => {
  const sim = engine({ latencyMs: 3, resolutionMs: 1, blockMs: 2.9, stamp: 'webkit' });
  const mapping = feed(sim, { resolutionMs: 1 }).mapping({ baseLatency: 0.003, outputLatency: 0 });
  assert.equal(mapping.source, 'render');
  assert.match(mapping.reason, /implied latency/);
  assert.equal(mapping.latencyKnown, false, 'outputLatency 0 is unknown');
  assert.equal(mapping.latencyS, 0.003, 'baseLatency is still compensated');
  assert.ok(Math.abs(errorMs(mapping, sim)) < 1, errorMs(mapping, sim));
});

test('WebKit: even before its stamps drift far, too short a span of them is not trusted', () => {
  const sim = engine({ latencyMs: 3, resolutionMs: 1, stamp: 'webkit' });
  const mapping = feed(sim, { seconds: 0.4, resolutionMs: 1 }).mapping({});
  assert.equal(mapping.source, 'render');
  assert.match(mapping.reason, /span/);
});

test('Firefox: (currentTime, now) stamps with 1 ms timers give a latency of ~0 and a mapping within 1 ms', () => {
  const sim = engine({ latencyMs: 0, resolutionMs: 1, blockMs: 10, stamp: 'firefox' });
  const mapping = feed(sim, { resolutionMs: 1, seed: 7 }).mapping({ baseLatency: 0, outputLatency: 0 });
  assert.ok(mapping.latencyS < 0.0015, mapping.latencyS);
  assert.ok(Math.abs(errorMs(mapping, sim)) < 1, errorMs(mapping, sim));
});

test('no getOutputTimestamp: the render fit plus the reported latencies', () => {
  const sim = engine({ latencyMs: 25, stamp: 'none' });
  const mapping = feed(sim).mapping({ baseLatency: 0.005, outputLatency: 0.02 });
  assert.equal(mapping.source, 'render');
  assert.equal(mapping.latencyKnown, true);
  assert.ok(Math.abs(errorMs(mapping, sim)) < 1, errorMs(mapping, sim));
});

test('a skewed audio clock (300 ppm) is followed: 3 s ahead the mapping is still within 1 ms', () => {
  const sim = engine({ ratePpm: 300, latencyMs: 42, stamp: 'good' });
  const mapping = feed(sim, { seconds: 20 }).mapping({});
  assert.ok(Math.abs(mapping.ratePpm + 300) < 60, mapping.ratePpm); // perf ms per audio s: 1000 / (1 + r)
  assert.ok(Math.abs(errorMs(mapping, sim, 3)) < 1, errorMs(mapping, sim, 3));
});

test('coarse timers over many seeds: the render fit stays within 1 ms (half a tick added back)', () => {
  for (let seed = 1; seed <= 20; seed += 1) {
    const sim = engine({ latencyMs: 0, resolutionMs: 1, blockMs: 2.9 + seed * 0.3, stamp: 'none' });
    const mapping = feed(sim, { seed, resolutionMs: 1 }).mapping({});
    assert.ok(Math.abs(errorMs(mapping, sim)) <= 1, `seed ${seed}: ${errorMs(mapping, sim)}`);
  }
});

test('before enough readings there is no mapping; a clock going backwards starts the series again', () => {
  const clock = new AudioClock();
  assert.equal(clock.mapping({}), null);
  for (let i = 1; i <= 10; i += 1) clock.addRender(i * 0.1, 5000 + i * 100);
  assert.notEqual(clock.mapping({}), null);
  clock.addRender(0.05, 9000);
  assert.equal(clock.mapping({}), null);
});

test('readings that cannot be used are ignored: non-finite, missing, contextTime 0 (device not started)', () => {
  const clock = new AudioClock();
  clock.addRender(0, 100);
  clock.addRender(Number.NaN, 100);
  clock.addOutputTimestamp(undefined);
  clock.addOutputTimestamp({ contextTime: 0, performanceTime: 778 });
  assert.equal(clock.render.length + clock.stamps.length, 0);
});

test('reported latency: 0, negative, missing and absurd are unknown', () => {
  assert.equal(knownLatencyS(0), null);
  assert.equal(knownLatencyS(undefined), null);
  assert.equal(knownLatencyS(-0.01), null);
  assert.equal(knownLatencyS(3), null);
  assert.equal(knownLatencyS(0.032), 0.032);
});

test('envelopeFit: a line under noisy points, its residual the spread of the bucket minima above it', () => {
  const points = [];
  for (let i = 0; i < 100; i += 1) points.push({ c: i * 0.1, offsetMs: 50 + 0.02 * i * 0.1 + (i % 7) });
  const fit = envelopeFit(points);
  assert.ok(Math.abs(fit.at(9.9) - (50 + 0.02 * 9.9)) < 0.2, fit.at(9.9));
  assert.ok(fit.residualMs < 1);
  assert.equal(envelopeFit([]), null);
});

test('an audio clock that stalls (Firefox starting on a busy machine) is followed within the recent window', () => {
  const clock = new AudioClock();
  clock.setResolution(0.1);
  // 4 s steady, a 300 ms stall, then 3 s steady again: render offset 1000 ms, then 1300 ms.
  let t = 1100;
  for (let i = 0; t < 8100; i += 1, t += 20 + 10 * ((i * 0.618) % 1)) {
    const renderedMs = t < 5100 ? t - 1000 : t < 5400 ? 4100 : t - 1300; // stands still 300 ms
    const c = Math.floor(renderedMs / 10) / 100;
    clock.addRender(c, t + 0.005);
  }
  const mapping = clock.mapping({});
  assert.ok(Math.abs(mapping.performanceTime - (mapping.contextTime * 1000 + 1300)) < 1, mapping);
  assert.equal(mapping.ratePpm, 0, 'no slope from an unsteady clock');
  assert.equal(mapping.stalled, false, '3 s after the stall the recent window is past it');
  // Just after a stall, the last SHORT_S of readings map it, not the older ones.
  const fresh = new AudioClock();
  let u = 1100;
  for (let i = 0; u < 4100; i += 1, u += 20 + 10 * ((i * 0.618) % 1)) {
    const renderedMs = u < 3300 ? u - 1000 : u < 3315 ? 2300 : u - 1015; // stands still 15 ms
    fresh.addRender(Math.floor(renderedMs / 10) / 100, u + 0.005);
  }
  const after = fresh.mapping({});
  assert.equal(after.stalled, true);
  assert.ok(Math.abs(after.performanceTime - (after.contextTime * 1000 + 1015)) < 1, after);
  assert.ok(mapping.residualMs > 1.5, 'the stall shows in the residual');
});

test('Chromium: output timestamps read every 200 ms (as player.js) are still judged and used', () => {
  const sim = engine({ latencyMs: 41 });
  const mapping = feed(sim, { stampEveryMs: 200 }).mapping({ baseLatency: 0.01, outputLatency: 0.032 });
  assert.equal(mapping.source, 'outputTimestamp', mapping.reason);
  assert.ok(Math.abs(mapping.latencyS - 0.041) < 0.001, mapping);
  assert.ok(Math.abs(errorMs(mapping, sim)) < 1, mapping);
});

test('derivedStamp: Firefox-style stamps (currentTime and now, shifted back by outputLatency) are derived', () => {
  const stamp = { contextTime: 2.1566 - 0.046, performanceTime: 6818 - 46 };
  assert.equal(derivedStamp(stamp, 2.1566, 6818, 0.046, 1), true);
  assert.equal(derivedStamp({ contextTime: 2.5, performanceTime: 6818 }, 2.5, 6818.4, 0, 1), true, 'latency 0, a tick apart');
  assert.equal(derivedStamp({ contextTime: 2.5, performanceTime: 6818 }, 2.5, 6818.4, undefined, 1), true, 'missing latency counts as 0');
});

test('derivedStamp: measured or wrong stamps are not derived, nor unusable input', () => {
  // Chromium: the frame heard ~41 ms ago against the time it was heard.
  assert.equal(derivedStamp({ contextTime: 4.9595, performanceTime: 6001.2 }, 4.99, 6010.3, 0.032, 0.1), false);
  // WebKitGTK: performanceTime ~ now + contextTime * 1000.
  assert.equal(derivedStamp({ contextTime: 2.0, performanceTime: 8000 }, 2.0, 6000, 0, 1), false);
  // The same currentTime but a performanceTime off by more than a tick and the tolerance.
  assert.equal(derivedStamp({ contextTime: 2.0, performanceTime: 5990 }, 2.0, 6000, 0, 1), false);
  assert.equal(derivedStamp(undefined, 2.0, 6000, 0), false);
  assert.equal(derivedStamp({ contextTime: Number.NaN, performanceTime: 6000 }, 2.0, 6000, 0), false);
});

test('dropStamps: without its stamps the clock maps from the render readings plus the reported latency', () => {
  const sim = engine({ latencyMs: 25, stamp: 'firefox', resolutionMs: 1 });
  const clock = feed(sim, { resolutionMs: 1 });
  clock.dropStamps();
  const mapping = clock.mapping({ baseLatency: 0, outputLatency: 0.025 });
  assert.equal(mapping.source, 'render');
  assert.equal(mapping.latencyS, 0.025);
  assert.ok(Math.abs(errorMs(mapping, sim)) < 1.5, mapping);
});

test('steady: only after RECENT_S of readings with no stall in any half second of them', () => {
  const sim = engine({ latencyMs: 40 });
  assert.equal(feed(sim, { seconds: 1.5 }).mapping({}).steady, false, '1.5 s of readings is too short');
  assert.equal(feed(sim, { seconds: 3 }).mapping({}).steady, true);
  // A 10 ms stall 1.2 s before the last reading: no longer 'stalled' against the
  // last 0.5 s only if the recent envelope is past it, but never steady within RECENT_S of it.
  const clock = new AudioClock();
  clock.setResolution(0.1);
  let t = 1100;
  for (let i = 0; t < 5100; i += 1, t += 20 + 10 * ((i * 0.618) % 1)) {
    const renderedMs = t < 3900 ? t - 1000 : t < 3910 ? 2900 : t - 1010; // stands still 10 ms at t = 3900
    clock.addRender(Math.floor(renderedMs / 10) / 100, t + 0.005);
  }
  assert.equal(clock.mapping({}).steady, false);
});
