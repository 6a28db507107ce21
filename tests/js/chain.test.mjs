// Tests of clients/web/js/chain.js with a simulated AudioContext: the chain of
// sources, a rate change applied to every source, rescheduling and re-align.
import test from 'node:test';
import assert from 'node:assert/strict';

import { SegmentedTrack } from '../../clients/web/js/chain.js';
import { DriftController } from '../../clients/web/js/drift.js';

const RATE = 48000;
// Four 10 s segments (2 s, 4 s, ... would do as well); head of 3456 frames.
const MANIFEST = {
  format: 'unisono-segments', version: 1, codec: 'mp3', sample_rate: RATE, channels: 1, frames: 4 * 480_000,
  encoder_delay: 576, decoder_delay: 529,
  marker: { frames: 1152, start_hz: 500.0, end_hz: 8000.0, amplitude: 0.5 }, marker_gap: 2304,
  segments: [0, 1, 2, 3].map((i) => ({
    url: `t-${i}.mp3`, first_frame: i * 480_000, frames: 480_000, file_first_frame: Math.max(0, i * 480_000 - 4608),
    file_frames: 480_000 + 4608 * (i === 0 ? 1 : 2), own_offset: 3456 + (i === 0 ? 0 : 4608), padding: 1000, bytes: 1,
  })),
};

/** A simulated AudioContext: its clock is set by the test; nodes record what was asked of them. */
class FakeContext {
  constructor() {
    this.currentTime = 0;
    this.destination = {};
    this.nodes = [];
  }

  createBufferSource() {
    const node = {
      buffer: null,
      playbackRate: { value: 1, events: [], setValueAtTime(value, at) { this.events.push([value, at]); } },
      connect() {},
      disconnect() {},
      start(when, offset, duration) { node.started = { when, offset, duration }; },
      stop(at) { node.stopped = at ?? 'now'; },
      onended: null,
    };
    this.nodes.push(node);
    return node;
  }
}

/** A track whose segments are all decoded, the decoder having put each marker `lead` frames in. */
function decodedTrack(lead = 0) {
  const track = new SegmentedTrack(MANIFEST, 'http://host/tracks/t.json');
  MANIFEST.segments.forEach((_, i) => track.decoded.set(i, { buffer: { index: i }, lead }));
  return track;
}

function live(context) {
  return context.nodes.filter((n) => n.stopped === undefined);
}

test('a chain from the start plays each segment own range back to back', () => {
  const context = new FakeContext();
  const drift = new DriftController();
  drift.start(1.0, 0, 1);
  const track = decodedTrack(1105); // a decoder that trimmed nothing
  context.currentTime = 0.5;
  track.start(context, context.destination, () => drift.segments, 0);
  assert.equal(context.nodes.length, 1);
  // SCHEDULE_AHEAD_S = 10: at 1.5 s the second segment (starting at 11 s) is due too.
  context.currentTime = 1.5;
  track.tick();
  assert.deepEqual(context.nodes.map((n) => n.started), [
    { when: 1, offset: (1105 + 3456) / RATE, duration: 10 },
    { when: 11, offset: (1105 + 8064) / RATE, duration: 10 },
  ]);
  context.currentTime = 12;
  track.tick();
  assert.equal(context.nodes.length, 3);
  assert.deepEqual(context.nodes[2].started, { when: 21, offset: (1105 + 8064) / RATE, duration: 10 });
});

test('a late join 13.25 s in starts segment 1 at its frame 156000, then segment 2 on time', () => {
  const context = new FakeContext();
  context.currentTime = 50;
  const drift = new DriftController();
  drift.start(50.1, 13.25, 1);
  const track = decodedTrack(0);
  track.start(context, context.destination, () => drift.segments, 13.25);
  const [first, second] = context.nodes;
  assert.deepEqual(first.started, { when: 50.1, offset: (8064 + 156_000) / RATE, duration: 324_000 / RATE });
  assert.equal(second.started.when, 50.1 + 324_000 / RATE);
  assert.equal(second.started.offset, 8064 / RATE);
});

