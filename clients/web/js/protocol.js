/**
 * The Unisono wire protocol, version 1 (protocol/PROTOCOL.md): bytes <-> messages.
 *
 * Pure: no DOM, no WebSocket, no clock. A message is a plain object holding its
 * wire name in `type` and its fields under their wire names, e.g.
 * `{type: 'pong', seq: 3, t0_us: ..., t1_us: ..., t2_us: ...}`. Units are in the
 * names: `*_us` is an integer number of microseconds.
 *
 * Validation mirrors protocol/codec.py field by field, including the
 * msgpack-level distinction between integers and floats (a float is not an
 * int) and between booleans and integers. Decoding raises only ProtocolError
 * (the peer's fault); encoding an invalid message raises LocalProtocolError (our bug).
 */

import { Decoder, Encoder } from '../vendor/msgpack/index.mjs';

export const PROTOCOL_VERSION = 1;

// Integers on the wire stay within what a JavaScript number holds exactly
// (PROTOCOL.md section 1, value types).
export const MAX_SAFE_INT = Number.MAX_SAFE_INTEGER;
export const MIN_SAFE_INT = -Number.MAX_SAFE_INTEGER;
const MAX_SEQ = 2 ** 32 - 1;

// Frame limits of the server's endpoints (PROTOCOL.md section 1, codec.py).
export const MAX_PARTICIPANT_MESSAGE = 1024;
export const MAX_ORGANIZER_MESSAGE = 4096;
// What a client accepts from the server: the largest server message, a show
// with 500 cues of 200 characters (at most 4 bytes each) and 32-step vibration
// patterns, is under 512 KiB; 1 MiB leaves room without unbounded buffering.
export const MAX_SERVER_MESSAGE = 1048576;
// Counts maps (overview.groups) hold at most this many entries (codec.py).
const MAX_COUNTS_ENTRIES = 256;
const MAX_COUNTS_KEY_CHARS = 64;

export const SHOW_STATES = Object.freeze(['idle', 'scheduled', 'playing', 'ended']);
const DEVICE_ID_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;
// Show and cue limits (messages.py MAX_CUES, MAX_CUE_TEXT, MAX_VIBRATE_*).
export const MAX_CUES = 500;
const MAX_CUE_TEXT = 200;
const MAX_VIBRATE_STEPS = 32;
const MAX_VIBRATE_MS = 10000;
const MAX_INFO_TEXT = 200;
const MAX_ABOUT_TEXT = 2000;
const MAX_ANNOUNCEMENT_TEXT = 500;
// ready.output_latency_us bounds (messages.py MAX_LATENCY_US).
export const MAX_LATENCY_US = 10000000;
const COLOUR_PATTERN = /^#[0-9a-fA-F]{6}$/;

// Websocket close codes, RFC 6455 section 7.4.1, as PROTOCOL.md section 6 uses them.
export const CLOSE_CODES = Object.freeze({
  malformed: 1002,
  unknown_type: 1003,
  invalid_field: 1002,
  unsupported_version: 1002,
  unexpected: 1008,
  too_big: 1009,
  not_authorized: 1008,
});

/** The peer sent something the protocol does not allow. `code` is the PROTOCOL.md section 6 identifier. */
export class ProtocolError extends Error {
  constructor(code, reason) {
    super(reason);
    this.name = 'ProtocolError';
    this.code = code;
    this.reason = reason;
    this.closeCode = CLOSE_CODES[code] ?? 1002;
  }
}

/** Our own code tried to encode an invalid message: a bug, never the peer's fault. */
export class LocalProtocolError extends ProtocolError {
  constructor(reason) {
    super('local_error', reason);
    this.name = 'LocalProtocolError';
  }
}

// --- the field table (protocol/messages.py) ----------------------------------

function int(name, low = MIN_SAFE_INT, high = MAX_SAFE_INT, optional = false) {
  return { name, kind: 'int', low, high, optional };
}
function float(name, low, high, optional = false) {
  return { name, kind: 'float', low, high, optional };
}
function str(name, maxChars, { pattern = null, optional = false, fallback } = {}) {
  return { name, kind: 'str', low: 0, high: maxChars, optional, pattern, fallback };
}
function bool(name, optional = false, fallback = undefined) {
  return { name, kind: 'bool', optional, fallback };
}
function showState(name) {
  return { name, kind: 'enum', choices: SHOW_STATES, optional: false };
}
function ints(name, maxItems, low, high, { optional = false } = {}) {
  return { name, kind: 'ints', maxItems, low, high, optional };
}
function records(name, recordName, schema, maxItems) {
  return { name, kind: 'records', recordName, schema, maxItems, optional: false };
}

