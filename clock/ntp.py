"""SNTP on the wire and the upstream clock discipline. Pure: bytes and times come in.

- Packets: the RFC 5905 48-byte header, NTP timestamps <-> Unix nanoseconds,
  what makes a client request answerable, the server's reply, what makes an
  upstream's reply usable.
- ``OffsetFilter``: the last few upstream measurements; the estimate is the
  one with the least delay (aged), as NTP's clock filter (RFC 5905 section 10).
- ``Discipline``: server time = reference clock + correction. The first
  estimate steps the correction (when the caller allows it), later ones slew
  it at a bounded rate, so server time never runs backwards and never jumps
  during a show.

Sign, once: ``offset_ns = upstream - local`` (RFC 5905 section 8: positive
when the local clock is behind). Units: integer nanoseconds; monotonic
readings are ``*_monotonic_ns`` or ``at_ns``.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Literal

from clock.reference import ReferenceClock

NS = 1_000_000_000
# Seconds from the NTP epoch (1900-01-01) to the Unix epoch (RFC 5905 figure 4).
NTP_UNIX_DELTA_S = 2_208_988_800
# An NTP timestamp's era is 2**32 s; a seconds field with its top bit clear is
# taken to be in era 1 (2036-2104), as RFC 4330 section 3 suggests.
ERA_S = 1 << 32
HEADER_LEN = 48
# LI VN Mode, stratum, poll, precision, root delay, root dispersion, reference
# id, then four 64-bit timestamps (RFC 5905 figure 8).
_HEADER = struct.Struct("!BBBbII4sQQQQ")

MODE_CLIENT = 3
MODE_SERVER = 4
LEAP_NONE = 0
LEAP_ALARM = 3  # "unknown (clock unsynchronized)"
VERSIONS = range(1, 5)
# Strata on the wire: 1 primary, 2..15 secondary; 16 (unsynchronized) is sent
# as 0 (RFC 5905 section 7.3), which a client also reads as a kiss-o'-death.
MAX_STRATUM = 15
STRATUM_UNSPECIFIED = 0
# The stratum of a server that keeps its own time with no upstream: ntpd's
# "local clock" driver was customarily fudged to 8 (high enough that any
# real source wins).
LOCAL_STRATUM = 8
# Our clock's precision, log2 seconds: a monotonic reading costs about a microsecond.
PRECISION_LOG2 = -20
# NTP's frequency tolerance: dispersion grows 15 ppm of elapsed time (RFC 5905 PHI).
PHI_PPM = 15
# RFC 5905 STEPT: a correction larger than this is a step, not a slew.
STEP_THRESHOLD_NS = 128_000_000
# The fastest slew: the phones' estimators fit a rate within +-200 ppm, so a
# 100 ppm change in the server's rate is one they follow without a break.
MAX_SLEW_PPM = 100
# NTP's clock filter keeps the last 8 samples (RFC 5905 section 10).
FILTER_SIZE = 8
# A sample whose delay is this many times the window's least delay (and at
# least REJECT_MARGIN_NS above it) is a queueing spike, not a measurement:
# 3x is ntpd's popcorn-spike factor.
REJECT_FACTOR = 3
REJECT_MARGIN_NS = 1_000_000
# After this many rejects in a row the path itself has changed: start over.
MAX_REJECTS_IN_A_ROW = 4


# --- timestamps ---------------------------------------------------------------


def unix_ns_to_ntp(unix_ns: int) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point) of a Unix time in ns, rounded to the nearest."""
    seconds, ns = divmod(unix_ns + NTP_UNIX_DELTA_S * NS, NS)
    fraction = ((ns << 32) + NS // 2) // NS
    if fraction >> 32:  # rounded up to the next second
        seconds, fraction = seconds + 1, 0
    return ((seconds % ERA_S) << 32) | fraction


def ntp_to_unix_ns(ntp: int) -> int:
    """The Unix time in ns of a 64-bit NTP timestamp (era 1 when the top bit is clear)."""
    seconds, fraction = ntp >> 32, ntp & 0xFFFF_FFFF
    if not seconds >> 31:
        seconds += ERA_S
    return (seconds - NTP_UNIX_DELTA_S) * NS + ((fraction * NS + (1 << 31)) >> 32)


def ns_to_short(ns: int) -> int:
    """A non-negative duration in ns as an NTP short (16.16 fixed point), saturated at its maximum."""
    return min(0xFFFF_FFFF, (max(0, ns) * 65536 + NS // 2) // NS)


def short_to_ns(short: int) -> int:
    """An NTP short (16.16 fixed point) as ns."""
    return (short * NS + 32768) // 65536


# --- packets ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """The 48-byte NTP header with its fields raw: timestamps are 64-bit NTP, delays 16.16 shorts."""

    leap: int
    version: int
    mode: int
    stratum: int
    poll: int
    precision: int
    root_delay: int
    root_dispersion: int
    reference_id: bytes
    reference_ts: int
    originate_ts: int
    receive_ts: int
    transmit_ts: int

    @classmethod
    def decode(cls, data: bytes) -> Header:
        """The header at the start of ``data``; raises ValueError if ``data`` is shorter than 48 bytes.

        What follows (extension fields, a MAC) is ignored.
        """
        if len(data) < HEADER_LEN:
            raise ValueError(f"an NTP header needs {HEADER_LEN} bytes, found {len(data)}")
        first, stratum, poll, precision, delay, dispersion, ref_id, ref_ts, orig, recv, xmit = _HEADER.unpack_from(data)
        return cls(
            leap=first >> 6,
            version=(first >> 3) & 0x7,
            mode=first & 0x7,
            stratum=stratum,
            # poll is an unsigned byte on the wire but means a signed log2 interval.
            poll=poll - 256 if poll > 127 else poll,
            precision=precision,
            root_delay=delay,
            root_dispersion=dispersion,
            reference_id=ref_id,
            reference_ts=ref_ts,
            originate_ts=orig,
            receive_ts=recv,
            transmit_ts=xmit,
        )

    def encode(self) -> bytes:
        """The 48 bytes on the wire."""
        return _HEADER.pack(
            (self.leap << 6) | (self.version << 3) | self.mode,
            self.stratum,
            self.poll & 0xFF,
            self.precision,
            self.root_delay,
            self.root_dispersion,
            self.reference_id,
            self.reference_ts,
            self.originate_ts,
            self.receive_ts,
            self.transmit_ts,
        )


def request_problem(data: bytes) -> str | None:
    """Why ``data`` is not an answerable SNTP client request, or None if it is.

    Answerable: at least 48 bytes, mode 3 (client), version 1..4. Anything
    else is dropped without an answer (RFC 4330 section 5 lists no error reply).
    """
    if len(data) < HEADER_LEN:
        return f"too short: {len(data)} bytes, expected at least {HEADER_LEN}"
    first = data[0]
    version, mode = (first >> 3) & 0x7, first & 0x7
    if mode != MODE_CLIENT:
        return f"mode {mode}, expected {MODE_CLIENT} (client)"
    if version not in VERSIONS:
        return f"version {version}, expected 1..4"
    return None


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """What our replies say about our clock: leap indicator, stratum, reference, root delay and dispersion."""

    leap: int
    stratum: int
    reference_id: bytes
    # Server time of the last update of our clock from its source; None: never.
    reference_ns: int | None
    root_delay_ns: int = 0
    root_dispersion_ns: int = 0

    @classmethod
    def local(cls, reference_ns: int, stratum: int = LOCAL_STRATUM) -> ServerIdentity:
        """A server with no upstream, keeping its own time at ``stratum``."""
        return cls(LEAP_NONE, stratum, b"LOCL", reference_ns)

    @classmethod
    def unsynchronized(cls) -> ServerIdentity:
        """A server with an upstream it has not yet synchronized to: alarm, stratum 0, kiss code INIT."""
        return cls(LEAP_ALARM, STRATUM_UNSPECIFIED, b"INIT", None)

    @classmethod
    def synced(
        cls,
        upstream_stratum: int,
        upstream_id: bytes,
        reference_ns: int,
        root_delay_ns: int,
        root_dispersion_ns: int,
    ) -> ServerIdentity:
        """A server following an upstream of ``upstream_stratum``; ``upstream_id``: its IPv4 address (4 bytes)."""
        return cls(LEAP_NONE, min(upstream_stratum + 1, MAX_STRATUM), upstream_id, reference_ns, root_delay_ns, root_dispersion_ns)


def build_reply(request: Header, receive_ns: int, transmit_ns: int, identity: ServerIdentity) -> bytes:
    """The server's answer to a valid ``request`` (see ``request_problem``).

    ``receive_ns``, ``transmit_ns``: server time when the request arrived and
    now, as late as possible before sending. The originate field echoes the
    request's transmit field bit for bit (RFC 5905 section 8), so the client
    can match the answer to its request.
    """
    return Header(
        leap=identity.leap,
        version=request.version,
        mode=MODE_SERVER,
        stratum=identity.stratum,
        poll=request.poll,
        precision=PRECISION_LOG2,
        root_delay=ns_to_short(identity.root_delay_ns),
        root_dispersion=ns_to_short(identity.root_dispersion_ns),
        reference_id=identity.reference_id,
        reference_ts=0 if identity.reference_ns is None else unix_ns_to_ntp(identity.reference_ns),
        originate_ts=request.transmit_ts,
        receive_ts=unix_ns_to_ntp(receive_ns),
        transmit_ts=unix_ns_to_ntp(transmit_ns),
    ).encode()


def reply_problem(
    *,
    leap: int,
    mode: int,
    stratum: int,
    originate_ns: int,
    receive_ns: int,
    transmit_ns: int,
    sent_after_ns: int,
    received_before_ns: int,
    slack_ns: int = 1_000_000,
) -> str | None:
    """Why an upstream's reply must not be used, or None if it may (RFC 4330 section 5).

    ``originate_ns`` must lie between ``sent_after_ns`` and ``received_before_ns``
    (our clock around the request), give or take ``slack_ns`` of timestamp
    rounding: otherwise it answers some other request.
    """
    if mode != MODE_SERVER:
        return f"mode {mode}, expected {MODE_SERVER} (server)"
    if leap == LEAP_ALARM:
        return "the upstream is not synchronized (leap indicator 3)"
    if stratum == STRATUM_UNSPECIFIED:
        return "kiss-o'-death (stratum 0)"
    if stratum > MAX_STRATUM:
        return f"stratum {stratum}, expected 1..{MAX_STRATUM}"
    if not sent_after_ns - slack_ns <= originate_ns <= received_before_ns + slack_ns:
        return "the originate timestamp does not echo our request"
    if transmit_ns < receive_ns:
        return "the upstream sent its answer before receiving the request"
    return None


# --- measurements and the filter ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Measurement:
    """One exchange with the upstream: ``offset_ns`` = upstream - our base clock, its round-trip ``delay_ns``, ``at_ns`` (monotonic)."""

    offset_ns: int
    delay_ns: int
    at_ns: int


def measure(t1_ns: int, t2_ns: int, t3_ns: int, t4_ns: int, base_minus_local_ns: int, at_ns: int) -> Measurement:
    """An exchange's offset and delay (RFC 5905 section 8) against our base clock.

    t1 sent and t4 received on the local clock, t2 received and t3 sent on the
    upstream's. offset = upstream - local = ((t2 - t1) + (t3 - t4)) / 2; the
    local clock is not our base clock, so ``base_minus_local_ns`` (read next
    to the exchange) converts: upstream - base = offset - (base - local).
    Delay below zero (timestamp rounding) counts as zero.
    """
    offset_vs_local_ns = ((t2_ns - t1_ns) + (t3_ns - t4_ns)) // 2
    delay_ns = max(0, (t4_ns - t1_ns) - (t3_ns - t2_ns))
    return Measurement(offset_vs_local_ns - base_minus_local_ns, delay_ns, at_ns)


class OffsetFilter:
    """The last ``size`` upstream measurements; the estimate is the one with the least aged delay.

    As NTP's clock filter: a sample's distance is its delay plus the
    dispersion it has gathered since (2 x PHI x age, delay counting both
    ways), and the closest wins: the least queueing, most recent. A sample far
    slower than the window's fastest is rejected.
    """

    def __init__(self, size: int = FILTER_SIZE) -> None:
        if size < 1:
            raise ValueError(f"size: expected at least 1, found {size}")
        self.samples: deque[Measurement] = deque(maxlen=size)
        self._rejects_in_a_row = 0

    def add(self, sample: Measurement) -> str | None:
        """Keep ``sample``, or return why it was rejected."""
        if self.samples:
            least_ns = min(s.delay_ns for s in self.samples)
            if sample.delay_ns > max(REJECT_FACTOR * least_ns, least_ns + REJECT_MARGIN_NS):
                self._rejects_in_a_row += 1
                if self._rejects_in_a_row < MAX_REJECTS_IN_A_ROW:
                    return f"delay {sample.delay_ns / 1e6:.3f} ms, over {REJECT_FACTOR}x the least ({least_ns / 1e6:.3f} ms)"
                self.samples.clear()  # the path's delay has changed for good
        self._rejects_in_a_row = 0
        self.samples.append(sample)
        return None

    def best(self, now_ns: int) -> Measurement | None:
        """The kept sample with the least distance at monotonic ``now_ns``, or None if there is none."""
        if not self.samples:
            return None
        return min(self.samples, key=lambda s: s.delay_ns + 2 * PHI_PPM * max(0, now_ns - s.at_ns) // 1_000_000)


# --- the discipline -----------------------------------------------------------

DisciplineState = Literal["unsynchronized", "stepped", "slewing", "locked"]
# What ``Discipline.apply`` did: stepped the correction, started slewing, or
# had to slew a change larger than a step because a step was not allowed.
Action = Literal["step", "slew", "step_refused"]


class Discipline:
    """Server time = ``reference.server_ns(monotonic)`` + a correction toward the upstream.

    The correction moves from ``_from_ns`` (at monotonic ``_since_ns``) toward
    ``target_ns`` at ``max_slew_ppm`` at most: server time runs at most that
    much faster or slower than the monotonic clock, never backwards. A step
    moves it at once; a step backwards holds server time still until the
    stepped clock catches up.
    """

    def __init__(
        self,
        reference: ReferenceClock,
        max_slew_ppm: float = MAX_SLEW_PPM,
        step_threshold_ns: int = STEP_THRESHOLD_NS,
    ) -> None:
        if not 0 < max_slew_ppm < 1_000_000:
            raise ValueError(f"max_slew_ppm: expected 0 < ppm < 1e6, found {max_slew_ppm}")
        self.reference = reference
        self.max_slew_ppm = max_slew_ppm
        self.step_threshold_ns = step_threshold_ns
        self.target_ns = 0
        self._from_ns = 0
        self._since_ns = reference.anchor_monotonic_ns
        # After a step backwards: server time shown never goes below this.
        self._floor_ns: int | None = None
        self._stepped = False
        self.synchronized = False
        self.steps = 0
        self.refused_steps = 0

    def correction_ns(self, monotonic_ns: int) -> int:
        """The correction added to the reference clock at ``monotonic_ns`` (ns)."""
        remaining = self.target_ns - self._from_ns
        elapsed = max(0, monotonic_ns - self._since_ns)
        most = int(elapsed * self.max_slew_ppm) // 1_000_000
        if abs(remaining) <= most:
            return self.target_ns
        return self._from_ns + (most if remaining > 0 else -most)

    def server_ns(self, monotonic_ns: int) -> int:
        """Server time (ns since the Unix epoch) at ``monotonic_ns``; pass readings in the order taken."""
        server = self.reference.server_ns(monotonic_ns) + self.correction_ns(monotonic_ns)
        if self._floor_ns is not None:
            if server >= self._floor_ns:
                self._floor_ns = None
            else:
                return self._floor_ns
        return server

    def state(self, monotonic_ns: int) -> DisciplineState:
        """Where the correction stands at ``monotonic_ns``."""
        if not self.synchronized:
            return "unsynchronized"
        if self.correction_ns(monotonic_ns) != self.target_ns:
            return "slewing"
        return "stepped" if self._stepped else "locked"

    def apply(self, offset_ns: int, monotonic_ns: int, may_step: bool) -> Action:
        """Steer toward an upstream estimate: ``offset_ns`` = upstream - reference clock.

        ``monotonic_ns``: now (no earlier than any reading already passed to
        ``server_ns``). ``may_step``: no show is scheduled or playing, so time
        may jump. The first estimate steps, later ones slew unless they differ
        by more than the step threshold; without ``may_step`` everything
        slews, and a would-be step is returned as "step_refused".
        """
        now_correction = self.correction_ns(monotonic_ns)
        change = offset_ns - now_correction
        wants_step = not self.synchronized or abs(change) > self.step_threshold_ns
        shown_ns = self.server_ns(monotonic_ns)
        self.synchronized = True
        self.target_ns = offset_ns
        self._since_ns = monotonic_ns
        if wants_step and may_step:
            self._from_ns = offset_ns
            self._stepped = True
            self.steps += 1
            if self.server_ns(monotonic_ns) < shown_ns:
                self._floor_ns = shown_ns
            return "step"
        self._from_ns = now_correction
        self._stepped = False
        if abs(change) > self.step_threshold_ns:
            self.refused_steps += 1
            return "step_refused"
        return "slew"
