/**
 * Audio glue for segmented tracks: fetch and decode the segments segments.js
 * asks for, locate each one's own audio, and play them as a chain of
 * AudioBufferSourceNodes back to back on the audio clock. Decisions (which
 * segment, which frames, when) are segments.js's; this file does the I/O.
 *
 * Segments are decoded at the manifest's sample rate (an OfflineAudioContext
 * of that rate decodes without resampling), so frame arithmetic is exact; a
 * context running at another rate resamples each source as it plays.
 */

import {
  checkManifest, contextTimeAt, locateMarker, markerSamples, segmentsToHold, sourcesToStart,
} from './segments.js';

/** decodeAudioData in its callback form, which old Safari requires, as a promise. */
export function decodeWith(context, bytes) {
  return new Promise((resolve, reject) => {
    const result = context.decodeAudioData(bytes, resolve, reject);
    if (result && typeof result.then === 'function') result.then(resolve, reject);
  });
}

// A segment whose download or decoding failed is tried again after this
// (a crowd's network comes and goes), not at every tick.
const LOAD_RETRY_MS = 2000;

function offlineContextClass() {
  return globalThis.OfflineAudioContext ?? globalThis.webkitOfflineAudioContext;
}

/** Fetch and check the manifest at `url`; segment URLs resolve against it. */
export async function fetchManifest(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`the track could not be downloaded (HTTP ${response.status})`);
  return checkManifest(await response.json());
}

/**
 * One segmented track: holds the decoded segments around the playing
 * position and the chain of sources playing them.
 *
 * start(context, destination, timeline, chainStartS) begins a chain at track
 * position chainStartS, positioned on the audio clock and given its rates by
 * `timeline()` (the drift controller's rate timeline, read live); tick()
 * creates the next sources and fetches ahead; setRate() applies a rate to
 * every source;
 * reschedule() moves the not-yet-started sources after a rate change;
 * stop(atS) ends the chain. onEnded() is called when the last source ends.
 */
export class SegmentedTrack {
  constructor(manifest, manifestUrl, { onEnded = () => {}, onError = () => {} } = {}) {
    this.manifest = manifest;
    this.baseUrl = new URL(manifestUrl, globalThis.location?.href).href; // segment urls are relative to it
    this.onEnded = onEnded;
    this.onError = onError;
    this.marker = markerSamples(manifest);
    this.decoded = new Map(); // index -> {buffer, lead}
    this.loading = new Map(); // index -> promise
    this.failedAtMs = new Map(); // index -> Date.now() of its last failed load: retried after LOAD_RETRY_MS
    this.decoder = null;
    this.chain = null; // {context, destination, timeline, chainStartS, nextIndex, sources: [{node, index, whenS}]}
  }

  get durationS() {
    return this.manifest.frames / this.manifest.sample_rate;
  }

  /** Whether the segments from track position positionS to aheadS later are decoded. */
  isReady(positionS, aheadS = 0) {
    const range = segmentsToHold(this.manifest, positionS, aheadS);
    if (range === null) return true;
    for (let i = range[0]; i <= range[1]; i += 1) if (!this.decoded.has(i)) return false;
    return true;
  }

  /**
   * Fetch and decode, in order, the segments to hold at track position
   * positionS (aheadS ahead), and release the others. Resolves when the
   * segments up to `readyAheadS` past positionS are decoded.
   */
  async prepare(positionS, { aheadS, readyAheadS = 0 } = {}) {
    const range = segmentsToHold(this.manifest, positionS, aheadS);
    if (range === null) return;
    for (const index of [...this.decoded.keys()]) {
      if (index < range[0] || index > range[1]) this.decoded.delete(index);
    }
    const ready = segmentsToHold(this.manifest, positionS, readyAheadS);
    let readyPromise = null;
    let previous = Promise.resolve();
    for (let i = range[0]; i <= range[1]; i += 1) {
      previous = this.load(i, previous);
      if (ready !== null && i === ready[1]) readyPromise = previous;
    }
    previous.catch((error) => this.onError(error));
    await readyPromise;
  }

  /** Segment `index` decoded, after `after` (segments are fetched one at a time, in order). */
  load(index, after) {
    if (this.decoded.has(index)) return after;
    if (this.loading.has(index)) return this.loading.get(index);
    const failedAtMs = this.failedAtMs.get(index);
    if (failedAtMs !== undefined && Date.now() - failedAtMs < LOAD_RETRY_MS) return after;
    const promise = after.catch(() => {}).then(async () => {
      const segment = this.manifest.segments[index];
      const response = await fetch(new URL(segment.url, this.baseUrl).href);
      if (!response.ok) throw new Error(`segment ${index} could not be downloaded (HTTP ${response.status})`);
      const bytes = await response.arrayBuffer();
      if (this.decoder === null) {
        const Offline = offlineContextClass();
        this.decoder = new Offline(this.manifest.channels, 1, this.manifest.sample_rate);
      }
      const buffer = await decodeWith(this.decoder, bytes);
      const { lead } = locateMarker(buffer.getChannelData(0), this.marker);
      this.decoded.set(index, { buffer, lead });
      this.failedAtMs.delete(index);
    }).catch((error) => {
      this.failedAtMs.set(index, Date.now());
      throw error;
    }).finally(() => this.loading.delete(index));
    this.loading.set(index, promise);
    return promise;
  }