/** Records nested in messages (`records` fields): their fields, in wire order. */
export const RECORD_SCHEMAS = Object.freeze({
  cue: [
    int('at_us', 0),
    str('text', MAX_CUE_TEXT),
    str('colour', 7, { pattern: COLOUR_PATTERN, optional: true }),
    ints('vibrate', MAX_VIBRATE_STEPS, 0, MAX_VIBRATE_MS, { optional: true }),
  ],
});

/** Every message type's fields, in wire order. `fallback` is the default of an omittable field. */
export const SCHEMAS = Object.freeze({
  // participant -> server
  join: [
    int('v', 0, 65535), str('device_id', 64, { pattern: DEVICE_ID_PATTERN, optional: true }), str('client', 64, { fallback: '' }),
    str('lang', 35, { optional: true }),
  ],
  pong: [int('seq', 0, MAX_SEQ), int('t0_us'), int('t1_us'), int('t2_us')],
  // ready: fields after `unlocked` came later and may be omitted (nil: not reported).
  ready: [
    bool('loaded'), bool('unlocked'), float('downloaded', 0, 1, true), int('bound_us', 0, MAX_SAFE_INT, true),
    int('output_latency_us', -MAX_LATENCY_US, MAX_LATENCY_US, true), bool('wake_lock', true), bool('visible', true),
  ],
  // server -> participant
  welcome: [int('v', 0, 65535), str('device_id', 64, { pattern: DEVICE_ID_PATTERN }), str('group', 64), str('track_url', 1024), str('title', 200)],
  show: [
    str('title', 200), str('when', MAX_INFO_TEXT), str('where', MAX_INFO_TEXT), str('bring', MAX_INFO_TEXT),
    str('about', MAX_ABOUT_TEXT), records('cues', 'cue', RECORD_SCHEMAS.cue, MAX_CUES),
  ],
  announcement: [str('text', MAX_ANNOUNCEMENT_TEXT), int('at_us')],
  ping: [int('seq', 0, MAX_SEQ), int('t0_us')],
  estimate: [int('at_us'), int('offset_us'), float('rate_ppm', -10000, 10000), int('bound_us', 0), float('bound_growth_ppm', 0, 10000)],
  schedule: [int('epoch', 0), showState('state'), int('start_us', MIN_SAFE_INT, MAX_SAFE_INT, true)],
  error: [str('code', 64), str('message', 500)],
  // organizer -> server; lead_ms bounds: at least a second for the schedule to
  // reach every phone, at most a day (messages.py MIN_LEAD_MS, MAX_LEAD_MS)
  hello: [int('v', 0, 65535), str('token', 256)],
  start: [int('lead_ms', 1000, 86400000), bool('confirm', false, false)],
  abort: [],
  announce: [str('text', MAX_ANNOUNCEMENT_TEXT)],
  // server -> organizer
  overview: [
    int('epoch', 0), showState('state'), int('start_us', MIN_SAFE_INT, MAX_SAFE_INT, true), int('server_us'),
    int('devices', 0), { name: 'groups', kind: 'counts', optional: false }, int('loaded', 0), int('unlocked', 0), int('synced', 0),
    // the status document of GET /api/status (server/openapi.py's Status schema)
    { name: 'status', kind: 'map', optional: true },
  ],
});

// Which messages each side may send on each endpoint.
export const PARTICIPANT_TO_SERVER = Object.freeze(['join', 'pong', 'ready']);
export const SERVER_TO_PARTICIPANT = Object.freeze(['welcome', 'show', 'ping', 'estimate', 'schedule', 'announcement', 'error']);
export const ORGANIZER_TO_SERVER = Object.freeze(['hello', 'start', 'abort', 'announce']);
export const SERVER_TO_ORGANIZER = Object.freeze(['overview', 'error']);

