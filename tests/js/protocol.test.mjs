// Tests of clients/web/js/protocol.js: round trips and every kind of bad frame.
import test from 'node:test';
import assert from 'node:assert/strict';

import {
  decode, encode, ProtocolError, LocalProtocolError, SCHEMAS,
  PARTICIPANT_TO_SERVER, SERVER_TO_PARTICIPANT, ORGANIZER_TO_SERVER, SERVER_TO_ORGANIZER,
  MAX_PARTICIPANT_MESSAGE, MAX_ORGANIZER_MESSAGE,
} from '../../clients/web/js/protocol.js';
import { encode as rawEncode, Encoder } from '../../clients/web/vendor/msgpack/index.mjs';

const ALL_TYPES = [...PARTICIPANT_TO_SERVER, ...SERVER_TO_PARTICIPANT, ...ORGANIZER_TO_SERVER, ...SERVER_TO_ORGANIZER];
const BIG_US = 1_700_000_000_123_456; // a realistic server/device time in µs, above 2^32

const SAMPLES = {
  join: { type: 'join', v: 1, device_id: 'abcDEF12_-xyz', client: 'web/1', lang: 'fr-FR' },
  pong: { type: 'pong', seq: 4294967295, t0_us: BIG_US, t1_us: -BIG_US, t2_us: 9007199254740991 },
  ready: { type: 'ready', loaded: true, unlocked: false, downloaded: 0.25, bound_us: 4100, output_latency_us: -20000, wake_lock: true, visible: false },
  welcome: { type: 'welcome', v: 1, device_id: 'A'.repeat(64), group: 'rouge', track_url: '/tracks/a.mp3', title: 'Théâtre 🎵' },
  show: {
    type: 'show', title: 'Flashmob', when: 'samedi', where: 'place', bring: 'écouteurs', about: 'Une heure.',
    cues: [{ at_us: 0, text: 'Go', colour: '#00ff00', vibrate: [200, 100] }, { at_us: BIG_US, text: '', colour: null, vibrate: null }],
  },
  announcement: { type: 'announcement', text: 'Pluie : sous la halle', at_us: BIG_US },
  announce: { type: 'announce', text: 'Rain: under the market hall' },
  ping: { type: 'ping', seq: 0, t0_us: BIG_US },
  estimate: { type: 'estimate', at_us: BIG_US, offset_us: -123456789, rate_ppm: -12.25, bound_us: 800, bound_growth_ppm: 0.5 },
  schedule: { type: 'schedule', epoch: 3, state: 'scheduled', start_us: BIG_US + 5_000_000 },
  error: { type: 'error', code: 'invalid_state', message: 'cannot start: the show is scheduled; abort first, or reschedule' },
  hello: { type: 'hello', v: 1, token: 'secret-token' },
  start: { type: 'start', lead_ms: 5000, confirm: true },
  abort: { type: 'abort' },
  overview: {
    type: 'overview', epoch: 7, state: 'playing', start_us: BIG_US, server_us: BIG_US + 1, devices: 350,
    groups: { a: 175, b: 175, empty: 0 }, loaded: 300, unlocked: 290, synced: 280,
    status: { title: 'Show', funnel: { connected: 350, ready: 280 }, bounds: { edges_ms: [1, 2.5], counts: [3, 4, 5] } },
  },
};

function everything(data) {
  return decode(data, { accept: ALL_TYPES, maxSize: MAX_ORGANIZER_MESSAGE });
}

function assertCode(fn, code, field) {
  assert.throws(fn, (error) => {
    assert.ok(error instanceof ProtocolError, `expected a ProtocolError, got ${error}`);
    assert.equal(error.code, code, error.message);
    if (field !== undefined) assert.equal(error.field, field);
    return true;
  });
}

/** Raw msgpack bytes of an arbitrary object, bypassing our validation. */
function raw(obj) {
  return rawEncode(obj);
}

test('every message type has a sample', () => {
  assert.deepEqual(Object.keys(SAMPLES).sort(), Object.keys(SCHEMAS).sort());
});