test('a rate change reaches every source and moves the ones not yet started', () => {
  const context = new FakeContext();
  const drift = new DriftController();
  drift.start(1.0, 0, 1);
  const track = decodedTrack(0);
  context.currentTime = 0.5;
  track.start(context, context.destination, () => drift.segments, 0);
  context.currentTime = 1.5;
  track.tick();
  assert.equal(context.nodes.length, 2);
  context.currentTime = 5;
  // The drift controller decided 1.0005 from audio time 5.1 (position 4.1 s).
  drift.segments.push({ contextS: 5.1, positionS: 4.1, rate: 1.0005 });
  track.setRate(1.0005, 5.1);
  track.reschedule(5.1);
  const playing = context.nodes[0];
  assert.deepEqual(playing.playbackRate.events, [[1.0005, 5.1]]);
  assert.equal(playing.stopped, undefined);
  // The second source (start 11 s at rate 1) was replaced by one starting when position 10 s renders now.
  assert.equal(context.nodes[1].stopped, 'now');
  const moved = live(context).filter((n) => n !== playing);
  assert.equal(moved.length, 1);
  const expected = 5.1 + (10 - 4.1) / 1.0005;
  assert.ok(Math.abs(moved[0].started.when - expected) < 1e-12, `${moved[0].started.when} vs ${expected}`);
  assert.equal(moved[0].playbackRate.value, 1.0005);
  // The playing source, at 1.0005 from 5.1, ends exactly there: 1 + 4.1 + (10 - 4.1) / 1.0005.
  assert.ok(Math.abs(1 + 4.1 + (10 - 4.1) / 1.0005 - expected) < 1e-12);
});

test('a re-align ends the chain at the decided instant and starts a new one from the new position', () => {
  const context = new FakeContext();
  const drift = new DriftController();
  drift.start(1.0, 0, 1);
  const track = decodedTrack(0);
  track.start(context, context.destination, () => drift.segments, 0);
  context.currentTime = 15;
  const before = [...context.nodes];
  drift.start(15.1, 14.04, 1.0002); // what the controller does on 'realign'
  track.stop(15.1);
  track.start(context, context.destination, () => drift.segments, 14.04);
  assert.ok(before.every((n) => n.stopped === 15.1));
  const fresh = context.nodes.slice(before.length);
  assert.equal(fresh[0].started.when, 15.1);
  assert.equal(fresh[0].started.offset, (8064 + (14.04 * RATE - 480_000)) / RATE);
  assert.equal(fresh[0].playbackRate.value, 1.0002);
});

test('a source due in the past (its segment decoded late) starts now, skipping what was missed', () => {
  const context = new FakeContext();
  context.currentTime = 3;
  const drift = new DriftController();
  drift.start(1.0, 0, 1);
  const track = decodedTrack(0);
  track.start(context, context.destination, () => drift.segments, 0);
  const first = context.nodes[0].started;
  assert.ok(Math.abs(first.when - 3.005) < 1e-12);
  assert.ok(Math.abs(first.offset - (3456 / RATE + 2.005)) < 1e-12);
  assert.ok(Math.abs(first.duration - (10 - 2.005)) < 1e-12);
});

test('played buffers are released: only the playing segment and those ahead stay decoded', async () => {
  const track = decodedTrack(0);
  await track.prepare(25, { aheadS: 10 });
  assert.deepEqual([...track.decoded.keys()], [2, 3]);
});

test('a source created before a decided rate change takes effect starts at the old rate and switches then', () => {
  const context = new FakeContext();
  context.currentTime = 0.5;
  const drift = new DriftController();
  drift.start(1.0, 0, 1);
  drift.segments.push({ contextS: 12, positionS: 11, rate: 0.9996 }); // decided, from 12 s
  const track = decodedTrack(0);
  track.start(context, context.destination, () => drift.segments, 0);
  context.currentTime = 1.5;
  track.tick();
  const second = context.nodes[1];
  assert.equal(second.started.when, 11);
  assert.equal(second.playbackRate.value, 1);
  assert.deepEqual(second.playbackRate.events, [[0.9996, 12]]);
});

test('a segment that failed to load is retried after a pause, not at every tick', async () => {
  const realFetch = globalThis.fetch;
  let calls = 0;
  globalThis.fetch = async () => {
    calls += 1;
    return { ok: false, status: 503 };
  };
  try {
    const errors = [];
    const track = new SegmentedTrack(MANIFEST, 'http://host/tracks/t.json', { onError: (e) => errors.push(e.message) });
    await assert.rejects(track.prepare(0, { aheadS: 0, readyAheadS: 0 }), /HTTP 503/);
    await track.prepare(0, { aheadS: 0, readyAheadS: 0 });
    assert.equal(calls, 1);
    track.failedAtMs.set(0, Date.now() - 3000);
    await assert.rejects(track.prepare(0, { aheadS: 0, readyAheadS: 0 }), /HTTP 503/);
    assert.equal(calls, 2);
  } finally {
    globalThis.fetch = realFetch;
  }
});