// --- decoding ------------------------------------------------------------------

/** A msgpack float as decoded, kept apart from integers until its field is checked. */
class WireFloat {
  constructor(value) {
    this.value = value;
  }
}

/** The vendored decoder, but floats come out wrapped so that `1.0` is not taken for an int. */
class StrictDecoder extends Decoder {
  readF32() {
    return new WireFloat(super.readF32());
  }
  readF64() {
    return new WireFloat(super.readF64());
  }
}

function stringKeysOnly(key) {
  // Like msgpack-python's strict_map_key: map keys must be strings.
  if (typeof key !== 'string') throw new TypeError('map key is not a string');
  return key;
}

const encoder = new Encoder();

/**
 * Parse and validate one frame.
 *
 * `data`: an ArrayBuffer or Uint8Array (a string means a text frame, which is malformed).
 * `accept`: the type names allowed on this endpoint; `maxSize`: the frame limit in bytes.
 * Returns a frozen message object. Throws only ProtocolError with code
 * too_big, malformed, unknown_type, unexpected or invalid_field.
 */
export function decode(data, { accept = SERVER_TO_PARTICIPANT, maxSize = MAX_SERVER_MESSAGE } = {}) {
  if (typeof data === 'string') {
    throw new ProtocolError('malformed', 'text frames are not accepted; send msgpack in binary frames');
  }
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.byteLength > maxSize) {
    throw new ProtocolError('too_big', `message of ${bytes.byteLength} bytes exceeds the limit of ${maxSize} bytes`);
  }
  let obj;
  try {
    obj = new StrictDecoder({
      useBigInt64: true, // 64-bit ints come as BigInt; checked against the safe range below
      mapKeyConverter: stringKeysOnly,
      maxStrLength: maxSize,
      maxBinLength: maxSize,
      maxArrayLength: maxSize,
      maxMapLength: maxSize,
      maxExtLength: maxSize,
    }).decode(bytes);
  } catch (exc) {
    throw new ProtocolError('malformed', `not a msgpack message (${exc?.name ?? 'Error'})`);
  }
  if (kindOf(obj) !== 'map') {
    throw new ProtocolError('malformed', `expected a msgpack map, found ${kindOf(obj)}`);
  }
  const typeName = obj.type;
  if (typeof typeName !== 'string') {
    throw new ProtocolError('malformed', `expected a string 'type' field, found ${kindOf(typeName)}`);
  }
  if (!has(SCHEMAS, typeName)) {
    throw new ProtocolError('unknown_type', `unknown message type '${shorten(typeName)}'`);
  }
  if (!accept.includes(typeName)) {
    throw new ProtocolError('unexpected', `message type '${typeName}' is not allowed on this connection`);
  }
  return build(typeName, obj);
}

function build(typeName, obj) {
  const problem = recordProblem(SCHEMAS[typeName], obj, 'type');
  if (problem !== null) throw invalidField(typeName, ...problem);
  return instance(SCHEMAS[typeName], obj, { type: typeName });
}

/** A frozen plain object of `schema`'s fields from a checked map; missing optional fields are null. */
function instance(schema, obj, start = {}) {
  const result = start;
  for (const spec of schema) {
    if (!has(obj, spec.name)) {
      result[spec.name] = spec.optional ? null : spec.fallback;
    } else if (spec.kind === 'records' && obj[spec.name] !== null) {
      result[spec.name] = Object.freeze(obj[spec.name].map((item) => instance(spec.schema, item)));
    } else {
      result[spec.name] = plain(obj[spec.name]);
    }
  }
  return Object.freeze(result);
}

/** [field path, expected, found] of the first field of `obj` that breaks `schema`, or null (codec.py _record_problem). */
function recordProblem(schema, obj, skipKey = null) {
  for (const key of Object.keys(obj)) {
    if (key !== skipKey && !schema.some((spec) => spec.name === key)) {
      return [shorten(key), 'no such field', 'an unknown field'];
    }
  }
  for (const spec of schema) {
    if (!has(obj, spec.name)) {
      if (spec.optional || spec.fallback !== undefined) continue;
      return [spec.name, describe(spec), 'nothing (missing)'];
    }
    const problem = fieldProblem(spec, obj[spec.name]);
    if (problem !== null) return problem;
  }
  return null;
}