for (const [typeName, sample] of Object.entries(SAMPLES)) {
  test(`${typeName} survives an encode/decode round trip unchanged`, () => {
    const decoded = everything(encode(sample));
    assert.deepEqual({ ...decoded, ...(decoded.groups ? { groups: { ...decoded.groups } } : {}) }, sample);
  });
}

test('join without device_id and client decodes them as nil and the empty default', () => {
  const decoded = decode(raw({ type: 'join', v: 1 }), { accept: PARTICIPANT_TO_SERVER, maxSize: MAX_PARTICIPANT_MESSAGE });
  assert.equal(decoded.device_id, null);
  assert.equal(decoded.client, '');
});

test('schedule with start_us nil is valid when idle', () => {
  const decoded = decode(encode({ type: 'schedule', epoch: 0, state: 'idle', start_us: null }));
  assert.equal(decoded.start_us, null);
  assert.equal(decoded.state, 'idle');
});

test('a float field accepts an integer and a float on the wire', () => {
  const asInt = decode(raw({ type: 'estimate', at_us: 1, offset_us: 2, rate_ppm: 3, bound_us: 4, bound_growth_ppm: 0 }));
  assert.equal(asInt.rate_ppm, 3);
  const floatEncoder = new Encoder({ forceFloat32: false });
  const asFloat = decode(floatEncoder.encode({ type: 'estimate', at_us: 1, offset_us: 2, rate_ppm: 2.5, bound_us: 4, bound_growth_ppm: 0.125 }));
  assert.equal(asFloat.bound_growth_ppm, 0.125);
});

test('64-bit integers at the safe limits decode exactly', () => {
  const decoded = decode(raw({ type: 'ping', seq: 1, t0_us: -9007199254740991 }));
  assert.equal(decoded.t0_us, -9007199254740991);
  assert.equal(typeof decoded.t0_us, 'number');
});

test('an integer beyond 2^53 - 1 is out of range, not rounded', () => {
  const bytes = new Uint8Array([0x83, 0xa4, ...Buffer.from('type'), 0xa4, ...Buffer.from('ping'),
    0xa3, ...Buffer.from('seq'), 0x01, 0xa5, ...Buffer.from('t0_us'), 0xcf, 0x00, 0x20, 0, 0, 0, 0, 0, 0]);
  assertCode(() => decode(bytes), 'invalid_field', 't0_us');
});

test('decoded messages are frozen', () => {
  const decoded = decode(encode(SAMPLES.ping));
  assert.throws(() => { decoded.seq = 5; }, TypeError);
});

// --- malformed frames ---------------------------------------------------------

test('truncated msgpack is malformed', () => {
  const bytes = encode(SAMPLES.ping);
  assertCode(() => decode(bytes.subarray(0, bytes.length - 3)), 'malformed');
});

test('an empty frame is malformed', () => {
  assertCode(() => decode(new Uint8Array(0)), 'malformed');
});

test('bytes after the map are malformed', () => {
  const bytes = encode(SAMPLES.ping);
  const longer = new Uint8Array(bytes.length + 1);
  longer.set(bytes);
  assertCode(() => decode(longer), 'malformed');
});

test('garbage bytes are malformed', () => {
  assertCode(() => decode(new Uint8Array([0xc1, 0xff, 0x00])), 'malformed');
});

test('a msgpack array instead of a map is malformed', () => {
  assertCode(() => decode(raw(['ping', 1, 2])), 'malformed');
});

test('a map with a non-string key is malformed', () => {
  // {1: 2, "type": "ping"}
  const bytes = new Uint8Array([0x82, 0x01, 0x02, 0xa4, ...Buffer.from('type'), 0xa4, ...Buffer.from('ping')]);
  assertCode(() => decode(bytes), 'malformed');
});

test('a missing or non-string type is malformed', () => {
  assertCode(() => decode(raw({ seq: 1, t0_us: 2 })), 'malformed');
  assertCode(() => decode(raw({ type: 7, seq: 1, t0_us: 2 })), 'malformed');
});