  /** Begin a chain at track position chainStartS; its first source starts at contextTimeAt(timeline, chainStartS). */
  start(context, destination, timeline, chainStartS) {
    this.stop();
    this.chain = { context, destination, timeline, chainStartS, nextIndex: 0, sources: [] };
    this.tick();
  }

  /** Create the sources due within SCHEDULE_AHEAD_S, release the played ones, fetch ahead. Call often. */
  tick() {
    const chain = this.chain;
    if (chain === null) return;
    const nowS = chain.context.currentTime;
    const due = sourcesToStart({
      manifest: this.manifest,
      chainStartS: chain.chainStartS,
      nextIndex: chain.nextIndex,
      timeline: chain.timeline(),
      contextNowS: nowS,
      isDecoded: (index) => this.decoded.has(index),
    });
    for (const plan of due) {
      chain.sources.push(this.startSource(chain, plan));
      chain.nextIndex = plan.index + 1;
    }
    const positionS = Math.max(chain.chainStartS, this.positionAt(chain, nowS));
    this.prepare(positionS).catch((error) => this.onError(error));
  }

  positionAt(chain, contextS) {
    const timeline = chain.timeline();
    let i = timeline.length - 1;
    while (i > 0 && timeline[i].contextS > contextS) i -= 1;
    const piece = timeline[i];
    return piece.positionS + (contextS - piece.contextS) * piece.rate;
  }

  startSource(chain, plan) {
    const { context, destination } = chain;
    const { buffer, lead } = this.decoded.get(plan.index);
    const sampleRate = this.manifest.sample_rate;
    const node = context.createBufferSource();
    node.buffer = buffer;
    node.connect(destination);
    const entry = { node, index: plan.index, whenS: plan.whenS, plan };
    let whenS = plan.whenS;
    let offsetS = (lead + plan.bufferFrame) / sampleRate;
    let durationS = plan.frames / sampleRate;
    // Too late to start on time (a segment decoded late): start now, skipping what was missed.
    const earliestS = context.currentTime + 0.005;
    if (whenS < earliestS) {
      const missedS = Math.min(durationS, this.positionAt(chain, earliestS) - this.positionAt(chain, whenS));
      offsetS += missedS;
      durationS -= missedS;
      whenS = earliestS;
    }
    node.onended = () => {
      node.disconnect();
      const at = chain.sources.indexOf(entry);
      if (at >= 0) chain.sources.splice(at, 1);
      if (this.chain === chain && plan.index === this.manifest.segments.length - 1) {
        this.chain = null;
        this.onEnded();
      }
    };
    // The rates the timeline holds from this source's start on (a change decided
    // but not yet in force included).
    const timeline = chain.timeline();
    let i = timeline.length - 1;
    while (i > 0 && timeline[i].contextS > whenS) i -= 1;
    node.playbackRate.value = timeline[i].rate;
    for (const piece of timeline.slice(i + 1)) node.playbackRate.setValueAtTime(piece.rate, piece.contextS);
    node.start(whenS, offsetS, Math.max(0, durationS));
    return entry;
  }

  /** playbackRate `rate` from audio time atS on, for every source of the chain. */
  setRate(rate, atS) {
    if (this.chain === null) return;
    for (const { node } of this.chain.sources) node.playbackRate.setValueAtTime(rate, atS);
  }

  /**
   * After a rate change at atS: sources that start after atS were placed by
   * the old timeline; replace them (they have not started) by sources placed
   * by the new one.
   */
  reschedule(atS) {
    const chain = this.chain;
    if (chain === null) return;
    const moved = chain.sources.filter((entry) => entry.whenS > atS);
    if (moved.length === 0) return;
    for (const entry of moved) {
      entry.node.onended = null;
      entry.node.stop();
      entry.node.disconnect();
    }
    chain.sources = chain.sources.filter((entry) => entry.whenS <= atS);
    chain.nextIndex = moved[0].index;
    this.tick();
  }

  /** End the chain at audio time atS (now when omitted). */
  stop(atS) {
    const chain = this.chain;
    this.chain = null;
    if (chain === null) return;
    for (const { node } of chain.sources) {
      node.onended = () => node.disconnect();
      if (atS === undefined) node.stop();
      else node.stop(Math.max(atS, chain.context.currentTime));
    }
  }

  /** The audio time at which track position positionS renders in the current chain (null without one). */
  contextTimeAt(positionS) {
    return this.chain ? contextTimeAt(this.chain.timeline(), positionS) : null;
  }
}