/** [field path, expected, found] if `value` does not fit `spec`, else null; the path is `name[i].sub` inside records. */
function fieldProblem(spec, value) {
  if (spec.kind === 'records' && Array.isArray(value) && value.length <= spec.maxItems) {
    for (let index = 0; index < value.length; index += 1) {
      const item = value[index];
      if (kindOf(item) !== 'map') return [`${spec.name}[${index}]`, `a ${spec.recordName} map`, kindOf(item)];
      const inner = recordProblem(spec.schema, item);
      if (inner !== null) return [`${spec.name}[${index}].${inner[0]}`, inner[1], inner[2]];
    }
    return null;
  }
  const found = check(spec, value);
  return found === null ? null : [spec.name, describe(spec), found];
}

function invalidField(typeName, field, expected, found) {
  const error = new ProtocolError('invalid_field', `${typeName}.${field}: expected ${expected}, found ${found}`);
  error.messageType = typeName;
  error.field = field;
  return error;
}

/** A checked wire value as a plain JS value: unwrapped floats, BigInt as Number. */
function plain(value) {
  if (value instanceof WireFloat) return value.value;
  if (typeof value === 'bigint') return Number(value);
  if (Array.isArray(value)) return Object.freeze(value.map(plain));
  if (kindOf(value) === 'map') {
    const copy = {};
    for (const [key, count] of Object.entries(value)) copy[key] = plain(count);
    return Object.freeze(copy);
  }
  return value;
}

// --- encoding ------------------------------------------------------------------

/**
 * The wire bytes (Uint8Array) of `message`, a plain object with `type` and fields.
 * Omitted optional fields are sent as nil, omitted defaulted fields with their
 * default. Throws LocalProtocolError if the message is not valid.
 */
export function encode(message) {
  const typeName = message?.type;
  if (typeof typeName !== 'string' || !has(SCHEMAS, typeName)) {
    throw new LocalProtocolError(`cannot encode a message of type ${String(typeName)}`);
  }
  const schema = SCHEMAS[typeName];
  for (const key of Object.keys(message)) {
    if (key !== 'type' && !schema.some((spec) => spec.name === key)) {
      throw new LocalProtocolError(`${typeName}.${key}: no such field`);
    }
  }
  const data = { type: typeName };
  for (const spec of schema) {
    let value = message[spec.name];
    if (value === undefined) value = spec.fallback !== undefined ? spec.fallback : null;
    if (spec.kind === 'records' && Array.isArray(value)) value = value.map((item) => withNils(spec.schema, item));
    const problem = fieldProblem(spec, value);
    if (problem !== null) {
      throw new LocalProtocolError(`${typeName}.${problem[0]}: expected ${problem[1]}, found ${problem[2]}`);
    }
    data[spec.name] = value;
  }
  return encoder.encode(data);
}

/** A record's map for the wire: omitted optional fields become nil, as codec.py sends them. */
function withNils(schema, item) {
  if (kindOf(item) !== 'map') return item;
  const copy = { ...item };
  for (const spec of schema) if (copy[spec.name] === undefined && spec.optional) copy[spec.name] = null;
  return copy;
}

// --- field checks (codec.py _check) --------------------------------------------

