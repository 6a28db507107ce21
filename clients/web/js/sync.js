/**
 * The device's clock as the server estimates it (PROTOCOL.md sections 2 and 5).
 *
 * Pure: the device time is always passed in, in integer or float microseconds
 * of the device's monotonic clock (in a browser `(performance.timeOrigin +
 * performance.now()) * 1000`, read by the glue). Sign, once: offset = server
 * time - device time, so `server_us = device_us + offsetAt(device_us)`.
 */

/** A clock estimate taken from an `estimate` message; every method is pure. */
export class ClockEstimate {
  /** `estimate`: the decoded `estimate` message {at_us, offset_us, rate_ppm, bound_us, bound_growth_ppm}. */
  constructor(estimate) {
    this.atUs = estimate.at_us;
    this.offsetUs = estimate.offset_us;
    this.ratePpm = estimate.rate_ppm;
    this.boundUs = estimate.bound_us;
    this.boundGrowthPpm = estimate.bound_growth_ppm;
  }

  /** Server time - device time (µs, float) at device time `deviceUs`, extrapolated at rate_ppm. */
  offsetAt(deviceUs) {
    return this.offsetUs + this.ratePpm * 1e-6 * (deviceUs - this.atUs);
  }

  /** The error bound (µs, float) of offsetAt(deviceUs): grows with distance from at_us. */
  boundAt(deviceUs) {
    return this.boundUs + this.boundGrowthPpm * 1e-6 * Math.abs(deviceUs - this.atUs);
  }

  /** Server time (µs, float) of device time `deviceUs`. */
  deviceToServer(deviceUs) {
    return deviceUs + this.offsetAt(deviceUs);
  }

  /**
   * Device time (µs, float) of server time `serverUs`: the device time d with
   * d + offsetAt(d) = serverUs. PROTOCOL.md section 5 reaches it by fixed-point
   * steps from d ~= server - offset_us; since the offset is linear in d the
   * equation solves exactly, d = at_us + (server - offset_us - at_us) / (1 + rate),
   * which stays exact at the protocol's extreme rates (+-10000 ppm) too.
   */
  serverToDevice(serverUs) {
    return this.atUs + (serverUs - this.offsetUs - this.atUs) / (1 + this.ratePpm * 1e-6);
  }
}

/**
 * The `pong` answering `ping`: echoes seq and t0_us, adds the device's receive
 * stamp `t1Us` and send stamp `t2Us` (integer µs of device time). A send stamp
 * earlier than the receive stamp (a clock that is not monotonic) is raised to
 * it, since the protocol requires t2_us >= t1_us.
 */
export function makePong(ping, t1Us, t2Us) {
  return { type: 'pong', seq: ping.seq, t0_us: ping.t0_us, t1_us: t1Us, t2_us: Math.max(t1Us, t2Us) };
}
