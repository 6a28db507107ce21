/**
 * Audio glue: unlock the AudioContext on a tap, load the track, start it when
 * schedule.js says, and keep it in step while it plays as drift.js says. All
 * timing decisions are schedule.js's and drift.js's; this file reads the
 * clocks, calls them, and drives the Web Audio nodes.
 *
 * Two kinds of track: a single audio file, decoded whole into one buffer and
 * played by one source; or a segment manifest (a URL ending in .json, see
 * segments.js), decoded a couple of minutes ahead at a time and played by a
 * chain of sources (chain.js). Rate changes apply to every source of the
 * chain; a re-align ends the chain and starts a new one.
 */

import { computeStart, outputLatencyS, pickOutputTimestamp } from './schedule.js';
import { DriftController } from './drift.js';
import { ClockEstimate } from './sync.js';
import { deviceNowUs, perfNowMs, perfResolutionMs, timeOriginMs } from './deviceclock.js';
import { AudioClock, derivedStamp } from './audioclock.js';
import { SegmentedTrack, decodeWith, fetchManifest } from './chain.js';
import { isManifestUrl } from './segments.js';
import { realignAfterStateChange, shouldResume } from './phone.js';

// Before the start is audible, a new estimate that moves it by more than this
// replaces the scheduled source: the first estimates after join are the
// roughest, and an unstarted source can be replaced without a glitch.
const RESCHEDULE_THRESHOLD_S = 0.001;
// ... but not within this of the scheduled time, when the audio thread may
// already have picked the source up.
const RESCHEDULE_GUARD_S = 0.05;
// Sample rate for decoding before the tap, when no AudioContext exists yet;
// the real context resamples if its own rate differs. 48 kHz is what most
// phones' outputs run at.
const PRELOAD_SAMPLE_RATE = 48000;
// Drift is measured this often (audio-clock seconds) while the track plays:
// drift.js's loop is tuned for ~1 measurement a second.
const DRIFT_INTERVAL_S = 1.0;
// The audio clock is read against performance.now() this often while the
// context runs (audioclock.js fits the lower envelope of the last 2 s: ~80 readings at random
// phase against 3-20 ms audio callbacks; two clock reads each, negligible).
const AUDIO_CLOCK_SAMPLE_MS = 25;
// The context's latency reports and output timestamps are read sparingly: in
// Firefox each read of outputLatency, and each getOutputTimestamp() (which
// reads it), is a synchronous call to the audio server made while holding the
// audio graph's lock whenever the browser has no non-zero latency cached
// (MediaTrackGraphImpl::AudioOutputLatency). On Linux, with audio remoted to
// the parent process over PulseAudio, one such call met the audio callback
// and deadlocked the page for good (gdb stacks: docs/BROWSERS.md); 50 reads a
// second hung 1 run in 4 of tests/browser/engines. Latencies once a second
// (they change on a device switch, not faster) ...
const LATENCY_READ_INTERVAL_MS = 1000;
// ... output timestamps every 200 ms (audioclock.js's MIN_STAMPS over its 2 s window) ...
const OUTPUT_TIMESTAMP_INTERVAL_MS = 200;
// ... and none once this many in a row were derived from currentTime and
// outputLatency (audioclock.js's derivedStamp: Firefox's carry no measurement).
const DERIVED_STAMPS_TO_STOP = 5;

function audioContextClass() {
  return globalThis.AudioContext ?? globalThis.webkitAudioContext;
}

// A late joiner waits until the segments this far past its start position
// are decoded, so the chain does not run dry while the next one decodes.
const LATE_JOIN_READY_AHEAD_S = 1.0;
// A late joiner (or a reloaded page) starts once its clock estimate is this
// good: once playing, only the drift loop moves it, slowly (500 ppm at most),
// and the first estimates after a join can be tens of ms off. 5 ms is the
// sync target; the estimator reaches it within ~2 s of joining (bench, 4g p99).
const LATE_START_MAX_BOUND_US = 5000;
// ... but no longer than this after it could have started: a phone on a bad
// network may never reach the bound, and playing slightly off beats silence.
const LATE_START_MAX_WAIT_MS = 5000;
// ... and not before the audio clock has run this long: in Chromium the
// output timestamps of a context that has just started map audio time to
// performance time ~20 ms off (seen in tests/browser: late starts at
// currentTime 0.12 s were 20 ms late, none after 1 s), and a late start is
// never recomputed once it sounds. The same holds after the context resumes
// from suspended or interrupted (browser tests: restarts right after a resume
// came out up to 31 ms late under load).
const AUDIO_SETTLE_S = 1.0;