/** null if `value` fits `spec`, else a short description of what was found (never the raw value of a string). */
function check(spec, value) {
  if (value === null || value === undefined) return spec.optional ? null : 'nil';
  const kind = kindOf(value);
  switch (spec.kind) {
    case 'int':
    case 'float': {
      const isNumber = kind === 'integer' || (spec.kind === 'float' && kind === 'float');
      if (!isNumber) return kind;
      const number = value instanceof WireFloat ? value.value : value;
      if (typeof number === 'number' && !Number.isFinite(number)) return 'a non-finite number';
      if (number >= spec.low && number <= spec.high) return null;
      return `${spec.kind === 'int' ? String(number) : formatG(Number(number))} (out of range)`;
    }
    case 'bool':
      return kind === 'boolean' ? null : kind;
    case 'enum':
      if (kind !== 'string') return kind;
      return spec.choices.includes(value) ? null : 'another string';
    case 'str': {
      if (kind !== 'string') return kind;
      const chars = charCount(value);
      if (chars > spec.high) return `a string of ${chars} characters`;
      if (spec.pattern !== null && !spec.pattern.test(value)) return 'a string that does not match';
      return null;
    }
    case 'counts': {
      if (kind !== 'map') return kind;
      const entries = Object.entries(value);
      if (entries.length > MAX_COUNTS_ENTRIES) return `a map of ${entries.length} entries`;
      for (const [key, count] of entries) {
        if (charCount(key) > MAX_COUNTS_KEY_CHARS) return 'a map with a bad key';
        if (kindOf(count) !== 'integer' || count < 0 || count > MAX_SAFE_INT) return 'a map with a bad count';
      }
      return null;
    }
    case 'map': {
      if (kind !== 'map') return kind;
      const size = Object.keys(value).length;
      return size > MAX_COUNTS_ENTRIES ? `a map of ${size} entries` : null;
    }
    case 'ints':
    case 'records': {
      if (kind !== 'array') return kind;
      if (value.length > spec.maxItems) return `an array of ${value.length} items`;
      if (spec.kind === 'ints') {
        for (const item of value) {
          const itemKind = kindOf(item);
          if (itemKind !== 'integer') return `an array holding a${'aeiou'.includes(itemKind[0]) ? 'n' : ''} ${itemKind}`;
          if (item < spec.low || item > spec.high) return `an array holding ${String(item)} (out of range)`;
        }
      }
      return null; // records: their items are checked by fieldProblem
    }
    default:
      throw new LocalProtocolError(`field kind '${spec.kind}' is not known`);
  }
}

/** The msgpack-level name of a value's type, for error texts (never the value). */
function kindOf(value) {
  if (value === null || value === undefined) return 'nil';
  if (typeof value === 'boolean') return 'boolean';
  if (typeof value === 'bigint') return 'integer';
  // Encoding side: a JS number is an integer when it has no fraction, as the encoder writes it.
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'float';
  if (value instanceof WireFloat) return 'float';
  if (typeof value === 'string') return 'string';
  if (value instanceof Uint8Array) return 'binary';
  if (Array.isArray(value)) return 'array';
  if (Object.getPrototypeOf(value) === Object.prototype) return 'map';
  return 'extension type';
}

/** Human text of what a field expects, worded as codec.py's Field.describe. */
function describe(spec) {
  let text;
  if (spec.kind === 'int' || spec.kind === 'float') {
    text = `${spec.kind === 'int' ? 'integer' : 'number'} in [${formatG(spec.low)}, ${formatG(spec.high)}]`;
  } else if (spec.kind === 'str') {
    text = spec.pattern !== null ? `string matching ${spec.pattern.source.slice(1, -1)}` : `string of at most ${spec.high} characters`;
  } else if (spec.kind === 'enum') {
    text = `one of ${spec.choices.join(', ')}`;
  } else if (spec.kind === 'counts') {
    text = 'map of group name to count';
  } else if (spec.kind === 'ints') {
    text = `array of at most ${spec.maxItems} integers in [${formatG(spec.low)}, ${formatG(spec.high)}]`;
  } else if (spec.kind === 'records') {
    text = `array of at most ${spec.maxItems} ${spec.recordName} maps`;
  } else if (spec.kind === 'map') {
    text = 'map with string keys';
  } else {
    text = 'boolean';
  }
  return text + (spec.optional ? ' or nil' : '');
}

/** Python's `format(x, 'g')`: six significant digits, exponent form outside [1e-4, 1e6). */
function formatG(x) {
  if (x === 0) return '0';
  const [mantissa, exponentText] = x.toExponential(5).split('e');
  const exponent = Number(exponentText);
  if (exponent < -4 || exponent >= 6) {
    const digits = mantissa.replace(/\.?0+$/, '');
    return `${digits}e${exponent < 0 ? '-' : '+'}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  return String(Number(x.toPrecision(6)));
}

/** Length in Unicode code points, as Python's len() counts a str. */
function charCount(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

// Object.hasOwn is missing on Safari before 15.4, which old phones still run.
function has(obj, key) {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

function shorten(text) {
  return charCount(text) <= 32 ? text : `${Array.from(text).slice(0, 32).join('')}...`;
}
