"""The server's time base: its disciplined clock, the upstream NTP poller, the SNTP responder.

- ``ServerClock``: reads the monotonic clock; server time is the reference
  clock plus the discipline's correction toward the upstream (clock/ntp.py).
  The system clock is never touched.
- ``UpstreamPoller``: asks an upstream NTP server with ``ntplib`` (a burst at
  start, then every ``poll_s``), filters, and steers the discipline.
- ``SntpResponder``: answers SNTP requests on UDP from the server clock, for
  native clients and for other nodes that take this one as their upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import ntplib

from clock.ntp import (
    MAX_SLEW_PPM,
    NS,
    NTP_UNIX_DELTA_S,
    PHI_PPM,
    Discipline,
    DisciplineState,
    Header,
    OffsetFilter,
    ServerIdentity,
    build_reply,
    measure,
    reply_problem,
    request_problem,
)
from clock.reference import ReferenceClock

log = logging.getLogger("unisono.timebase")

# The quick burst at start (ntpd's iburst sends 8, chrony's 4): enough for the
# filter to pick a good first estimate within seconds.
BURST_COUNT = 4
# iburst spaces its queries 2 s apart (public servers rate-limit faster
# clients); shorter polls (tests) space them a quarter of the poll apart.
BURST_INTERVAL_S = 2.0
# How long to wait for an answer.
QUERY_TIMEOUT_S = 2.0
# The wall clock moved against the monotonic one by more than this during an
# exchange: a step, not drift; the exchange is not usable.
WALL_STEP_NS = 1_000_000
# The wall clock moved against the monotonic one by more than this between two
# checks (the hub checks about once a second): a step (an operator, `date -s`,
# NTP's step), logged once each. A slew moves it at most 0.5 ms a second.
WALL_STEP_LOG_NS = 100_000_000
# How often the status callback (metrics) is refreshed while waiting: a slew
# changes the offset between polls.
REPORT_INTERVAL_S = 5.0
# The reference id of an upstream whose address is not known yet.
UNKNOWN_ID = bytes(4)


class ServerClock:
    """The I/O side of the reference clock: reads the monotonic clock, adds the discipline's correction."""

    def __init__(self, reference: ReferenceClock | None = None, max_slew_ppm: float = MAX_SLEW_PPM) -> None:
        reference = reference or ReferenceClock(time.time_ns(), time.monotonic_ns())
        self.discipline = Discipline(reference, max_slew_ppm=max_slew_ppm)
        # The system's wall clock against the reference (wall - reference, ns) at the last check, and its steps seen.
        self._wall_drift_ns = reference.wall_drift_ns(time.time_ns(), time.monotonic_ns())
        self.wall_steps = 0

    @property
    def reference(self) -> ReferenceClock:
        """The undisciplined base: wall time at start plus monotonic time since."""
        return self.discipline.reference

    def now_ns(self) -> int:
        """Server time now, in nanoseconds."""
        return self.discipline.server_ns(time.monotonic_ns())

    def check_wall(self) -> int | None:
        """Notice a step of the system's wall clock since the last check; returns it (ns), or None.

        Server time does not follow the wall clock (it runs on the monotonic
        one): a step is only logged, once, and counted in ``wall_health``.
        """
        drift_ns = self.reference.wall_drift_ns(time.time_ns(), time.monotonic_ns())
        step_ns = drift_ns - self._wall_drift_ns
        self._wall_drift_ns = drift_ns
        if abs(step_ns) < WALL_STEP_LOG_NS:
            return None
        self.wall_steps += 1
        log.warning(
            "the system clock stepped %+.3f s (now %+.3f s from the server's time); the server's time does not follow "
            "it (it runs on the monotonic clock): scheduled starts and device offsets are unchanged",
            step_ns / NS, drift_ns / NS,
        )  # fmt: skip
        return step_ns

    def wall_health(self) -> dict[str, float | int]:
        """For the status: the wall clock minus the reference (ms, as of the last check) and how many steps were seen."""
        return {"wall_drift_ms": round(self._wall_drift_ns / 1e6, 3), "wall_steps": self.wall_steps}


