/**
 * Segmented tracks: which segment plays which track frames, where a segment's
 * own audio lies in its decoded buffer, and when each source starts.
 *
 * Pure: no DOM, no fetch, no AudioContext; buffers come in as Float32Arrays
 * and times as numbers. The manifest is the JSON `unisono prepare` writes
 * (server/prepare.py documents every field): segments tile the track's frames
 * [0, frames) back to back; segment i's own frames are track frames
 * [first_frame, first_frame + frames), and they start `own_offset` frames
 * after the marker's first frame in the decoded file, wherever the browser's
 * decoder put the marker (it trims the MP3's priming exactly, partly or not at
 * all): locateMarker finds it.
 *
 * Units, by suffix: *Frame / *Frames at the manifest's sample_rate; *S seconds;
 * context* the AudioContext's clock.
 */

export const MANIFEST_FORMAT = 'unisono-segments';
export const MANIFEST_VERSION = 1;
// The marker is searched for in this many frames after the decoded buffer's
// start: an MP3 decoder that trims nothing puts it encoder_delay (576) +
// decoder_delay (529) frames in, + 1152 if it decodes the LAME tag frame as
// silence; 4096 leaves room for both and for any other priming up to ~85 ms.
export const MARKER_SEARCH_FRAMES = 4096;
// A normalised correlation peak below this is not the marker (a clean one
// through 96 kbps MP3 scores > 0.99).
export const MIN_MARKER_SCORE = 0.5;
// How much decoded audio to hold ahead of the playing position: the brief's
// "about two minutes" (20 s segments: at most 7 buffers, ~54 MB stereo at 48 kHz).
export const DECODE_AHEAD_S = 120;
// Sources are created this far ahead of the audio clock: far enough that a
// main thread throttled to one timer a second still keeps the chain fed,
// near enough that few sources need rescheduling after a rate change.
export const SCHEDULE_AHEAD_S = 10;

/** True when `url` names a segment manifest rather than a single audio file. */
export function isManifestUrl(url) {
  return new URL(url, 'http://x/').pathname.endsWith('.json');
}

function wholeNumber(name, value, minimum = 0) {
  if (!Number.isInteger(value) || value < minimum) {
    throw new RangeError(`manifest ${name}: expected an integer >= ${minimum}, found ${JSON.stringify(value)}`);
  }
  return value;
}

/**
 * The manifest checked: right format and version, every count an integer,
 * segments tiling [0, frames). Throws RangeError naming the first bad field.
 */
export function checkManifest(manifest) {
  if (manifest?.format !== MANIFEST_FORMAT || manifest?.version !== MANIFEST_VERSION) {
    throw new RangeError(`manifest: expected format ${MANIFEST_FORMAT} version ${MANIFEST_VERSION}, found ${manifest?.format} ${manifest?.version}`);
  }
  wholeNumber('sample_rate', manifest.sample_rate, 8000);
  wholeNumber('channels', manifest.channels, 1);
  wholeNumber('frames', manifest.frames, 1);
  const marker = manifest.marker;
  wholeNumber('marker.frames', marker?.frames, 2);
  if (![marker.start_hz, marker.end_hz, marker.amplitude].every(Number.isFinite)) {
    throw new RangeError('manifest marker: expected finite start_hz, end_hz and amplitude');
  }
  if (!Array.isArray(manifest.segments) || manifest.segments.length === 0) {
    throw new RangeError('manifest segments: expected a non-empty list');
  }
  let next = 0;
  manifest.segments.forEach((segment, i) => {
    if (typeof segment.url !== 'string' || segment.url === '') throw new RangeError(`manifest segments[${i}].url: expected a string`);
    for (const key of ['first_frame', 'frames', 'own_offset']) wholeNumber(`segments[${i}].${key}`, segment[key], key === 'frames' ? 1 : 0);
    if (segment.first_frame !== next) {
      throw new RangeError(`manifest segments[${i}].first_frame: expected ${next} (segments tile the track), found ${segment.first_frame}`);
    }
    next += segment.frames;
  });
  if (next !== manifest.frames) throw new RangeError(`manifest frames: expected ${next} (the segments' sum), found ${manifest.frames}`);
  return manifest;
}

/** The marker's samples (one channel) as server/prepare.py's formula defines them. */
export function markerSamples(manifest) {
  const { frames, start_hz: startHz, end_hz: endHz, amplitude } = manifest.marker;
  const rate = manifest.sample_rate;
  const out = new Float32Array(frames);
  for (let i = 0; i < frames; i += 1) {
    const phase = (2 * Math.PI * (startHz * i + ((endHz - startHz) * i * i) / (2 * frames))) / rate;
    const hann = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (frames - 1));
    out[i] = amplitude * hann * Math.sin(phase);
  }
  return out;
}

