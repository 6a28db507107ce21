// Tests of clients/web/js/console.js: what the organizer console shows and sends.
import test from 'node:test';
import assert from 'node:assert/strict';

import {
  apiOutcome, clockLines, clockPart, controlsFor, countdownLine, formatLead, formatMs, funnelRows,
  histogramBars, leadSeconds, nextLocalTime, readyPercents, rfc3339, TEXTS,
} from '../../clients/web/js/console.js';

const EN = TEXTS.en;
const PARIS_WINTER = () => 60; // CET, UTC+01:00
// Europe/Paris around the 2026-03-29 change: 01:00 UTC is 03:00 CEST.
const PARIS_SPRING = (utcMs) => (utcMs >= Date.UTC(2026, 2, 29, 1) ? 120 : 60);

test('every English text has a French one and the reverse', () => {
  assert.deepEqual(Object.keys(TEXTS.fr).sort(), Object.keys(TEXTS.en).sort());
  assert.deepEqual(Object.keys(TEXTS.fr.stages), Object.keys(TEXTS.en.stages));
});

test('milliseconds and leads read as people say them', () => {
  assert.equal(formatMs(null), '—');
  assert.equal(formatMs(0.04), '<0.1 ms');
  assert.equal(formatMs(3.24), '3.2 ms');
  assert.equal(formatMs(120.4), '120 ms');
  assert.equal(formatLead(1500), '1.5 s');
  assert.equal(formatLead(42_000), '42 s');
  assert.equal(formatLead(125_000), '2 min 5 s');
});

test('the clock part of an RFC 3339 time, empty for anything else', () => {
  assert.equal(clockPart('2026-06-14T18:00:05.123+02:00'), '18:00:05');
  assert.equal(clockPart(undefined), '');
});

test('start from idle or ended, reschedule only when scheduled, abort when scheduled or playing', () => {
  assert.deepEqual(controlsFor('idle'), { start: true, reschedule: false, abort: false });
  assert.deepEqual(controlsFor('scheduled'), { start: false, reschedule: true, abort: true });
  assert.deepEqual(controlsFor('playing'), { start: false, reschedule: false, abort: true });
  assert.deepEqual(controlsFor('ended'), { start: true, reschedule: false, abort: false });
});

test('the countdown counts down while scheduled, up while playing, and is empty otherwise', () => {
  const show = { state: 'scheduled', start_us: 10_000_000 };
  assert.equal(countdownLine(show, 4_500_000, EN), 'starts in 0:06');
  assert.equal(countdownLine({ ...show, state: 'playing' }, 72_000_000, EN), 'playing for 1:02');
  assert.equal(countdownLine({ state: 'idle', start_us: null }, 0, EN), '');
  assert.equal(countdownLine(null, 0, EN), '');
});

test('the funnel has a row per group then the total, with shares of connected', () => {
  const status = {
    groups: {
      red: { connected: 4, downloaded: 3, unlocked: 2, synced: 2, ready: 1 },
      blue: { connected: 0, downloaded: 0, unlocked: 0, synced: 0, ready: 0 },
    },
    funnel: { connected: 4, downloaded: 3, unlocked: 2, synced: 2, ready: 1 },
  };
  const rows = funnelRows(status);
  assert.deepEqual(rows.map((r) => [r.name, r.total]), [['red', false], ['blue', false], ['', true]]);
  assert.equal(rows[0].shares.downloaded, 0.75);
  assert.equal(rows[1].shares.ready, 0);
  assert.deepEqual(rows[2].counts, status.funnel);
  assert.deepEqual(funnelRows({}).map((r) => r.counts.connected), [0]);
});

test('the histogram labels each bin by its edges, the last above the last edge, then no estimate', () => {
  const bars = histogramBars({ edges_ms: [1, 2, 5, 10, 20], counts: [4, 2, 0, 1, 0, 1], unknown: 2 }, EN);
  assert.deepEqual(bars.map((b) => b.label), ['≤ 1 ms', '1–2 ms', '2–5 ms', '5–10 ms', '10–20 ms', '> 20 ms', 'no estimate']);
  assert.deepEqual(bars.map((b) => b.count), [4, 2, 0, 1, 0, 1, 2]);
  assert.deepEqual(bars.map((b) => b.fraction), [1, 0.5, 0, 0.25, 0, 0.25, 0.5]);
  assert.deepEqual(bars.map((b) => b.over), [false, false, false, false, true, true, true]);
  assert.deepEqual(histogramBars({ edges_ms: [1], counts: [0, 0], unknown: 0 }, EN).map((b) => b.fraction), [0, 0, 0]);
});

test('the clock lines show the server time and zone, the loop lag and the upstream offset', () => {
  const status = {
    server_time: '2026-06-14T18:00:05.123+02:00',
    timezone: 'CEST (UTC+02:00)',
    clock: { loop_lag_ms: 1.25, upstream_offset_ms: null, upstream: null },
  };
  assert.deepEqual(clockLines(status, EN), [
    ['Server time', '18:00:05 · CEST (UTC+02:00)'],
    ['Event loop lag (p99)', '1.3 ms'],
    ['Upstream offset', 'no upstream server'],
  ]);
  const upstream = { ...status, clock: { loop_lag_ms: 0, upstream_offset_ms: -2.5, upstream: 'pool.ntp.org' } };
  assert.equal(clockLines(upstream, EN)[2][1], '-2.5 ms (pool.ntp.org)');
});