/**
 * The track player. `onChange()` is called whenever loaded/unlocked/start/ended changes.
 * Feed it with load(url), unlock() (inside the tap's handler), setSchedule(), setEstimate().
 */
export class Player {
  constructor({ onChange } = {}) {
    this.onChange = onChange ?? (() => {});
    this.context = null;
    this.buffer = null; // single-file track
    this.track = null; // segmented track (SegmentedTrack), ready once its first segments are decoded
    this.trackReady = false;
    this.waitingForPositionS = null; // a late start waiting for its segments to decode
    this.lateWaitSinceMs = null; // performance time a late start began waiting for a good estimate
    this.trackUrl = null;
    this.schedule = null;
    this.estimate = null;
    this.source = null;
    this.start = null; // computeStart's result for the playing track (kept across re-aligns)
    this.trackEnded = false;
    this.drift = new DriftController(); // one per page: its rate estimate is the audio clock's
    this.lastDriftContextS = -Infinity;
    this.manualLatencyS = 0; // the participant's adjustment (phone.js), added to the reported latency
    this.contextState = null; // the context's state at the last statechange
    this.runningSinceS = 0; // the context's currentTime when it last began running (AUDIO_SETTLE_S counts from it)
    this.realigns = 0; // restarts after the context came back from suspended/interrupted
    this.audioClock = new AudioClock(); // the audio clock against performance time (audioclock.js)
    this.audioClockTimer = null;
    this.latencies = null; // the context's {baseLatency, outputLatency} (s), as last read
    this.latenciesReadMs = -Infinity; // performance time they were read
    this.lastStamp = undefined; // the last getOutputTimestamp() result
    this.stampReadMs = -Infinity; // performance time it was read
    this.derivedStamps = 0; // derived stamps in a row
    this.stampsDerived = false; // this browser's stamps are derived: no more are read
  }

  /** The context's {baseLatency, outputLatency} (s), read at most every LATENCY_READ_INTERVAL_MS. */
  latencyReport() {
    const nowMs = perfNowMs();
    if (this.latencies === null || nowMs - this.latenciesReadMs >= LATENCY_READ_INTERVAL_MS) {
      this.latencies = { baseLatency: this.context.baseLatency, outputLatency: this.context.outputLatency };
      this.latenciesReadMs = nowMs;
    }
    return this.latencies;
  }

  /**
   * Read the audio clock against performance time (every AUDIO_CLOCK_SAMPLE_MS
   * while running), and an output timestamp every OUTPUT_TIMESTAMP_INTERVAL_MS
   * until they turn out derived.
   */
  sampleAudioClock() {
    const context = this.context;
    if (context === null || context.state !== 'running') return;
    const currentTimeS = context.currentTime;
    const nowMs = perfNowMs();
    this.audioClock.addRender(currentTimeS, nowMs);
    if (this.stampsDerived || typeof context.getOutputTimestamp !== 'function') return;
    if (nowMs - this.stampReadMs < OUTPUT_TIMESTAMP_INTERVAL_MS) return;
    this.stampReadMs = nowMs;
    const stamp = context.getOutputTimestamp();
    this.lastStamp = stamp;
    const derived = derivedStamp(stamp, currentTimeS, nowMs, this.latencyReport().outputLatency, this.audioClock.resolutionMs);
    this.derivedStamps = derived ? this.derivedStamps + 1 : 0;
    if (this.derivedStamps >= DERIVED_STAMPS_TO_STOP) {
      this.stampsDerived = true;
      this.lastStamp = undefined;
      this.audioClock.dropStamps();
      return;
    }
    this.audioClock.addOutputTimestamp(stamp);
  }

  /**
   * The audio/performance clock pair to map with (schedule.js's outputTimestamp):
   * audioclock.js's fit once it has readings, else the browser's report as
   * before (pickOutputTimestamp). Also {source, latencyS, latencyKnown, residualMs}.
   */
  clockMapping() {
    const context = this.context;
    const { baseLatency, outputLatency } = this.latencyReport();
    const fitted = this.audioClock.mapping({ baseLatency, outputLatency });
    if (fitted !== null) return fitted;
    // Before enough readings (the first 200 ms): the last stamp sampled, not a new read.
    const stamp = pickOutputTimestamp(this.lastStamp, context.currentTime, perfNowMs());
    const latencyS = stamp.includesLatency ? 0 : outputLatencyS(baseLatency, outputLatency);
    return {
      contextTime: stamp.contextTime,
      performanceTime: stamp.performanceTime + latencyS * 1000,
      includesLatency: true,
      source: stamp.includesLatency ? 'reported' : 'currentTime',
      latencyS,
      latencyKnown: false,
      residualMs: null,
    };
  }