/**
 * Where the marker starts in `samples` (a decoded channel): {lead, score}, the
 * lag in [0, searchFrames] with the highest normalised correlation, and that
 * correlation (1 = identical shape). Throws RangeError when the best score is
 * below MIN_MARKER_SCORE: the buffer is not a segment of this manifest.
 */
export function locateMarker(samples, marker, searchFrames = MARKER_SEARCH_FRAMES) {
  let markerEnergy = 0;
  for (let i = 0; i < marker.length; i += 1) markerEnergy += marker[i] * marker[i];
  const lastLag = Math.min(searchFrames, samples.length - marker.length);
  let best = { lead: 0, score: -Infinity };
  for (let lag = 0; lag <= lastLag; lag += 1) {
    let dot = 0;
    let energy = 0;
    for (let i = 0; i < marker.length; i += 1) {
      const s = samples[lag + i];
      dot += s * marker[i];
      energy += s * s;
    }
    const score = energy > 0 ? dot / Math.sqrt(energy * markerEnergy) : 0;
    if (score > best.score) best = { lead: lag, score };
  }
  if (!(best.score >= MIN_MARKER_SCORE)) {
    throw new RangeError(`segment: no marker in the first ${searchFrames} frames (best correlation ${best.score.toFixed(3)})`);
  }
  return best;
}

/** Index of the segment holding track frame `frame`, or -1 outside [0, frames). */
export function segmentIndexAt(manifest, frame) {
  const segments = manifest.segments;
  if (!(frame >= 0) || frame >= manifest.frames) return -1;
  let low = 0;
  let high = segments.length - 1;
  while (low < high) {
    const mid = (low + high + 1) >> 1;
    if (segments[mid].first_frame <= frame) low = mid;
    else high = mid - 1;
  }
  return low;
}

/** The track frame (integer) at track position `positionS`: the frame sounding then. */
export function frameAt(manifest, positionS) {
  return Math.floor(positionS * manifest.sample_rate + 1e-9);
}

/**
 * Indices of the segments to hold decoded at track position `positionS`: the
 * one playing and those up to `aheadS` later, as [first, last] (inclusive),
 * or null when the position is past the end.
 */
export function segmentsToHold(manifest, positionS, aheadS = DECODE_AHEAD_S) {
  const first = segmentIndexAt(manifest, Math.max(0, frameAt(manifest, positionS)));
  if (first < 0) return null;
  let last = segmentIndexAt(manifest, frameAt(manifest, positionS + aheadS));
  if (last < 0) last = manifest.segments.length - 1;
  return [first, last];
}

/**
 * The source that plays segment `index` in a chain that starts at track
 * position `chainStartS`: {index, fromFrame, frames, bufferFrame}. It plays
 * track frames [fromFrame, fromFrame + frames), taken from the decoded buffer
 * at frame bufferFrame + (lead found by locateMarker). The chain's first
 * segment starts inside its own range, at the start position's frame; later
 * ones play their whole own range. Null when the segment ends before the start.
 */
export function sourceFor(manifest, index, chainStartS) {
  const segment = manifest.segments[index];
  const startFrame = Math.max(0, frameAt(manifest, chainStartS));
  const end = segment.first_frame + segment.frames;
  if (end <= startFrame) return null;
  const fromFrame = Math.max(segment.first_frame, startFrame);
  return { index, fromFrame, frames: end - fromFrame, bufferFrame: segment.own_offset + (fromFrame - segment.first_frame) };
}

/**
 * The audio time (s) at which track position `positionS` renders, given the
 * drift controller's rate timeline (its `segments`: from contextS on, position
 * = positionS + (c - contextS) * rate): the inverse of positionAt.
 */
export function contextTimeAt(timeline, positionS) {
  if (timeline.length === 0) throw new RangeError('contextTimeAt: no source started');
  let i = timeline.length - 1;
  while (i > 0 && timeline[i].positionS > positionS) i -= 1;
  const piece = timeline[i];
  return piece.contextS + (positionS - piece.positionS) / piece.rate;
}

/**
 * The sources to create now: for a chain started at track position
 * `chainStartS` whose sources for segments below `nextIndex` already exist,
 * those whose start (by `timeline`) is before contextNowS + aheadS and whose
 * segment is decoded (`isDecoded(index)`), in order, stopping at the first
 * one not decoded. Each is sourceFor()'s result plus `whenS` (its start on
 * the audio clock).
 */
export function sourcesToStart({ manifest, chainStartS, nextIndex, timeline, contextNowS, isDecoded, aheadS = SCHEDULE_AHEAD_S }) {
  const out = [];
  const rate = manifest.sample_rate;
  for (let index = nextIndex; index < manifest.segments.length; index += 1) {
    const source = sourceFor(manifest, index, chainStartS);
    if (source === null) continue;
    const whenS = contextTimeAt(timeline, source.fromFrame / rate);
    if (whenS > contextNowS + aheadS || !isDecoded(index)) break;
    out.push({ ...source, whenS });
  }
  return out;
}
