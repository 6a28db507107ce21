/**
 * TEST ONLY: shift and skew every clock the page can read, the way a real
 * phone's clock differs from the server's, and keep the true clocks for the
 * test. participant.js imports this module (before it reads any clock) only
 * when the page's URL has `?testclock=SHIFT_MS,SKEW_PPM`; without the
 * parameter it is never fetched. A file, not an inline script, so it runs
 * under a Content-Security-Policy of script-src 'self'; and it works in every
 * engine, including WebDriver classic (WebKit) which has no init scripts.
 *
 * Wrapped consistently (a page must not be able to tell the real clock from
 * any of them): performance.now(), Date.now(), `new Date()` (no arguments)
 * and AudioContext.getOutputTimestamp().performanceTime. The audio clock
 * itself cannot be moved from a script and is left alone.
 *
 * window.__unisonoTest (for the test, never read by the page):
 *   trueNowMs()                 the real performance.now()
 *   trueMsOfDeviceUs(deviceUs)  true Unix time (ms) of a device time the page read
 *   trueRenderMs(contextTimeS)  true Unix time (ms) at which the audio clock rendered
 *                               contextTimeS, from the test's own readings of
 *                               currentTime against the real clock just before it
 *                               (null until it has been rendered)
 *   probe()                     what this engine reports: timer resolution, latencies,
 *                               output timestamp against currentTime
 */

import { perfResolutionMs } from './deviceclock.js';

/** Parse `SHIFT_MS,SKEW_PPM`; null if absent or malformed. */
export function parseTestClock(search) {
  const value = new URLSearchParams(search).get('testclock');
  if (value === null) return null;
  const [shiftMs, skewPpm] = value.split(',').map(Number);
  if (!Number.isFinite(shiftMs) || !Number.isFinite(skewPpm ?? 0)) return null;
  return { shiftMs, skewPpm: skewPpm ?? 0 };
}

// The test's render-clock readings: one every SAMPLE_MS, the last WINDOW kept.
const SAMPLE_MS = 20;
const WINDOW = 1500;
// An instant's render time comes from the readings of the BEFORE_S of audio
// time before it (~25 readings at random phase against 3-20 ms audio
// callbacks), carried forward at the nominal rate: close enough that a
// stalling audio clock (Firefox on a busy machine) does not bend it. Not from
// readings after it: WebKitGTK's currentTime leaps ~60 ms ahead of
// performance time the moment a source starts sounding (it fills a deeper
// output buffer), which moves what is rendered, not what the sink plays.
const BEFORE_S = 0.5;

/** Install the shifted clocks. */
export function installTestClock({ shiftMs, skewPpm }) {
  const skew = skewPpm * 1e-6;
  const perf = globalThis.performance;
  const realNow = perf.now.bind(perf);
  const RealDate = globalThis.Date;
  const realDateNow = RealDate.now.bind(RealDate);
  const base = realNow();
  const resolutionMs = perfResolutionMs(); // the real clock's tick, read before it is wrapped
  const fake = (real) => real + shiftMs + (real - base) * skew;
  const unfake = (faked) => (faked - shiftMs + base * skew) / (1 + skew);
  const fakeDateNow = () => Math.round(realDateNow() + shiftMs + (realNow() - base) * skew);

  perf.now = () => fake(realNow());
  class ShiftedDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) super(fakeDateNow());
      else super(...args);
    }

    static now() {
      return fakeDateNow();
    }
  }
  globalThis.Date = ShiftedDate;

  let context = null;
  const readings = []; // {c: currentTime (s), p: real performance.now() read right after (ms)}
  const sample = () => {
    if (context !== null && context.state === 'running') {
      const c = context.currentTime;
      const p = realNow();
      if (c > 0) {
        readings.push({ c, p });
        if (readings.length > WINDOW) readings.shift();
      }
    }
    setTimeout(sample, SAMPLE_MS);
  };
  const adopt = (candidate) => {
    if (context === null) {
      context = candidate;
      sample();
    }
  };
  const Context = globalThis.AudioContext ?? globalThis.webkitAudioContext;
  const realOutput = Context?.prototype.getOutputTimestamp;
  if (Context && realOutput) {
    Context.prototype.getOutputTimestamp = function getOutputTimestamp() {
      adopt(this);
      const stamp = realOutput.call(this);
      return { contextTime: stamp.contextTime, performanceTime: fake(stamp.performanceTime) };
    };
  }
  if (Context) {
    const realResume = Context.prototype.resume;
    Context.prototype.resume = function resume() {
      adopt(this);
      return realResume.call(this);
    };
  }

  globalThis.__unisonoTest = {
    shiftMs,
    skewPpm,
    trueNowMs: realNow,
    trueMsOfDeviceUs: (deviceUs) => perf.timeOrigin + unfake(deviceUs / 1000 - perf.timeOrigin),
    trueRenderMs(contextTimeS) {
      // Reading c at p means c was rendered by p; at the steady rate, contextTimeS (contextTimeS - c) later.
      const last = readings[readings.length - 1];
      if (last === undefined || last.c < contextTimeS) return null;
      let renderedMs = Infinity;
      for (const { c, p } of readings) {
        if (c >= contextTimeS - BEFORE_S && c < contextTimeS) renderedMs = Math.min(renderedMs, p + (contextTimeS - c) * 1000);
      }
      // A coarse clock reads up to a tick early: half a tick back.
      return Number.isFinite(renderedMs) ? perf.timeOrigin + renderedMs + resolutionMs / 2 : null;
    },
    readings: () => readings,
    probe() {
      const result = { resolutionMs, userAgent: globalThis.navigator?.userAgent ?? '' };
      if (context !== null) {
        const stamp = realOutput ? realOutput.call(context) : null;
        const now = realNow();
        Object.assign(result, {
          state: context.state,
          sampleRate: context.sampleRate,
          baseLatency: context.baseLatency ?? null,
          outputLatency: context.outputLatency ?? null,
          currentTime: context.currentTime,
          perfNowMs: now,
          stampContextTime: stamp?.contextTime ?? null,
          stampPerformanceTime: stamp?.performanceTime ?? null,
          renderOffsetMs: readings.length ? Math.min(...readings.slice(-50).map(({ c, p }) => p - c * 1000)) : null,
        });
      }
      return result;
    },
  };
}
