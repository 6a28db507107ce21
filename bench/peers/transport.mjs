// The network: one direction of one device's connection, replaying a delay
// field exported by bench/netmodels.py. Like TCP, a message never overtakes
// the one sent before it in the same direction; a message sent while the
// network is gone (NaN) is dropped.

export class Channel {
  /**
   * @param {import('./virtual-time.mjs').VirtualTime} vt
   * @param {Float32Array} delaysMs one-way delay (ms) per cell of send time
   * @param {number} cellS the cell's length (s)
   */
  constructor(vt, delaysMs, cellS) {
    this.vt = vt;
    this.delaysMs = delaysMs;
    this.cellS = cellS;
    this.lastDeliveryS = -Infinity;
    this.sent = 0;
    this.dropped = 0;
  }

  /** The delay (s) for a message sent at ``tS``: the same lookup as netmodels.Trace.up/down. */
  delayS(tS) {
    let i = Math.trunc(tS / this.cellS);
    if (i < 0) i = 0;
    else if (i >= this.delaysMs.length) i = this.delaysMs.length - 1;
    return this.delaysMs[i] / 1000;
  }

  /** Send now; ``deliver()`` runs on arrival. Returns the arrival time (s), or null if dropped. */
  send(deliver) {
    this.sent += 1;
    const delay = this.delayS(this.vt.nowS);
    if (Number.isNaN(delay)) {
      this.dropped += 1;
      return null;
    }
    this.lastDeliveryS = Math.max(this.vt.nowS + delay, this.lastDeliveryS);
    this.vt.at(this.lastDeliveryS, deliver);
    return this.lastDeliveryS;
  }
}
