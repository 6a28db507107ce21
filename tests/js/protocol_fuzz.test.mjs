// Seeded fuzzing of clients/web/js/protocol.js's decoder: mutated valid frames
// decode to a message that re-encodes to the same bytes, or throw a
// ProtocolError with a documented code; nothing else, never a TypeError.
import test from 'node:test';
import assert from 'node:assert/strict';

import {
  decode, encode, ProtocolError, SERVER_TO_PARTICIPANT, SERVER_TO_ORGANIZER, MAX_SERVER_MESSAGE,
} from '../../clients/web/js/protocol.js';

const DOCUMENTED = new Set(['malformed', 'unknown_type', 'invalid_field', 'unexpected', 'too_big']);
const BIG_US = 1_700_000_000_123_456;
const SEEDS = [
  { type: 'welcome', v: 1, device_id: 'A'.repeat(22), group: 'red', track_url: '/tracks/red.json', title: 'Théâtre' },
  { type: 'show', title: 'F', when: 'w', where: 'p', bring: 'b', about: 'a', cues: [{ at_us: 0, text: 'Go', colour: '#00ff00', vibrate: [200, 100] }] },
  { type: 'ping', seq: 4294967295, t0_us: BIG_US },
  { type: 'estimate', at_us: BIG_US, offset_us: -123456789, rate_ppm: -12.25, bound_us: 800, bound_growth_ppm: 0.5 },
  { type: 'schedule', epoch: 3, state: 'scheduled', start_us: BIG_US },
  { type: 'announcement', text: 'Pluie', at_us: BIG_US },
  { type: 'error', code: 'timeout', message: 'no message within 30 s of connecting' },
  { type: 'overview', epoch: 1, state: 'idle', start_us: null, server_us: BIG_US, devices: 2, groups: { a: 1 }, loaded: 1, unlocked: 1, synced: 1, status: { x: [1, 2.5] } },
].map((message) => encode(message));
const INTERESTING = [0x00, 0x7f, 0x80, 0xff, 0xc0, 0xc1, 0xc2, 0xc3, 0xca, 0xcb, 0xcf, 0xd3, 0xd9, 0xdc, 0xde, 0xdf, 0x8f, 0x9f, 0xbf, 0xd4, 0xc7];

/** A small seeded generator (mulberry32), so a failure replays. */
function rng(seed) {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * n | 0;
  };
}

function mutate(bytes, next) {
  let out = Array.from(bytes);
  for (let k = 1 + next(4); k > 0; k -= 1) {
    const at = next(out.length + 1);
    switch (next(5)) {
      case 0: if (out.length) out[next(out.length)] ^= 1 << next(8); break;
      case 1: if (out.length) out[next(out.length)] = INTERESTING[next(INTERESTING.length)]; break;
      case 2: out.splice(at, 0, ...Array.from({ length: 1 + next(8) }, () => next(256))); break;
      case 3: out.splice(at, 1 + next(16)); break;
      default: out = out.slice(0, at);
    }
  }
  return Uint8Array.from(out);
}

function outcome(data, accept) {
  try {
    const message = decode(data, { accept, maxSize: MAX_SERVER_MESSAGE });
    const again = encode(message);
    assert.deepEqual(encode(decode(again, { accept, maxSize: MAX_SERVER_MESSAGE })), again);
    return 'ok';
  } catch (error) {
    if (error instanceof assert.AssertionError) throw error;
    assert.ok(error instanceof ProtocolError, `not a ProtocolError: ${error?.stack ?? error}`);
    assert.ok(DOCUMENTED.has(error.code), `undocumented code ${error.code}`);
    return error.code;
  }
}

test('mutated valid frames decode or throw only documented ProtocolErrors', () => {
  const next = rng(20261203);
  const seen = new Map();
  for (let i = 0; i < 20000; i += 1) {
    const data = mutate(SEEDS[next(SEEDS.length)], next);
    for (const accept of [SERVER_TO_PARTICIPANT, SERVER_TO_ORGANIZER]) {
      const kind = outcome(data, accept);
      seen.set(kind, (seen.get(kind) ?? 0) + 1);
    }
  }
  // The mutations reached past the first parse: valid messages and field-level refusals both occur.
  assert.ok(seen.get('ok') > 0 && seen.get('invalid_field') > 0 && seen.get('malformed') > 0, JSON.stringify([...seen]));
});

test('random bytes decode or throw only documented ProtocolErrors', () => {
  const next = rng(7);
  for (let i = 0; i < 5000; i += 1) {
    const data = Uint8Array.from({ length: next(64) }, () => next(256));
    outcome(data, SERVER_TO_PARTICIPANT);
  }
});
