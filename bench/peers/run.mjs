// Runs the peer clock-sync libraries in virtual time on traces exported by
// bench/peers.py:  node bench/peers/run.mjs <dir>  ->  JSON on stdout.
//
// <dir>/meta.json: {model, seed, cell_s, scenario: {join_s: [..per device],
//   command_s, lead_s, end_s, checkpoints_s}, devices: [{offset_ns,
//   system_ppm, resolution_ns, step_at_s, step_ns}]}
// <dir>/d<i>.up.f32, d<i>.down.f32: little-endian float32 one-way delay (ms)
//   per cell of send time, NaN = no network.
//
// Output: {systems: {<name>: {start_error_ms: [..], checkpoint_errors_ms:
//   [[..]..], pings: [..], dropped: [..]}}} with null for "no value".
// Start error (the convention of bench/virtual.py): the schedule (T = command_s
// + lead_s) goes down the device's connection at command_s; on arrival the
// device converts T to its clock with the library's estimate then. Error =
// true time at which the device clock shows that value - T (ms). A schedule
// arriving after T gives the clock error then (the position it starts off by).

import { readFileSync } from 'node:fs';
import { endianness } from 'node:os';
import { join } from 'node:path';

import { DeviceClock } from './device.mjs';
import { Channel } from './transport.mjs';
import { VirtualTime, install, seedRandom } from './virtual-time.mjs';

function readCells(path) {
  if (endianness() !== 'LE') throw new Error('float32 traces are little-endian; this host is not');
  const bytes = readFileSync(path);
  return new Float32Array(new Uint8Array(bytes).buffer); // a copy: aligned
}

/** One device, one system, its own virtual world. */
async function runOne(makeDriver, systemIndex, meta, device, upCells, downCells) {
  const vt = new VirtualTime();
  install(vt);
  seedRandom(((meta.seed * 1_000_003) ^ (device * 101 + systemIndex)) >>> 0);
  const clock = new DeviceClock(meta.devices[device]);
  const up = new Channel(vt, upCells, meta.cell_s);
  const down = new Channel(vt, downCells, meta.cell_s);
  const driver = makeDriver({ vt, clock, up, down });
  const { join_s: joins, command_s: commandS, lead_s: leadS, end_s: endS } = meta.scenario;
  const startS = commandS + leadS;
  const result = { startErrorMs: null, checkpointErrorsMs: [] };

  const clockErrorMs = (tS) => -(driver.beliefS(clock.deviceNs(tS)) - tS) * 1000;

  vt.at(joins[device], () => driver.join());
  vt.at(commandS, () =>
    down.send(() => {
      if (!driver.hasEstimate()) return;
      if (vt.nowS <= startS) {
        result.startErrorMs = (clock.trueS(driver.localNs(startS)) - startS) * 1000;
      } else {
        result.startErrorMs = clockErrorMs(vt.nowS);
      }
    }),
  );
  for (const tS of meta.scenario.checkpoints_s ?? []) {
    vt.at(tS, () => result.checkpointErrorsMs.push(driver.hasEstimate() ? clockErrorMs(tS) : null));
  }
  await vt.run(endS);
  return { ...result, pings: driver.pings, dropped: up.dropped + down.dropped };
}

async function main() {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write('usage: node run.mjs <dir with meta.json and d<i>.{up,down}.f32>\n');
    process.exit(2);
  }
  const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8'));
  install(new VirtualTime()); // before any library is loaded
  const { SYSTEMS } = await import('./systems.mjs');
  const only = meta.systems ?? Object.keys(SYSTEMS);
  const out = {};
  for (const name of only) {
    out[name] = { start_error_ms: [], checkpoint_errors_ms: [], pings: [], dropped: [] };
  }
  for (let device = 0; device < meta.devices.length; device++) {
    const upCells = readCells(join(dir, `d${device}.up.f32`));
    const downCells = readCells(join(dir, `d${device}.down.f32`));
    for (const [index, name] of only.entries()) {
      const r = await runOne(SYSTEMS[name], index, meta, device, upCells, downCells);
      out[name].start_error_ms.push(r.startErrorMs);
      out[name].checkpoint_errors_ms.push(r.checkpointErrorsMs);
      out[name].pings.push(r.pings);
      out[name].dropped.push(r.dropped);
    }
  }
  const finite = (_key, value) => (typeof value === 'number' && !Number.isFinite(value) ? null : value);
  process.stdout.write(JSON.stringify({ systems: out }, finite) + '\n');
}

await main();