test('a text frame is malformed', () => {
  assertCode(() => decode('{"type":"ping"}'), 'malformed');
});

test('an oversize frame is too_big, before any parsing', () => {
  const bytes = new Uint8Array(MAX_PARTICIPANT_MESSAGE + 1);
  assertCode(() => decode(bytes, { accept: PARTICIPANT_TO_SERVER, maxSize: MAX_PARTICIPANT_MESSAGE }), 'too_big');
});

test('an unknown type is unknown_type', () => {
  assertCode(() => decode(raw({ type: 'dance', seq: 1 })), 'unknown_type');
});

test('a known type not allowed on this endpoint is unexpected', () => {
  assertCode(() => decode(encode(SAMPLES.start)), 'unexpected');
});

// --- invalid fields -------------------------------------------------------------

const INVALID = [
  ['unknown field', { ...SAMPLES.ping, extra: 1 }, 'extra'],
  ['missing field', { type: 'ping', seq: 1 }, 't0_us'],
  ['string for an int', { ...SAMPLES.ping, t0_us: '12' }, 't0_us'],
  ['float for an int', { ...SAMPLES.ping, t0_us: 1.5 }, 't0_us'],
  ['bool for an int', { ...SAMPLES.ping, seq: true }, 'seq'],
  ['int for a bool', { type: 'ready', loaded: 1, unlocked: false }, 'loaded'],
  ['nil for a required field', { ...SAMPLES.ping, t0_us: null }, 't0_us'],
  ['seq above 2^32 - 1', { ...SAMPLES.ping, seq: 4294967296 }, 'seq'],
  ['negative seq', { ...SAMPLES.ping, seq: -1 }, 'seq'],
  ['rate_ppm out of range', { ...SAMPLES.estimate, rate_ppm: 10000.5 }, 'rate_ppm'],
  ['negative bound', { ...SAMPLES.estimate, bound_us: -1 }, 'bound_us'],
  ['unknown show state', { ...SAMPLES.schedule, state: 'paused' }, 'state'],
  ['bad device id', { ...SAMPLES.welcome, device_id: 'short' }, 'device_id'],
  ['device id with a newline', { ...SAMPLES.welcome, device_id: 'abcdefgh\n' }, 'device_id'],
  ['over-long title', { ...SAMPLES.welcome, title: 'é'.repeat(201) }, 'title'],
  ['binary for a string', { ...SAMPLES.error, code: new Uint8Array([0x61]) }, 'code'],
  ['array for a string', { ...SAMPLES.error, message: ['a'] }, 'message'],
  ['counts with a negative count', { ...SAMPLES.overview, groups: { a: -1 } }, 'groups'],
  ['counts with a float count', { ...SAMPLES.overview, groups: { a: 1.5 } }, 'groups'],
  ['counts with a long key', { ...SAMPLES.overview, groups: { ['k'.repeat(65)]: 1 } }, 'groups'],
  ['lead_ms under a second', { type: 'start', lead_ms: 999 }, 'lead_ms'],
];

for (const [what, obj, field] of INVALID) {
  test(`${what} is invalid_field naming ${field}`, () => {
    assertCode(() => everything(raw(obj)), 'invalid_field', field);
  });
}