  /** What the page knows of its audio clock, for window.unisono: {source, latencyS, latencyKnown, residualMs, ...}, or null before the tap. */
  audioClockStatus() {
    if (!this.context) return null;
    const { contextTime, performanceTime, includesLatency, ...status } = this.clockMapping();
    return { ...status, resolutionMs: this.audioClock.resolutionMs };
  }

  /**
   * The participant's latency adjustment (s): applied to the start and to the
   * drift target. A sounding show restarts at once at the right position.
   */
  setManualLatencyS(latencyS) {
    const next = Number.isFinite(latencyS) ? latencyS : 0;
    if (next === this.manualLatencyS) return;
    this.manualLatencyS = next;
    this.restart();
  }

  /** Stop the sources and start again where the show is now (a late start). */
  restart() {
    if (this.start === null && !this.sounding) return;
    this.stopSource();
    this.start = null;
    this.update();
    this.onChange();
  }

  /** Resume a context suspended or interrupted (a call, a notification, a tab switch) when phone.js says so. */
  resumeIfNeeded(visible) {
    const context = this.context;
    if (!context || !shouldResume({ unlockedOnce: true, contextState: context.state, visible })) return;
    Promise.resolve(context.resume()).catch((error) => console.warn(`resume: ${error.message}`));
  }

  /** The context's state changed: a show whose audio clock stood still is re-aligned. */
  contextStateChanged() {
    const from = this.contextState;
    const to = this.context.state;
    this.contextState = to;
    if (to === 'running' && from !== null && from !== 'running') this.runningSinceS = this.context.currentTime;
    // The audio clock stood still while performance time ran: its old readings no longer hold.
    if (to !== 'running') {
      this.audioClock.reset();
      this.latencies = null; // a new device may come with it
      this.lastStamp = undefined;
    }
    if (realignAfterStateChange(from, to) && (this.start !== null || this.sounding)) {
      this.realigns += 1;
      this.restart();
    }
    this.update();
    this.onChange();
  }

  /** The drift controller's view for the display: {errorMs, ratePpm, rateEstimatePpm, realigns}. */
  driftStatus() {
    return this.drift.status();
  }

  get loaded() {
    return this.buffer !== null || this.trackReady;
  }

  /** Whether a source (or a chain of them) is playing or scheduled. */
  get sounding() {
    return this.source !== null || (this.track !== null && this.track.chain !== null);
  }

  get unlocked() {
    return this.context !== null && this.context.state === 'running';
  }

  /** The output latency (s) compensated: what the context reports, if plausible, plus the manual adjustment; null before the tap. */
  outputLatencyS() {
    // The browser's report, not the mapping's measured latency: that one moves
    // by microseconds at every reading, and each change of output_latency_us
    // sends a `ready` at once (PROTOCOL.md).
    if (!this.context) return null;
    const { baseLatency, outputLatency } = this.latencyReport();
    return outputLatencyS(baseLatency, outputLatency) + this.manualLatencyS;
  }

  /** The AudioContext's currentTime (s), or null before the tap. */
  audioNowS() {
    return this.context ? this.context.currentTime : null;
  }

  /** Create and resume the AudioContext. Call synchronously inside a click/touch handler (iOS requires it). */
  unlock() {
    if (!this.context) {
      const Context = audioContextClass();
      if (!Context) throw new Error('this browser has no Web Audio');
      this.context = new Context();
      this.contextState = this.context.state;
      this.context.onstatechange = () => this.contextStateChanged();
      this.audioClock.setResolution(perfResolutionMs());
      this.audioClockTimer = setInterval(() => this.sampleAudioClock(), AUDIO_CLOCK_SAMPLE_MS);
    }
    const resumed = this.context.resume();
    // iOS unmutes output only once a sound plays inside the gesture: play one silent sample.
    const silent = this.context.createBuffer(1, 1, this.context.sampleRate);
    const node = this.context.createBufferSource();
    node.buffer = silent;
    node.connect(this.context.destination);
    node.start();
    return Promise.resolve(resumed).then(() => {
      this.update();
      this.onChange();
    });
  }

