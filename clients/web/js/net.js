/**
 * Websocket glue: a reconnecting socket, and the participant's link to the server.
 *
 * Receives frames, answers pings at once, hands every other decoded message
 * to the page. All protocol rules live in protocol.js and sync.js; this file
 * only moves bytes and stamps times.
 */

import { decode, encode, ProtocolError, PROTOCOL_VERSION, SERVER_TO_PARTICIPANT } from './protocol.js';
import { makePong } from './sync.js';
import { deviceNowUs } from './deviceclock.js';

// Reconnect delays (PROTOCOL.md section 6): uniform between 0.5 s and a
// ceiling of 5 s that doubles with each failed attempt, up to 30 s. The whole
// range stays random however many attempts failed, so a crowd that lost the
// server together keeps coming back spread out, never all at the cap.
export const RECONNECT_MIN_MS = 500;
export const RECONNECT_MAX_MS = 5000;
export const RECONNECT_CAP_MS = 30000;

// Error codes after which reconnecting cannot help: say so and stay closed.
export const PERMANENT_ERRORS = new Set(['unsupported_version', 'not_authorized']);

export const DEVICE_ID_KEY = 'unisono.device_id';

// A ready whose only news is the bound waits this long after
// the last one (PROTOCOL.md, `ready`): the bound grows every moment, and the
// server keeps its own bound for every device; 15,000 phones re-sending it
// every 5 s were 3,000 messages a second for nothing.
export const READY_MIN_INTERVAL_MS = 30000;
// Sent at once when they change (output_latency_us changes when the participant
// sets a headphone delay or the output device changes: news, and rare).
const READY_AT_ONCE = ['loaded', 'unlocked', 'wake_lock', 'visible', 'output_latency_us'];

/** The ready message's fields from the page's readiness: unknown values become null, numbers are rounded. */
export function readyFields(readiness) {
  const number = (value) => (typeof value === 'number' && Number.isFinite(value) ? value : null);
  const downloaded = number(readiness.downloaded);
  const boundUs = number(readiness.bound_us);
  const latencyUs = number(readiness.output_latency_us);
  const flag = (value) => (typeof value === 'boolean' ? value : null);
  return {
    loaded: readiness.loaded === true,
    unlocked: readiness.unlocked === true,
    downloaded: downloaded === null ? null : Math.min(1, Math.max(0, downloaded)),
    bound_us: boundUs === null ? null : Math.max(0, Math.round(boundUs)) + 0,
    output_latency_us: latencyUs === null ? null : Math.min(10000000, Math.max(-10000000, Math.round(latencyUs) + 0)),
    wake_lock: flag(readiness.wake_lock),
    visible: flag(readiness.visible),
  };
}

/**
 * Whether a ready with fields `next` is due, given the last one sent (`sent`,
 * null if none) at `sentAtMs`, now `nowMs`: at once when a flag or the whole
 * percent of `downloaded` or the output latency changed, after
 * READY_MIN_INTERVAL_MS when only the bound did, never when nothing changed.
 */
export function readyDue(sent, next, nowMs, sentAtMs) {
  if (sent == null) return true;
  const percent = (fraction) => (fraction == null ? null : Math.floor(fraction * 100));
  if (READY_AT_ONCE.some((key) => sent[key] !== next[key])) return true;
  if (percent(sent.downloaded) !== percent(next.downloaded)) return true;
  if (sent.bound_us === next.bound_us) return false;
  return nowMs - sentAtMs >= READY_MIN_INTERVAL_MS;
}

/** Milliseconds to wait before reconnect attempt number `attempt` (0 for the first). */
export function reconnectDelayMs(attempt, random = Math.random) {
  const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_MAX_MS * 2 ** Math.min(attempt, 10));
  return RECONNECT_MIN_MS + random() * (ceiling - RECONNECT_MIN_MS);
}

/** The same-origin websocket URL of `path` for a page at `location` (wss: under https:). */
export function socketUrl(location, path) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

/**
 * A websocket that reconnects after a random, growing delay.
 * Callbacks: onOpen(), onMessage(event), onClose(event), all optional.
 * The first message after an open resets the delay to its smallest.
 */
