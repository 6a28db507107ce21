// Tests of clients/web/js/segments.js: which segment plays which frames, and when.
import test from 'node:test';
import assert from 'node:assert/strict';

import {
  checkManifest, contextTimeAt, frameAt, isManifestUrl, locateMarker, markerSamples,
  segmentIndexAt, segmentsToHold, sourceFor, sourcesToStart,
} from '../../clients/web/js/segments.js';

// Three 20 s segments and a 5 s one at 48 kHz, 96 ms of pre/post-roll, as
// server/prepare.py writes them (marker 1152 + gap 2304 = 3456 frames of head).
const MANIFEST = {
  format: 'unisono-segments', version: 1, codec: 'mp3', sample_rate: 48000, channels: 2, frames: 3_120_000,
  encoder_delay: 576, decoder_delay: 529,
  marker: { frames: 1152, start_hz: 500.0, end_hz: 8000.0, amplitude: 0.5 }, marker_gap: 2304,
  segments: [
    { url: 't-00000.mp3', first_frame: 0, frames: 960_000, file_first_frame: 0, file_frames: 964_608, own_offset: 3456, padding: 1344, bytes: 1 },
    { url: 't-00001.mp3', first_frame: 960_000, frames: 960_000, file_first_frame: 955_392, file_frames: 969_216, own_offset: 8064, padding: 1344, bytes: 1 },
    { url: 't-00002.mp3', first_frame: 1_920_000, frames: 960_000, file_first_frame: 1_915_392, file_frames: 969_216, own_offset: 8064, padding: 1344, bytes: 1 },
    { url: 't-00003.mp3', first_frame: 2_880_000, frames: 240_000, file_first_frame: 2_875_392, file_frames: 244_608, own_offset: 8064, padding: 1344, bytes: 1 },
  ],
};

test('isManifestUrl tells a manifest from a single audio file', () => {
  assert.equal(isManifestUrl('/tracks/red.json'), true);
  assert.equal(isManifestUrl('http://host/tracks/red.json?v=2'), true);
  assert.equal(isManifestUrl('/tracks/red.wav'), false);
});

test('checkManifest accepts a tiling manifest and names the first bad field', () => {
  assert.equal(checkManifest(MANIFEST), MANIFEST);
  assert.throws(() => checkManifest({ ...MANIFEST, version: 2 }), /version 1/);
  const gap = structuredClone(MANIFEST);
  gap.segments[2].first_frame += 1;
  assert.throws(() => checkManifest(gap), /segments\[2\]\.first_frame: expected 1920000/);
  assert.throws(() => checkManifest({ ...MANIFEST, frames: 5 }), /frames: expected 3120000/);
  assert.throws(() => checkManifest({ ...MANIFEST, segments: [] }), /non-empty/);
});

test('markerSamples follows prepare.py formula (values from marker_pcm)', () => {
  const marker = markerSamples(MANIFEST);
  assert.equal(marker.length, 1152);
  assert.equal(marker[0], 0);
  assert.ok(Math.abs(marker[100] - -0.035683) < 1e-6, `${marker[100]}`);
  assert.ok(Math.abs(marker[1000] - 0.079801) < 1e-6, `${marker[1000]}`);
});

test('locateMarker finds the marker wherever the decoder put it, through noise', () => {
  const marker = markerSamples(MANIFEST);
  for (const lead of [0, 529, 1105, 2257]) {
    const samples = new Float32Array(8000);
    let seed = 7;
    for (let i = 0; i < samples.length; i += 1) {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      samples[i] = 0.01 * (seed / 2147483648 - 0.5);
    }
    for (let i = 0; i < marker.length; i += 1) samples[lead + i] += marker[i];
    const found = locateMarker(samples, marker);
    assert.equal(found.lead, lead);
    assert.ok(found.score > 0.99, `${found.score}`);
  }
  assert.throws(() => locateMarker(new Float32Array(8000), marker), /no marker/);
});

