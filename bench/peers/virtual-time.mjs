// Virtual time for the peer libraries: one clock and one timer queue stand in
// for setTimeout/setInterval/clearTimeout/clearInterval, Date.now and
// performance.now inside this process, so the libraries run unmodified while
// minutes of a show pass in milliseconds. Time is true (= server) time in s
// since the trace began; the device's own clock is built on top (device.mjs).

const realSetImmediate = globalThis.setImmediate;

// Server time of the trace's t = 0, in ms: the same instant as
// bench/virtual.py's EPOCH_NS, so timesync's Date.now() is a realistic epoch.
export const EPOCH_MS = 1_790_000_000_000;

export class VirtualTime {
  constructor() {
    this.nowS = 0;
    this._heap = []; // [t_s, seq, id]
    this._seq = 0;
    this._timers = new Map(); // id -> {fn, args, intervalS}
    this._nextId = 1;
  }

  /** Run ``fn`` at true time ``tS`` (s). Returns a timer id. */
  at(tS, fn, args = [], intervalS = null) {
    const id = this._nextId++;
    this._timers.set(id, { fn, args, intervalS });
    this._push(Math.max(tS, this.nowS), id);
    return id;
  }

  setTimeout(fn, ms, ...args) {
    return this.at(this.nowS + delayS(ms), fn, args);
  }

  setInterval(fn, ms, ...args) {
    const intervalS = delayS(ms);
    return this.at(this.nowS + intervalS, fn, args, intervalS);
  }

  clear(id) {
    this._timers.delete(id);
  }

  /**
   * Fire timers in time order (FIFO among equal times) until none is due at or
   * before ``untilS``. After each one, let the promise jobs it queued run
   * (timesync chains through the `promise` package, which flushes on
   * setImmediate) before time moves on.
   */
  async run(untilS) {
    while (this._heap.length > 0 && this._heap[0][0] <= untilS) {
      const [tS, , id] = this._pop();
      const timer = this._timers.get(id);
      if (timer === undefined) continue; // cleared
      this.nowS = tS;
      if (timer.intervalS === null) {
        this._timers.delete(id);
      } else {
        this._push(tS + timer.intervalS, id);
      }
      timer.fn(...timer.args);
      await settle();
      await settle();
    }
    this.nowS = Math.max(this.nowS, untilS);
  }

  _push(tS, id) {
    const heap = this._heap;
    heap.push([tS, this._seq++, id]);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!less(heap[i], heap[parent])) break;
      [heap[i], heap[parent]] = [heap[parent], heap[i]];
      i = parent;
    }
  }

  _pop() {
    const heap = this._heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && less(heap[l], heap[m])) m = l;
        if (r < heap.length && less(heap[r], heap[m])) m = r;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m], heap[i]];
        i = m;
      }
    }
    return top;
  }
}

function less(a, b) {
  return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
}

// A browser runs setTimeout(fn, 0) at once (Node would clamp it to 1 ms);
// a missing or non-numeric delay is 0, as in both.
function delayS(ms) {
  const value = Number(ms);
  return Number.isFinite(value) && value > 0 ? value / 1000 : 0;
}

function settle() {
  return new Promise((resolve) => realSetImmediate(resolve));
}

// The world whose clock the patched globals read; switched per run.
let current = null;

/** Replace the process's time functions by ``vt``'s; call before loading a library. */
export function install(vt) {
  current = vt;
  if (globalThis.__unisonoVirtualTime) return;
  globalThis.__unisonoVirtualTime = true;
  globalThis.setTimeout = (fn, ms, ...args) => current.setTimeout(fn, ms, ...args);
  globalThis.setInterval = (fn, ms, ...args) => current.setInterval(fn, ms, ...args);
  globalThis.clearTimeout = (id) => current.clear(id);
  globalThis.clearInterval = (id) => current.clear(id);
  // The server's wall clock (timesync's server handler stamps with Date.now()).
  Date.now = () => EPOCH_MS + current.nowS * 1000;
  performance.now = () => current.nowS * 1000;
}

/** A seeded Math.random (mulberry32): IRCAM draws its 10-20 s series gap from it. */
export function seedRandom(seed) {
  let a = seed >>> 0;
  Math.random = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
