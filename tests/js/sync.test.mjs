// Tests of clients/web/js/sync.js: the clock estimate's conversions and the pong builder.
import test from 'node:test';
import assert from 'node:assert/strict';

import { ClockEstimate, makePong } from '../../clients/web/js/sync.js';

const AT_US = 1_700_000_000_000_000;
const ESTIMATE = { type: 'estimate', at_us: AT_US, offset_us: -5000, rate_ppm: 20, bound_us: 100, bound_growth_ppm: 10 };

function near(actual, expected, tolerance, what) {
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual} is not within ${tolerance} of ${expected}`);
}

test('offsetAt is offset_us at at_us and moves by rate_ppm per second of device time', () => {
  const clock = new ClockEstimate(ESTIMATE);
  assert.equal(clock.offsetAt(AT_US), -5000);
  near(clock.offsetAt(AT_US + 1_000_000), -4980, 1e-6, 'one second later');
  near(clock.offsetAt(AT_US - 10_000_000), -5200, 1e-6, 'ten seconds earlier');
});

test('boundAt grows with distance from at_us in both directions', () => {
  const clock = new ClockEstimate(ESTIMATE);
  assert.equal(clock.boundAt(AT_US), 100);
  near(clock.boundAt(AT_US + 2_000_000), 120, 1e-6, 'two seconds later');
  near(clock.boundAt(AT_US - 2_000_000), 120, 1e-6, 'two seconds earlier');
});

test('deviceToServer adds the offset at that device time (offset = server - device)', () => {
  const clock = new ClockEstimate(ESTIMATE);
  near(clock.deviceToServer(AT_US + 1_000_000), AT_US + 1_000_000 - 4980, 0.5, 'one second later');
  const ahead = new ClockEstimate({ ...ESTIMATE, offset_us: 2_000_000, rate_ppm: 0 });
  assert.equal(ahead.deviceToServer(AT_US), AT_US + 2_000_000);
});

test('serverToDevice inverts deviceToServer to within 1 µs, an hour away, at a non-zero rate', () => {
  for (const ratePpm of [20, -35.5, 10000, -10000]) {
    const clock = new ClockEstimate({ ...ESTIMATE, rate_ppm: ratePpm });
    for (const deviceUs of [AT_US, AT_US + 3_600_000_000, AT_US - 3_600_000_000, AT_US + 123_457]) {
      const back = clock.serverToDevice(clock.deviceToServer(deviceUs));
      near(back, deviceUs, 1, `rate ${ratePpm} ppm at device ${deviceUs}`);
    }
  }
});

test('serverToDevice of a literal server time at 50 ppm', () => {
  // server = d + 1000 + 50e-6 * (d - AT): d = AT + 1e9 gives server = AT + 1e9 + 1000 + 50000.
  const clock = new ClockEstimate({ ...ESTIMATE, offset_us: 1000, rate_ppm: 50 });
  near(clock.serverToDevice(AT_US + 1_000_051_000), AT_US + 1_000_000_000, 1, 'device time');
});

test('makePong echoes seq and t0_us and carries both device stamps', () => {
  const ping = { type: 'ping', seq: 42, t0_us: 1_700_000_000_000_123 };
  assert.deepEqual(makePong(ping, 5_000_000, 5_000_012), {
    type: 'pong', seq: 42, t0_us: 1_700_000_000_000_123, t1_us: 5_000_000, t2_us: 5_000_012,
  });
});

test('makePong never sends t2_us before t1_us', () => {
  const pong = makePong({ type: 'ping', seq: 1, t0_us: 0 }, 900, 899);
  assert.equal(pong.t2_us, 900);
});
