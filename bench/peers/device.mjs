// A phone's clock, the same arithmetic as bench/netmodels.DeviceProfile
// (offset + skew + optional step, read quantised to the resolution), so the
// libraries read exactly the values Unisono's simulated device reads.

export class DeviceClock {
  constructor({ offset_ns, system_ppm, resolution_ns, step_at_s = null, step_ns = 0 }) {
    this.offsetNs = offset_ns;
    this.systemPpm = system_ppm;
    this.resolutionNs = resolution_ns;
    this.stepAtS = step_at_s;
    this.stepNs = step_ns;
  }

  /** The unquantised device clock (ns) at true time ``trueS``. */
  deviceNs(trueS) {
    let value = this.offsetNs + trueS * 1e9 * (1 + this.systemPpm * 1e-6);
    if (this.stepAtS !== null && trueS >= this.stepAtS) value += this.stepNs;
    return Math.trunc(value);
  }

  /** What the clock API returns (ns): floored to the resolution, as Python's ``v - v % r``. */
  readNs(trueS) {
    const value = this.deviceNs(trueS);
    const r = this.resolutionNs;
    return value - (((value % r) + r) % r);
  }

  /** True time (s) at which the device clock shows ``deviceNs`` (quantisation ignored). */
  trueS(deviceNs) {
    let value = deviceNs - this.offsetNs;
    if (this.stepAtS !== null && value >= this.stepAtS * 1e9 * (1 + this.systemPpm * 1e-6) + this.stepNs) {
      value -= this.stepNs;
    }
    return value / 1e9 / (1 + this.systemPpm * 1e-6);
  }
}