test('segmentIndexAt finds the segment holding a frame, -1 outside the track', () => {
  assert.equal(segmentIndexAt(MANIFEST, 0), 0);
  assert.equal(segmentIndexAt(MANIFEST, 959_999), 0);
  assert.equal(segmentIndexAt(MANIFEST, 960_000), 1);
  assert.equal(segmentIndexAt(MANIFEST, 3_119_999), 3);
  assert.equal(segmentIndexAt(MANIFEST, 3_120_000), -1);
  assert.equal(segmentIndexAt(MANIFEST, -1), -1);
});

test('a late join at 47.5 s starts inside segment 2 at its frame 360000', () => {
  const source = sourceFor(MANIFEST, 2, 47.5);
  assert.deepEqual(source, { index: 2, fromFrame: 2_280_000, frames: 600_000, bufferFrame: 8064 + 360_000 });
  // Segments that end before the start play nothing; the next plays whole.
  assert.equal(sourceFor(MANIFEST, 1, 47.5), null);
  assert.deepEqual(sourceFor(MANIFEST, 3, 47.5), { index: 3, fromFrame: 2_880_000, frames: 240_000, bufferFrame: 8064 });
});

test('a position between two frames plays from the frame sounding then', () => {
  assert.equal(frameAt(MANIFEST, 20.0), 960_000);
  assert.equal(frameAt(MANIFEST, 20.0 - 1e-7), 959_999);
  assert.deepEqual(sourceFor(MANIFEST, 0, 20.0 - 1e-7), { index: 0, fromFrame: 959_999, frames: 1, bufferFrame: 3456 + 959_999 });
});

test('segmentsToHold keeps the playing segment and two minutes ahead, none past the end', () => {
  assert.deepEqual(segmentsToHold(MANIFEST, 0), [0, 3]);
  assert.deepEqual(segmentsToHold(MANIFEST, 45, 10), [2, 2]);
  assert.deepEqual(segmentsToHold(MANIFEST, 39.99, 0.02), [1, 2]);
  assert.equal(segmentsToHold(MANIFEST, 65), null);
});

test('contextTimeAt inverts the drift timeline, across a rate change', () => {
  const timeline = [
    { contextS: 100, positionS: 10, rate: 1 },
    { contextS: 110, positionS: 20, rate: 1.0005 },
  ];
  assert.equal(contextTimeAt(timeline, 15), 105);
  assert.ok(Math.abs(contextTimeAt(timeline, 20 + 1.0005 * 20) - 130) < 1e-9);
  assert.throws(() => contextTimeAt([], 1), /no source/);
});

test('sourcesToStart: back to back from the late-join position, within the horizon, stopping at an undecoded one', () => {
  const timeline = [{ contextS: 50, positionS: 47.5, rate: 1 }];
  const all = sourcesToStart({
    manifest: MANIFEST, chainStartS: 47.5, nextIndex: 0, timeline, contextNowS: 49.9, isDecoded: () => true, aheadS: 100,
  });
  assert.deepEqual(all.map((s) => [s.index, s.fromFrame, s.frames, s.whenS]), [
    [2, 2_280_000, 600_000, 50],
    [3, 2_880_000, 240_000, 62.5],
  ]);
  // Each source ends exactly where the next starts: when + frames / rate.
  assert.equal(all[0].whenS + all[0].frames / 48000, all[1].whenS);
  const soon = sourcesToStart({
    manifest: MANIFEST, chainStartS: 47.5, nextIndex: 0, timeline, contextNowS: 49.9, isDecoded: () => true, aheadS: 10,
  });
  assert.deepEqual(soon.map((s) => s.index), [2]);
  const missing = sourcesToStart({
    manifest: MANIFEST, chainStartS: 47.5, nextIndex: 0, timeline, contextNowS: 49.9, isDecoded: (i) => i !== 2, aheadS: 100,
  });
  assert.deepEqual(missing, []);
  const next = sourcesToStart({
    manifest: MANIFEST, chainStartS: 47.5, nextIndex: 3, timeline, contextNowS: 60, isDecoded: () => true,
  });
  assert.deepEqual(next.map((s) => s.index), [3]);
});