  /** Download and decode the track at `url` (once per URL). Rejects on a network or decoding failure. */
  async load(url) {
    if (url === this.trackUrl) return;
    this.trackUrl = url;
    try {
      if (isManifestUrl(url)) {
        await this.loadSegmented(url);
        return;
      }
      const response = await fetch(url);
      if (!response.ok) throw new Error(`the track could not be downloaded (HTTP ${response.status})`);
      const bytes = await response.arrayBuffer();
      const Offline = globalThis.OfflineAudioContext ?? globalThis.webkitOfflineAudioContext;
      const decoder = this.context ?? new Offline(1, 1, PRELOAD_SAMPLE_RATE);
      this.buffer = await decodeWith(decoder, bytes);
    } catch (error) {
      this.trackUrl = null; // the next load of this URL tries again
      throw error;
    }
    this.update();
    this.onChange();
  }

  /** A segmented track: the manifest, then its first segments decoded (and more, in the background). */
  async loadSegmented(url) {
    const manifest = await fetchManifest(url);
    const track = new SegmentedTrack(manifest, url, {
      onEnded: () => {
        this.trackEnded = true;
        this.onChange();
      },
      onError: (error) => console.warn(`segment: ${error.message}`),
    });
    await track.prepare(0);
    this.track = track;
    this.trackReady = true;
    this.update();
    this.onChange();
  }

  setSchedule(schedule) {
    this.schedule = schedule;
    this.update();
  }

  setEstimate(estimate) {
    this.estimate = estimate;
    this.update();
  }

  /** Start, move or stop the source so that it matches the schedule. */
  update() {
    const state = this.schedule?.state;
    if (state !== 'scheduled' && state !== 'playing') {
      this.stop();
      return;
    }
    if (!this.context || !this.loaded || !this.estimate || this.context.state !== 'running') return;
    // A new epoch for the same start (scheduled -> playing) keeps the source.
    const sameStart = this.start !== null && this.start.startUs === this.schedule.start_us;
    if (sameStart && this.context.currentTime >= this.start.contextWhen - RESCHEDULE_GUARD_S) return;
    const next = this.compute();
    if (next === null) {
      this.stop();
      return;
    }
    if (this.start === null && next.offsetS > 0 && !this.lateStartAllowed()) return;
    // A source scheduled from the start whose start came within the late
    // margin (a recompute between T - LATE_START_MARGIN_S and the guard) is
    // kept: replacing it by a late start would only add the new mapping's noise.
    if (sameStart && this.start.offsetS === 0 && next.offsetS > 0) return;
    if (sameStart && Math.abs(next.contextWhen - this.start.contextWhen) < RESCHEDULE_THRESHOLD_S && next.offsetS === this.start.offsetS) return;
    this.play(next);
  }

  /** Whether a late start may go ahead now: the estimate is good enough and the audio clock steady, or it has waited long enough. */
  lateStartAllowed() {
    if (this.context.currentTime - this.runningSinceS < AUDIO_SETTLE_S) return false;
    const clock = this.estimate instanceof ClockEstimate ? this.estimate : new ClockEstimate(this.estimate);
    // ... and the audio clock steady: 2 s of readings without a stall in them
    // (audioclock.js's steady). Firefox's clock falls behind in steps for its
    // first seconds on a busy machine: late starts computed 1.2 s in, just
    // after no stall, came out 6-12 ms late in tests/browser/engines.
    const mapping = this.audioClock.mapping({});
    const steady = mapping !== null && mapping.steady;
    if (steady && clock.boundAt(deviceNowUs()) <= LATE_START_MAX_BOUND_US) return true;
    if (this.lateWaitSinceMs === null) this.lateWaitSinceMs = perfNowMs();
    return perfNowMs() - this.lateWaitSinceMs >= LATE_START_MAX_WAIT_MS;
  }

  compute() {
    const context = this.context;
    const mapping = this.clockMapping();
    const start = computeStart({
      schedule: this.schedule,
      estimate: this.estimate,
      deviceNowUs: deviceNowUs(),
      outputTimestamp: mapping,
      timeOriginMs: timeOriginMs(),
      latencyS: 0, // in the mapping
      manualLatencyS: this.manualLatencyS,
      currentTimeS: context.currentTime,
      durationS: this.track ? this.track.durationS : this.buffer.duration,
    });
    // How the start was mapped, for window.unisono and the engine tests.
    return start === null ? null : { ...start, mapping: { source: mapping.source, latencyS: mapping.latencyS, residualMs: mapping.residualMs } };
  }

  play(start) {
    this.stopSource();
    if (this.track) {
      if (!this.track.isReady(start.offsetS, LATE_JOIN_READY_AHEAD_S)) {
        this.start = null;
        this.waitForSegments(start.offsetS);
        return;
      }
      this.drift.start(start.contextWhen, start.offsetS, 1.0);
      this.track.start(this.context, this.context.destination, () => this.drift.segments, start.offsetS);
    } else {
      this.source = this.newSource(start.contextWhen, start.offsetS, 1.0);
      this.drift.start(start.contextWhen, start.offsetS, 1.0);
    }
    this.lastDriftContextS = -Infinity;
    this.lateWaitSinceMs = null;
    this.start = start;
    this.trackEnded = false;
    this.onChange();
  }