def reference_id(address: str) -> bytes:
    """An upstream's reference id: its IPv4 address, or the first 4 bytes of the MD5 of an IPv6 one (RFC 5905 section 7.3)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return ip.packed
    return hashlib.md5(ip.packed).digest()[:4]


def _ntp_seconds_to_unix_ns(seconds: float) -> int:
    return round((seconds - NTP_UNIX_DELTA_S) * NS)


class UpstreamPoller:
    """Keeps ``clock`` following an upstream NTP server. ``run()`` until cancelled.

    ``may_step()``: whether time may jump now (no show scheduled or playing).
    ``on_offset(ms)``: gets ``offset_ms()`` after every poll and every few seconds.
    """

    def __init__(
        self,
        clock: ServerClock,
        host: str,
        port: int = 123,
        poll_s: float = 64.0,
        may_step: Callable[[], bool] = lambda: True,
        on_offset: Callable[[float | None], None] | None = None,
        timeout_s: float = QUERY_TIMEOUT_S,
    ) -> None:
        self.clock = clock
        self.timeout_s = timeout_s
        self.host, self.port = host, port
        self.poll_s = poll_s
        self.may_step = may_step
        self.on_offset = on_offset
        self.filter = OffsetFilter()
        self.stratum: int | None = None
        self._upstream_id = UNKNOWN_ID
        self._root_delay_ns = 0
        self._root_dispersion_ns = 0
        self._last_sync_monotonic_ns: int | None = None
        self._last_offset_ns: int | None = None  # server - upstream, as last measured
        self.queries = 0
        self.failures = 0

    @property
    def name(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def run(self) -> None:
        burst_gap_s = min(BURST_INTERVAL_S, self.poll_s / 4)
        for i in range(BURST_COUNT):
            if i:
                await asyncio.sleep(burst_gap_s)
            await self.query()
        self.steer()
        while True:
            await self._wait(self.poll_s)
            await self.query()
            self.steer()

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, refreshing the status callback meanwhile."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while (left := until - loop.time()) > 0:
            await asyncio.sleep(min(left, REPORT_INTERVAL_S))
            self._report()

    async def query(self) -> None:
        """One exchange with the upstream; a usable one joins the filter. Never raises (but cancels)."""
        self.queries += 1
        wall_before_ns, mono_before_ns = time.time_ns(), time.monotonic_ns()
        try:
            stats = await asyncio.to_thread(self._exchange)
        except (ntplib.NTPException, OSError) as exc:
            self.failures += 1
            log.warning("NTP upstream %s: no usable answer: %s", self.name, exc)
            return
        wall_after_ns, mono_after_ns = time.time_ns(), time.monotonic_ns()
        reference = self.clock.reference
        # local - base, before and after: the wall clock may be slewed or stepped by the system.
        before_ns = wall_before_ns - reference.server_ns(mono_before_ns)
        after_ns = wall_after_ns - reference.server_ns(mono_after_ns)
        if abs(after_ns - before_ns) > WALL_STEP_NS:
            log.warning("NTP upstream %s: the system clock moved during the exchange; sample dropped", self.name)
            return
        t1, t2 = _ntp_seconds_to_unix_ns(stats.orig_timestamp), _ntp_seconds_to_unix_ns(stats.recv_timestamp)
        t3, t4 = _ntp_seconds_to_unix_ns(stats.tx_timestamp), _ntp_seconds_to_unix_ns(stats.dest_timestamp)
        problem = reply_problem(
            leap=stats.leap, mode=stats.mode, stratum=stats.stratum, originate_ns=t1, receive_ns=t2,
            transmit_ns=t3, sent_after_ns=wall_before_ns, received_before_ns=wall_after_ns,
        )  # fmt: skip
        if problem is not None:
            self.failures += 1
            log.warning("NTP upstream %s: answer not used: %s", self.name, problem)
            return
        at_ns = (mono_before_ns + mono_after_ns) // 2
        sample = measure(t1, t2, t3, t4, -(before_ns + after_ns) // 2, at_ns)
        # server - upstream, at the exchange: what the discipline still had to correct.
        self._last_offset_ns = self.clock.discipline.correction_ns(at_ns) - sample.offset_ns
        rejected = self.filter.add(sample)
        if rejected is not None:
            log.debug("NTP upstream %s: sample rejected: %s", self.name, rejected)
            return
        self.stratum = int(stats.stratum)
        self._root_delay_ns = round(float(stats.root_delay) * NS)
        self._root_dispersion_ns = round(float(stats.root_dispersion) * NS)

    def _exchange(self) -> ntplib.NTPStats:
        """One blocking ntplib request (in a worker thread); learns the upstream's reference id once."""
        stats = ntplib.NTPClient().request(self.host, port=self.port, version=4, timeout=self.timeout_s)
        if self._upstream_id == UNKNOWN_ID:
            try:
                self._upstream_id = reference_id(str(socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0][4][0]))
            except (OSError, ValueError):
                pass
        return stats

    def steer(self) -> None:
        """Apply the filter's estimate to the clock's discipline, and report."""
        mono_ns = time.monotonic_ns()
        best = self.filter.best(mono_ns)
        if best is None:
            self._report()
            return
        action = self.clock.discipline.apply(best.offset_ns, mono_ns, self.may_step())
        self._last_sync_monotonic_ns = mono_ns
        if action == "step":
            log.info("server clock stepped to NTP upstream %s: %+.3f ms", self.name, best.offset_ns / 1e6)
        elif action == "step_refused":
            log.warning(
                "server clock is %.3f ms off NTP upstream %s, more than a step, during a show: slewing instead",
                (self.clock.discipline.correction_ns(mono_ns) - best.offset_ns) / 1e6, self.name,
            )  # fmt: skip
        self._report()

    def _report(self) -> None:
        if self.on_offset is not None:
            self.on_offset(self.offset_ms())

    def offset_ms(self) -> float | None:
        """Server - upstream now (ms), by the filter's estimate: what the discipline has yet to slew; None before the first."""
        discipline = self.clock.discipline
        if not discipline.synchronized:
            return None
        return round((discipline.correction_ns(time.monotonic_ns()) - discipline.target_ns) / 1e6, 3)

    def state(self) -> DisciplineState:
        return self.clock.discipline.state(time.monotonic_ns())

    def status(self) -> dict[str, float | str | None]:
        """The clock's health: upstream, offset (server - upstream, ms, by the current estimate), stratum, age, state."""
        mono_ns = time.monotonic_ns()
        discipline = self.clock.discipline
        age_s = None if self._last_sync_monotonic_ns is None else round((mono_ns - self._last_sync_monotonic_ns) / NS, 3)
        return {
            "upstream": self.name,
            "upstream_offset_ms": self.offset_ms(),
            "last_offset_ms": None if self._last_offset_ns is None else round(self._last_offset_ns / 1e6, 3),
            "correction_ms": round(discipline.correction_ns(mono_ns) / 1e6, 3),
            "stratum": self.stratum,
            "last_sync_age_s": age_s,
            "state": discipline.state(mono_ns),
        }

    def identity(self) -> ServerIdentity:
        """What this server's SNTP answers say while it follows the upstream."""
        mono_ns = time.monotonic_ns()
        if self.stratum is None or self._last_sync_monotonic_ns is None:
            return ServerIdentity.unsynchronized()
        best = self.filter.best(mono_ns)
        delay_ns = 0 if best is None else best.delay_ns
        age_ns = mono_ns - self._last_sync_monotonic_ns
        return ServerIdentity.synced(
            upstream_stratum=self.stratum,
            upstream_id=self._upstream_id,
            reference_ns=self.clock.discipline.server_ns(self._last_sync_monotonic_ns),
            root_delay_ns=self._root_delay_ns + delay_ns,
            # Our share of the dispersion: half the round trip plus what PHI adds since the last update.
            root_dispersion_ns=self._root_dispersion_ns + delay_ns // 2 + PHI_PPM * age_ns // 1_000_000,
        )


