// The systems under comparison, each wired to one device's clock and
// connection. Every driver only connects a library's own client and server
// code to the fake transport; their algorithms run untouched.
//
// A driver offers:
//   join()            start syncing (called at the device's join time)
//   hasEstimate()     whether the library has produced any estimate yet
//   localNs(tS)       device clock (ns) at which the library would start a show
//                     due at server time tS (s since the trace began), by the
//                     library's own conversion
//   beliefS(deviceNs) server time (s since the trace began) the library
//                     believes it is when the device clock shows deviceNs
//   pings             requests the client sent

import { createRequire } from 'node:module';

import { EPOCH_MS } from './virtual-time.mjs';

const require = createRequire(import.meta.url);
const { SyncClient, SyncServer } = require('@ircam/sync');
const timesync = require('timesync');
const { requestHandler: timesyncRequestHandler } = require('timesync/server');

// timesync's own examples all pass interval 10000 (5000 for peer-to-peer);
// its default, one hour, would mean a single round at join.
export const TIMESYNC_INTERVAL_MS = 10_000;

/**
 * IRCAM @ircam/sync: SyncClient on the device clock (s), SyncServer on the
 * server clock (s since the trace began: its docs ask the server to define
 * its own origin, as soundworks does). Library defaults otherwise.
 */
export function ircamSync({ vt, clock, up, down }) {
  const server = new SyncServer(() => vt.nowS);
  const client = new SyncClient(() => clock.readNs(vt.nowS) / 1e9);
  let serverReceive = null;
  let clientReceive = null;
  server.start(
    (pingId, clientPingTime, serverPingTime, serverPongTime) =>
      down.send(() => clientReceive(pingId, clientPingTime, serverPingTime, serverPongTime)),
    (callback) => {
      serverReceive = callback;
    },
  );
  const driver = {
    pings: 0,
    join() {
      client.start(
        (pingId, clientPingTime) => {
          driver.pings += 1;
          up.send(() => serverReceive(pingId, clientPingTime));
        },
        (callback) => {
          clientReceive = callback;
        },
        () => {},
      );
    },
    hasEstimate: () => client.status === 'training' || client.status === 'sync',
    localNs: (tS) => client.getLocalTime(tS) * 1e9,
    beliefS: (deviceNs) => client.getSyncTime(deviceNs / 1e9),
    status: () => client.status,
  };
  return driver;
}

/**
 * timesync 1.0.11: the client with `now` = the device clock (ms) and `send`
 * overridden (its documented extension point) to post over the fake transport;
 * the server side is the package's own `timesync/server` requestHandler, fed
 * an express-style request (req.body set) and a minimal response object; it
 * stamps with Date.now(), which is the virtual server clock (epoch ms).
 * offset = server - local (ms); now() = local + offset.
 */
export function timesyncLib({ vt, clock, up, down }) {
  let ts = null;
  const driver = {
    pings: 0,
    join() {
      ts = timesync.create({
        server: 'unisono-bench',
        interval: TIMESYNC_INTERVAL_MS,
        now: () => clock.readNs(vt.nowS) / 1e6,
      });
      ts.on('error', () => {});
      ts.send = (to, data) => {
        driver.pings += 1;
        up.send(() => {
          const res = {
            code: 0,
            setHeader() {},
            writeHead(code) {
              this.code = code;
            },
            end(body) {
              const code = this.code;
              down.send(() => {
                if (code === 200) ts.receive(to, JSON.parse(body));
              });
            },
          };
          timesyncRequestHandler({ method: 'POST', url: '/timesync', body: data }, res);
        });
        return Promise.resolve();
      };
    },
    hasEstimate: () => ts !== null && !ts._isFirst,
    localNs: (tS) => (EPOCH_MS + tS * 1000 - ts.offset) * 1e6,
    beliefS: (deviceNs) => (deviceNs / 1e6 + ts.offset - EPOCH_MS) / 1000,
  };
  return driver;
}

/**
 * Naive baseline (Cristian): one ping at join; on the reply,
 * offset = t_server + RTT/2 - t_local (ms), never refined.
 */
export function naive({ vt, clock, up, down }) {
  let offsetMs = null;
  const localMs = () => clock.readNs(vt.nowS) / 1e6;
  const driver = {
    pings: 0,
    join() {
      driver.pings += 1;
      const sentMs = localMs();
      up.send(() => {
        const serverMs = EPOCH_MS + vt.nowS * 1000;
        down.send(() => {
          const receivedMs = localMs();
          offsetMs = serverMs + (receivedMs - sentMs) / 2 - receivedMs;
        });
      });
    },
    hasEstimate: () => offsetMs !== null,
    localNs: (tS) => (EPOCH_MS + tS * 1000 - offsetMs) * 1e6,
    beliefS: (deviceNs) => (deviceNs / 1e6 + offsetMs - EPOCH_MS) / 1000,
  };
  return driver;
}

export const SYSTEMS = { 'ircam-sync': ircamSync, timesync: timesyncLib, naive };