  /**
   * A late start inside a segment not decoded yet: decode from there (allowing
   * for the time decoding takes), then compute the start again.
   */
  waitForSegments(positionS) {
    if (this.waitingForPositionS !== null) return;
    this.waitingForPositionS = positionS;
    this.track.prepare(positionS, { readyAheadS: LATE_JOIN_READY_AHEAD_S + 5 })
      .catch((error) => console.warn(`segment: ${error.message}`))
      .finally(() => {
        this.waitingForPositionS = null;
        this.update();
      });
  }

  /** A source playing the track from `offsetS` at audio time `when`, at playbackRate `rate`. */
  newSource(when, offsetS, rate) {
    const source = this.context.createBufferSource();
    source.buffer = this.buffer;
    source.playbackRate.value = rate;
    source.connect(this.context.destination);
    source.onended = () => {
      if (this.source !== source) return;
      this.source = null;
      this.trackEnded = true;
      this.onChange();
    };
    source.start(when, offsetS);
    return source;
  }

  /**
   * Measure how far the audible position is from the schedule and apply the
   * drift controller's decision. Call it often (every redraw): it measures
   * once per DRIFT_INTERVAL_S of audio time, once the track is audible.
   */
  correctDrift() {
    const context = this.context;
    if (this.track) this.track.tick();
    // A late start waiting for a better estimate or its segments is retried
    // here too; and a start not yet audible is recomputed (update() moves it
    // only if it moved by RESCHEDULE_THRESHOLD_S): with no network after the
    // schedule no new estimate triggers that, and a start computed while the
    // audio clock was settling (AUDIO_SETTLE_S) maps ~20 ms off.
    if (context !== null && this.waitingForPositionS === null && (this.start === null || context.currentTime < this.start.contextWhen)) this.update();
    if (!this.sounding || !this.start || !this.estimate || context.state !== 'running') return;
    const nowS = context.currentTime;
    if (nowS < this.start.contextWhen || nowS - this.lastDriftContextS < DRIFT_INTERVAL_S) return;
    this.lastDriftContextS = nowS;
    // The audio time heard at performance time stamp.performanceTime (the
    // mapping holds the output latency); the manual adjustment (Bluetooth the
    // browser does not report) comes on top.
    const stamp = this.clockMapping();
    const latencyS = this.manualLatencyS;
    const heardDeviceUs = (timeOriginMs() + stamp.performanceTime) * 1000;
    const clock = this.estimate instanceof ClockEstimate ? this.estimate : new ClockEstimate(this.estimate);
    const decision = this.drift.measure({
      audibleContextTimeS: stamp.contextTime - latencyS,
      targetPositionS: (clock.deviceToServer(heardDeviceUs) - this.start.startUs) / 1e6,
      contextNowS: nowS,
    });
    if (decision.action === 'rate') {
      if (this.track) {
        this.track.setRate(decision.rate, decision.atContextTimeS);
        this.track.reschedule(decision.atContextTimeS);
      } else {
        this.source.playbackRate.setValueAtTime(decision.rate, decision.atContextTimeS);
      }
    } else if (decision.action === 'realign') {
      this.realign(decision);
    }
  }

  /** Hand over to a new source at the decided instant: the old one stops exactly when the new one starts. */
  realign({ atContextTimeS, positionS, rate }) {
    if (this.track) {
      this.track.stop(atContextTimeS);
      if (positionS >= this.track.durationS) {
        this.trackEnded = true;
      } else {
        this.track.start(this.context, this.context.destination, () => this.drift.segments, positionS);
      }
      this.onChange();
      return;
    }
    const old = this.source;
    old.onended = null;
    old.stop(atContextTimeS);
    if (positionS >= this.buffer.duration) {
      this.source = null;
      this.trackEnded = true;
      this.onChange();
      return;
    }
    this.source = this.newSource(atContextTimeS, positionS, rate);
    old.onended = () => old.disconnect();
    this.onChange();
  }

  stopSource() {
    if (this.track) this.track.stop();
    const source = this.source;
    this.source = null;
    if (source) {
      source.onended = null;
      source.stop();
      source.disconnect();
    }
  }

  stop() {
    const had = this.source !== null || this.start !== null;
    this.stopSource();
    this.start = null;
    this.trackEnded = false;
    if (had) this.onChange();
  }
}