class SntpResponder(asyncio.DatagramProtocol):
    """Answers SNTP client requests from ``clock``; drops anything else (counted, debug-logged)."""

    def __init__(self, clock: ServerClock, identity: Callable[[], ServerIdentity]) -> None:
        self.clock = clock
        self.identity = identity
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = 0
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        received_ns = self.clock.now_ns()  # first: every line before it would count as network delay
        try:
            problem = request_problem(data)
            if problem is not None:
                self.dropped += 1
                log.debug("SNTP request from %s dropped: %s", addr[0], problem)
                return
            request, identity = Header.decode(data), self.identity()
            assert self.transport is not None
            self.transport.sendto(build_reply(request, received_ns, self.clock.now_ns(), identity), addr)
            self.answered += 1
        except Exception:  # nothing escapes: the responder keeps answering
            self.dropped += 1
            log.exception("SNTP request from %s: answer failed", addr[0])

    def error_received(self, exc: Exception) -> None:
        log.debug("SNTP socket error: %s", exc)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) it listens on."""
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)


async def start_responder(clock: ServerClock, identity: Callable[[], ServerIdentity], host: str, port: int) -> SntpResponder:
    """An ``SntpResponder`` listening on UDP ``host``:``port`` (0: any free port); close its ``transport`` to stop."""
    loop = asyncio.get_running_loop()
    responder = SntpResponder(clock, identity)
    await loop.create_datagram_endpoint(lambda: responder, local_addr=(host, port))
    return responder
