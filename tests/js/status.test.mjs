// Tests of clients/web/js/status.js: the participant's state and texts.
import test from 'node:test';
import assert from 'node:assert/strict';

import { participantState, syncText, countdownText, pageLanguage, TEXTS } from '../../clients/web/js/status.js';

const JOINED = { error: null, joined: true, loaded: true, unlocked: true, schedule: { epoch: 0, state: 'idle', start_us: null }, everStarted: false, start: null, audioNowS: 3, trackEnded: false };
const START = { epoch: 1, startUs: 9, contextWhen: 9.96, offsetS: 0, audibleContextTime: 10, deviceStartUs: 5 };

test('the readiness ladder before any start: connecting, joined, loaded, unlocked', () => {
  assert.equal(participantState({ ...JOINED, joined: false }), 'connecting');
  assert.equal(participantState({ ...JOINED, loaded: false, unlocked: false }), 'joined');
  assert.equal(participantState({ ...JOINED, unlocked: false }), 'loaded');
  assert.equal(participantState(JOINED), 'unlocked');
});

test('a scheduled start is scheduled until its audible time, then playing', () => {
  const scheduled = { ...JOINED, schedule: { epoch: 1, state: 'scheduled', start_us: 9 }, everStarted: true, start: START };
  assert.equal(participantState({ ...scheduled, audioNowS: 9.99 }), 'scheduled');
  assert.equal(participantState({ ...scheduled, audioNowS: 10 }), 'playing');
  assert.equal(participantState({ ...scheduled, start: null, audioNowS: null }), 'scheduled');
});

test('idle after an abort, ended when the show or the track ends, error above all', () => {
  assert.equal(participantState({ ...JOINED, everStarted: true }), 'idle');
  assert.equal(participantState({ ...JOINED, schedule: { epoch: 3, state: 'ended', start_us: 9 } }), 'ended');
  assert.equal(participantState({ ...JOINED, schedule: { epoch: 2, state: 'playing', start_us: 9 }, start: START, audioNowS: 20, trackEnded: true }), 'ended');
  assert.equal(participantState({ ...JOINED, error: 'boom' }), 'error');
});

test('syncText shows the bound in whole milliseconds, synced only within 10 ms', () => {
  assert.equal(syncText(null), 'syncing…');
  assert.equal(syncText(2600), 'synced ±3 ms');
  assert.equal(syncText(400), 'synced ±<1 ms');
  assert.equal(syncText(10000), 'synced ±10 ms');
  assert.equal(syncText(25000), 'syncing… ±25 ms');
});

test('countdownText rounds up to whole seconds and never goes negative', () => {
  assert.equal(countdownText(4.2), '0:05');
  assert.equal(countdownText(720), '12:00');
  assert.equal(countdownText(3723), '1:02:03');
  assert.equal(countdownText(-3), '0:00');
});

test('pageLanguage: French for fr tags, English otherwise', () => {
  assert.deepEqual(['fr', 'fr-FR', 'FR_ca', 'en-US', 'de', '', null, undefined].map(pageLanguage), ['fr', 'fr', 'fr', 'en', 'en', 'en', 'en', 'en']);
});

test('both languages have every text, and a status text for every state', () => {
  assert.deepEqual(Object.keys(TEXTS.fr).sort(), Object.keys(TEXTS.en).sort());
  assert.deepEqual(Object.keys(TEXTS.fr.status).sort(), Object.keys(TEXTS.en.status).sort());
  for (const state of ['connecting', 'joined', 'loaded', 'unlocked', 'scheduled', 'playing', 'idle', 'ended', 'error']) {
    assert.ok(TEXTS.en.status[state] && TEXTS.fr.status[state], state);
  }
});