test('ready share and its threshold as whole percents', () => {
  assert.deepEqual(readyPercents({ ready_share: 0.5, ready_share_min: 0.8 }), [50, 80]);
  assert.equal(EN.readyShare(50, 80), '50 % ready (a start below 80 % asks to confirm)');
});

test('RFC 3339 with the zone offset, east and west of UTC', () => {
  const utcMs = Date.UTC(2026, 5, 14, 16, 0, 5, 700);
  assert.equal(rfc3339(utcMs, 120), '2026-06-14T18:00:05+02:00');
  assert.equal(rfc3339(utcMs, -330), '2026-06-14T10:30:05-05:30');
  assert.equal(rfc3339(utcMs, 0), '2026-06-14T16:00:05+00:00');
});

test('a time input means the next time the local clock reads it: today, else tomorrow', () => {
  const now = Date.UTC(2026, 0, 10, 17, 30); // 18:30 in Paris
  assert.deepEqual(nextLocalTime('21:00', now, PARIS_WINTER), {
    utcMs: Date.UTC(2026, 0, 10, 20, 0), at: '2026-01-10T21:00:00+01:00', tomorrow: false,
  });
  assert.deepEqual(nextLocalTime('18:00:30', now, PARIS_WINTER), {
    utcMs: Date.UTC(2026, 0, 11, 17, 0, 30), at: '2026-01-11T18:00:30+01:00', tomorrow: true,
  });
  // Just after local midnight the local date is already the next day's.
  const late = Date.UTC(2026, 0, 10, 23, 10); // 00:10 on the 11th in Paris
  assert.equal(nextLocalTime('00:20', late, PARIS_WINTER).at, '2026-01-11T00:20:00+01:00');
});

test('a time after a daylight-saving change carries the new offset', () => {
  const now = Date.UTC(2026, 2, 28, 23, 0); // 00:00 CET on the 29th
  assert.equal(nextLocalTime('10:00', now, PARIS_SPRING).at, '2026-03-29T10:00:00+02:00');
  assert.equal(nextLocalTime('10:00', now, PARIS_SPRING).utcMs, Date.UTC(2026, 2, 29, 8, 0));
});

test('a malformed time gives null', () => {
  for (const text of ['', '9:00', '24:00', '12:60', 'noon', null]) assert.equal(nextLocalTime(text, 0, () => 0), null, text);
});

test('the lead field: a number of seconds in (0, 86400], a comma decimal allowed', () => {
  assert.equal(leadSeconds('5'), 5);
  assert.equal(leadSeconds(' 2,5 '), 2.5);
  for (const text of ['', '0', '-1', '86401', 'abc', null]) assert.equal(leadSeconds(text), null, String(text));
});

test('API answers: success, a confirmation for not_ready, the message and code for any other error', () => {
  assert.deepEqual(apiOutcome(200, { state: 'scheduled' }), { ok: true, body: { state: 'scheduled' } });
  assert.deepEqual(apiOutcome(409, { error: 'not_ready', message: '1 of 2 ready' }), { confirm: '1 of 2 ready' });
  assert.deepEqual(apiOutcome(409, { error: 'invalid_state', message: 'already scheduled' }), { error: 'already scheduled (invalid_state)' });
  assert.deepEqual(apiOutcome(400, { error: 'too_soon', message: 'lead under 2.1 s' }), { error: 'lead under 2.1 s (too_soon)' });
  assert.deepEqual(apiOutcome(502, null), { error: 'HTTP 502' });
});

test('the phones line reports wake locks, hidden pages and output latency, in both languages', () => {
  const phones = { wake_lock: 3, hidden: 1, latency_reported: 2, latency_mean_ms: 41.5 };
  assert.equal(TEXTS.en.phones(phones), 'screen kept on: 3 · page hidden: 1 · output latency reported: 2 (mean 41.5 ms)');
  assert.match(TEXTS.fr.phones({ ...phones, latency_mean_ms: null }), /^écran maintenu allumé : 3 · page cachée : 1 · latence de sortie connue : 2$/);
});

test('a cluster lists its nodes in the clock panel; a single server does not', () => {
  const base = { server_time: '2026-11-28T21:00:00.000+01:00', timezone: 'CET (UTC+01:00)', clock: { loop_lag_ms: 1.2, upstream_offset_ms: null } };
  const single = clockLines({ ...base, nodes: [{ node: 'this server', devices: 3, age_s: 0, loop_lag_ms: 1.2, upstream_offset_ms: null }] }, EN);
  assert.equal(single.length, 3);
  const nodes = [
    { node: 'a:8081:1', devices: 2, age_s: 0, loop_lag_ms: 1, upstream_offset_ms: null },
    { node: 'b:8082:2', devices: 1, age_s: 3.5, loop_lag_ms: 2, upstream_offset_ms: 0.04 },
  ];
  const lines = clockLines({ ...base, nodes }, EN);
  assert.equal(lines.length, 5);
  assert.equal(lines[3][0], 'Server nodes: 2');
  assert.match(lines[4][1], /^b:8082:2: 1 phone, loop lag .*, upstream .*, seen 3.5 s ago$/);
});
