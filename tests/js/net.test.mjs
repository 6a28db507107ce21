// Tests of the pure helpers of clients/web/js/net.js (the socket glue itself runs in the browser tests).
import test from 'node:test';
import assert from 'node:assert/strict';

import { reconnectDelayMs, socketUrl, RECONNECT_CAP_MS } from '../../clients/web/js/net.js';

test('the first reconnect waits 0.5 to 5 s, at random', () => {
  assert.equal(reconnectDelayMs(0, () => 0), 500);
  assert.equal(reconnectDelayMs(0, () => 0.5), 2750);
  assert.ok(reconnectDelayMs(0, () => 0.999999) < 5000);
});

test('each failed attempt doubles the delay, up to 30 s', () => {
  assert.equal(reconnectDelayMs(1, () => 0), 1000);
  assert.equal(reconnectDelayMs(2, () => 0), 2000);
  assert.equal(reconnectDelayMs(3, () => 0.5), 22000);
  assert.equal(reconnectDelayMs(6, () => 0), RECONNECT_CAP_MS);
  assert.equal(reconnectDelayMs(1000, () => 1), RECONNECT_CAP_MS);
});

test('socketUrl uses wss: under https: and ws: otherwise, same host', () => {
  assert.equal(socketUrl({ protocol: 'https:', host: 'show.example:8443' }, '/ws'), 'wss://show.example:8443/ws');
  assert.equal(socketUrl({ protocol: 'http:', host: '127.0.0.1:8080' }, '/ws/organizer'), 'ws://127.0.0.1:8080/ws/organizer');
});
