// Tests of clients/web/js/phone.js: resume, re-align, wake lock and the manual latency, from plain facts.
import test from 'node:test';
import assert from 'node:assert/strict';

import {
  shouldResume, realignAfterStateChange, wakeLockWanted, clampManualLatencyMs, loadManualLatencyMs,
  saveManualLatencyMs, LATENCY_KEY, MAX_MANUAL_LATENCY_MS, MIN_MANUAL_LATENCY_MS,
} from '../../clients/web/js/phone.js';

test('a suspended or interrupted context is resumed once unlocked and visible, not before', () => {
  assert.equal(shouldResume({ unlockedOnce: true, contextState: 'interrupted', visible: true }), true);
  assert.equal(shouldResume({ unlockedOnce: true, contextState: 'suspended', visible: true }), true);
  assert.equal(shouldResume({ unlockedOnce: true, contextState: 'suspended', visible: false }), false);
  assert.equal(shouldResume({ unlockedOnce: false, contextState: 'suspended', visible: true }), false);
  assert.equal(shouldResume({ unlockedOnce: true, contextState: 'running', visible: true }), false);
  assert.equal(shouldResume({ unlockedOnce: true, contextState: 'closed', visible: true }), false);
});

test('coming back to running after a suspension or interruption re-aligns; other changes do not', () => {
  assert.equal(realignAfterStateChange('suspended', 'running'), true);
  assert.equal(realignAfterStateChange('interrupted', 'running'), true);
  assert.equal(realignAfterStateChange('running', 'running'), false);
  assert.equal(realignAfterStateChange('running', 'suspended'), false);
  assert.equal(realignAfterStateChange('suspended', 'closed'), false);
});

test('the wake lock is wanted during the show while visible', () => {
  assert.equal(wakeLockWanted({ state: 'scheduled', visible: true }), true);
  assert.equal(wakeLockWanted({ state: 'playing', visible: true }), true);
  assert.equal(wakeLockWanted({ state: 'playing', visible: false }), false);
  for (const state of ['connecting', 'joined', 'loaded', 'unlocked', 'idle', 'ended', 'error']) {
    assert.equal(wakeLockWanted({ state, visible: true }), false, state);
  }
});

test('the manual latency is a whole number of ms within its range; junk is 0', () => {
  assert.equal(clampManualLatencyMs('200'), 200);
  assert.equal(clampManualLatencyMs(199.6), 200);
  assert.equal(clampManualLatencyMs(-0.2), 0);
  assert.ok(!Object.is(clampManualLatencyMs(-0.2), -0));
  assert.equal(clampManualLatencyMs(99999), MAX_MANUAL_LATENCY_MS);
  assert.equal(clampManualLatencyMs(-99999), MIN_MANUAL_LATENCY_MS);
  for (const junk of ['', 'abc', NaN, Infinity, null, undefined, {}]) assert.equal(clampManualLatencyMs(junk), 0, String(junk));
});

test('the manual latency is kept per device in storage', () => {
  const items = new Map();
  const storage = { getItem: (k) => items.get(k) ?? null, setItem: (k, v) => items.set(k, String(v)) };
  assert.equal(loadManualLatencyMs(storage), 0);
  assert.equal(saveManualLatencyMs(storage, '215'), 215);
  assert.equal(items.get(LATENCY_KEY), '215');
  assert.equal(loadManualLatencyMs(storage), 215);
  assert.equal(loadManualLatencyMs({ getItem() { throw new Error('denied'); } }), 0);
  assert.equal(saveManualLatencyMs({ setItem() { throw new Error('quota'); } }, 50), 50);
});