export class ReconnectingSocket {
  constructor(url, { onOpen, onMessage, onClose } = {}) {
    this.url = url;
    this.onOpen = onOpen ?? (() => {});
    this.onMessage = onMessage ?? (() => {});
    this.onClose = onClose ?? (() => {});
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.timer = null;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    if (this.stopped) return;
    const ws = new WebSocket(this.url);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => this.onOpen();
    ws.onmessage = (event) => {
      this.attempt = 0;
      this.onMessage(event);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.onClose(event);
      this.scheduleReconnect();
    };
    this.ws = ws;
  }

  /** Send bytes if connected; returns whether they were handed to the socket. */
  send(bytes) {
    if (!this.open) return false;
    this.ws.send(bytes);
    return true;
  }

  /** Close for good: no more reconnects. */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
  }

  scheduleReconnect() {
    if (this.stopped) return;
    const delayMs = reconnectDelayMs(this.attempt);
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), delayMs);
  }
}

/** localStorage, or nothing when the browser forbids it (private mode, disabled storage). */
function readStoredId(storage) {
  try {
    return storage?.getItem(DEVICE_ID_KEY) ?? null;
  } catch {
    return null;
  }
}

function storeId(storage, deviceId) {
  try {
    storage?.setItem(DEVICE_ID_KEY, deviceId);
  } catch {
    // Without storage the device gets a new id, and maybe another group, next time.
  }
}

/**
 * The participant's connection to `/ws`: join, pongs, ready.
 *
 * Callbacks: onMessage(message) for every message but ping (welcome, show,
 * estimate, schedule, announcement, error); onConnection(connected); onBadMessage(error)
 * for a frame that failed to decode (it is dropped).
 */
export class ParticipantLink {
  constructor(url, { storage, client = 'unisono-web/1', lang = null, onMessage, onConnection, onBadMessage } = {}) {
    this.storage = storage;
    this.client = client;
    // join.lang: a BCP 47 tag (navigator.language); the server picks French or English texts from it.
    this.lang = typeof lang === 'string' && lang.length > 0 && lang.length <= 35 ? lang : null;
    this.onMessage = onMessage ?? (() => {});
    this.onConnection = onConnection ?? (() => {});
    this.onBadMessage = onBadMessage ?? (() => {});
    this.readiness = readyFields({});
    this.sentReadiness = null; // the fields of the last ready sent, and when (ms, Date.now())
    this.sentAtMs = -Infinity;
    this.welcomed = false;
    this.socket = new ReconnectingSocket(url, {
      onOpen: () => this.sendJoin(),
      onMessage: (event) => this.receive(event),
      onClose: () => {
        this.welcomed = false;
        this.onConnection(false);
      },
    });
  }

  start() {
    this.socket.connect();
  }

  /**
   * Tell the server our readiness {loaded, unlocked, downloaded, bound_us,
   * output_latency_us, wake_lock, visible}; sent now if readyDue says so and we are joined.
   */
  setReadiness(readiness, nowMs = Date.now()) {
    this.readiness = readyFields(readiness);
    if (this.welcomed && readyDue(this.sentReadiness, this.readiness, nowMs, this.sentAtMs)) this.sendReady(nowMs);
  }

  sendJoin() {
    const deviceId = readStoredId(this.storage);
    const validId = typeof deviceId === 'string' && /^[A-Za-z0-9_-]{8,64}$/.test(deviceId) ? deviceId : null;
    this.socket.send(encode({ type: 'join', v: PROTOCOL_VERSION, device_id: validId, client: this.client, lang: this.lang }));
  }

  sendReady(nowMs = Date.now()) {
    this.socket.send(encode({ type: 'ready', ...this.readiness }));
    this.sentReadiness = this.readiness;
    this.sentAtMs = nowMs;
  }

  receive(event) {
    const t1Us = deviceNowUs(); // first thing on receipt (PROTOCOL.md section 2)
    let message;
    try {
      message = decode(event.data, { accept: SERVER_TO_PARTICIPANT });
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this.onBadMessage(error);
      return;
    }
    if (message.type === 'ping') {
      const pong = encode(makePong(message, t1Us, deviceNowUs())); // t2: last thing before send
      this.socket.send(pong);
      return;
    }
    if (message.type === 'welcome') {
      storeId(this.storage, message.device_id);
      this.welcomed = true;
      this.onConnection(true);
      this.onMessage(message);
      this.sendReady();
      return;
    }
    if (message.type === 'error' && PERMANENT_ERRORS.has(message.code)) this.socket.stop();
    this.onMessage(message);
  }
}