test('a 1.0 float in an int field is a float, not an int', () => {
  // {"type": "ping", "seq": 1, "t0_us": float64 1.0}
  const bytes = new Uint8Array([0x83, 0xa4, ...Buffer.from('type'), 0xa4, ...Buffer.from('ping'),
    0xa3, ...Buffer.from('seq'), 0x01, 0xa5, ...Buffer.from('t0_us'), 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
  assertCode(() => decode(bytes), 'invalid_field', 't0_us');
});

test('a NaN float is invalid', () => {
  const bytes = new Uint8Array([0x86, 0xa4, ...Buffer.from('type'), 0xa8, ...Buffer.from('estimate'),
    0xa5, ...Buffer.from('at_us'), 0x00, 0xa9, ...Buffer.from('offset_us'), 0x00,
    0xa8, ...Buffer.from('rate_ppm'), 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0,
    0xa8, ...Buffer.from('bound_us'), 0x00, 0xb0, ...Buffer.from('bound_growth_ppm'), 0x00]);
  assertCode(() => decode(bytes), 'invalid_field', 'rate_ppm');
});

test('error texts say what was expected and what arrived, not the payload', () => {
  assert.throws(() => decode(raw({ ...SAMPLES.ping, t0_us: 'SECRET' })), (error) => {
    assert.equal(error.message, 'ping.t0_us: expected integer in [-9.0072e+15, 9.0072e+15], found string');
    return true;
  });
  assert.throws(() => decode(raw({ ...SAMPLES.ping, seq: 2 ** 40 })), (error) => {
    assert.equal(error.message, 'ping.seq: expected integer in [0, 4.29497e+09], found 1099511627776 (out of range)');
    return true;
  });
});

test('close codes follow PROTOCOL.md section 6', () => {
  assert.throws(() => decode(new Uint8Array(MAX_ORGANIZER_MESSAGE + 1), { maxSize: MAX_ORGANIZER_MESSAGE }), { closeCode: 1009 });
  assert.throws(() => decode(raw({ type: 'dance' })), { closeCode: 1003 });
  assert.throws(() => decode(encode(SAMPLES.hello)), { closeCode: 1008 });
});

// --- encoding our own messages ----------------------------------------------------

test('encoding an invalid message is a LocalProtocolError', () => {
  assert.throws(() => encode({ type: 'pong', seq: 1, t0_us: 1, t1_us: 1.5, t2_us: 2 }), LocalProtocolError);
  assert.throws(() => encode({ type: 'ready', loaded: 1, unlocked: true }), LocalProtocolError);
  assert.throws(() => encode({ type: 'start', lead_ms: 5000, extra: 1 }), LocalProtocolError);
  assert.throws(() => encode({ type: 'nope' }), LocalProtocolError);
});

test('join encodes an omitted device_id as nil and client as the empty string', () => {
  const decoded = decode(encode({ type: 'join', v: 1 }), { accept: PARTICIPANT_TO_SERVER, maxSize: MAX_PARTICIPANT_MESSAGE });
  assert.equal(decoded.device_id, null);
  assert.equal(decoded.client, '');
});

// --- show: records and ints fields ----------------------------------------------

const SHOW = { type: 'show', title: 'T', when: '', where: '', bring: '', about: '' };

test('a cue without colour and vibrate decodes them as null and encodes them as nil', () => {
  const decoded = everything(raw({ ...SHOW, cues: [{ at_us: 5, text: 'x' }] }));
  assert.deepEqual(decoded.cues, [{ at_us: 5, text: 'x', colour: null, vibrate: null }]);
  assert.deepEqual(everything(encode({ ...SHOW, cues: [{ at_us: 5, text: 'x' }] })).cues, decoded.cues);
});

test('a bad cue names its index and field', () => {
  assertCode(() => everything(raw({ ...SHOW, cues: [{ at_us: 1, text: '' }, { at_us: -1, text: '' }] })), 'invalid_field', 'cues[1].at_us');
  assertCode(() => everything(raw({ ...SHOW, cues: [{ at_us: 1, text: '', vibrate: [1, 'x'] }] })), 'invalid_field', 'cues[0].vibrate');
  assertCode(() => everything(raw({ ...SHOW, cues: [7] })), 'invalid_field', 'cues[0]');
  assertCode(() => everything(raw({ ...SHOW, cues: 7 })), 'invalid_field', 'cues');
});

test('encoding a bad cue is a local error', () => {
  assert.throws(() => encode({ ...SHOW, cues: [{ at_us: 0, text: '', colour: 'red' }] }), LocalProtocolError);
  assert.throws(() => encode({ ...SHOW, cues: [{ at_us: 0, text: '', vibrate: [20000] }] }), LocalProtocolError);
});
