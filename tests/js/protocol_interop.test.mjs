// The JS codec agrees with protocol/codec.py on frames the Python side made
// (fixtures/wire_vectors.json, written by make_wire_vectors.py).
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { decode, encode, ProtocolError, SCHEMAS } from '../../clients/web/js/protocol.js';

const VECTORS = JSON.parse(readFileSync(new URL('./fixtures/wire_vectors.json', import.meta.url), 'utf8'));
const ALL_TYPES = Object.keys(SCHEMAS);
// make_wire_vectors.py MAX_SIZE: big enough for the show vectors.
const MAX_SIZE = 65536;

function decodeAll(bytes) {
  return decode(bytes, { accept: ALL_TYPES, maxSize: MAX_SIZE });
}

// Reasons that name a msgpack library's exception class differ between languages; the code must not.
const REASON_IS_LIBRARY_SPECIFIC = new Set(['malformed']);

for (const vector of VECTORS) {
  const bytes = Uint8Array.from(Buffer.from(vector.hex, 'hex'));
  if (vector.message) {
    test(`${vector.name}: decodes as the Python codec does, and re-encodes to a frame Python accepts`, () => {
      const decoded = decodeAll(bytes);
      assert.deepEqual(JSON.parse(JSON.stringify(decoded)), vector.message);
      assert.deepEqual(JSON.parse(JSON.stringify(decodeAll(encode(decoded)))), vector.message);
    });
  } else {
    test(`${vector.name}: rejected with ${vector.code}, as the Python codec does`, () => {
      assert.throws(() => decodeAll(bytes), (error) => {
        assert.ok(error instanceof ProtocolError);
        assert.equal(error.code, vector.code);
        if (!REASON_IS_LIBRARY_SPECIFIC.has(vector.code)) assert.equal(error.reason, vector.reason);
        return true;
      });
    });
  }
}
