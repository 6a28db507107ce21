// Tests of the pure helpers of clients/web/js/net.js (the socket glue itself runs in the browser tests).
import test from 'node:test';
import assert from 'node:assert/strict';

import { reconnectDelayMs, socketUrl, RECONNECT_CAP_MS, readyFields, readyDue, READY_MIN_INTERVAL_MS } from '../../clients/web/js/net.js';

test('the first reconnect waits 0.5 to 5 s, at random', () => {
  assert.equal(reconnectDelayMs(0, () => 0), 500);
  assert.equal(reconnectDelayMs(0, () => 0.5), 2750);
  assert.ok(reconnectDelayMs(0, () => 0.999999) < 5000);
});

test('each failed attempt doubles the ceiling, up to 30 s, and the floor stays at 0.5 s', () => {
  assert.equal(reconnectDelayMs(1, () => 1), 10000);
  assert.equal(reconnectDelayMs(2, () => 1), 20000);
  assert.equal(reconnectDelayMs(3, () => 0.5), 500 + 0.5 * 29500);
  assert.equal(reconnectDelayMs(6, () => 1), RECONNECT_CAP_MS);
  assert.equal(reconnectDelayMs(1000, () => 1), RECONNECT_CAP_MS);
  // However many attempts failed, delays stay spread over the whole range.
  for (const attempt of [1, 6, 1000]) assert.equal(reconnectDelayMs(attempt, () => 0), 500);
});

test('socketUrl uses wss: under https: and ws: otherwise, same host', () => {
  assert.equal(socketUrl({ protocol: 'https:', host: 'show.example:8443' }, '/ws'), 'wss://show.example:8443/ws');
  assert.equal(socketUrl({ protocol: 'http:', host: '127.0.0.1:8080' }, '/ws/organizer'), 'ws://127.0.0.1:8080/ws/organizer');
});

test('readyFields rounds numbers, clamps the fraction and turns unknowns into null', () => {
  assert.deepEqual(readyFields({ loaded: true, unlocked: false, downloaded: 1.2, bound_us: 3200.6, output_latency_us: -0.4 }), {
    loaded: true, unlocked: false, downloaded: 1, bound_us: 3201, output_latency_us: 0, wake_lock: null, visible: null,
  });
  assert.deepEqual(readyFields({ downloaded: NaN, bound_us: undefined, wake_lock: 'yes', visible: true }), {
    loaded: false, unlocked: false, downloaded: null, bound_us: null, output_latency_us: null, wake_lock: null, visible: true,
  });
});

test('a ready is due at once for a flag or a whole percent of download, after 5 s for the bound alone', () => {
  const sent = readyFields({ loaded: true, unlocked: false, downloaded: 0.501, bound_us: 3000, output_latency_us: 0, wake_lock: false, visible: true });
  assert.equal(readyDue(null, sent, 0, -Infinity), true);
  assert.equal(readyDue(sent, { ...sent }, 100000, 0), false);
  assert.equal(readyDue(sent, { ...sent, unlocked: true }, 1, 0), true);
  assert.equal(readyDue(sent, { ...sent, visible: false }, 1, 0), true);
  assert.equal(readyDue(sent, { ...sent, downloaded: 0.509 }, 1, 0), false);
  assert.equal(readyDue(sent, { ...sent, downloaded: 0.51 }, 1, 0), true);
  assert.equal(readyDue(sent, { ...sent, bound_us: 3100 }, READY_MIN_INTERVAL_MS - 1, 0), false);
  assert.equal(readyDue(sent, { ...sent, bound_us: 3100 }, READY_MIN_INTERVAL_MS, 0), true);
  assert.equal(readyDue(sent, { ...sent, output_latency_us: 200000 }, 1, 0), true); // a headphone delay: at once
});
