"""clock.ntp: SNTP packets, request checks, the reply, the upstream filter and the discipline, in simulated time."""

from __future__ import annotations

import random
import struct

import pytest

from clock.ntp import (
    LEAP_ALARM,
    MAX_SLEW_PPM,
    NTP_UNIX_DELTA_S,
    Discipline,
    Header,
    Measurement,
    OffsetFilter,
    ServerIdentity,
    build_reply,
    measure,
    ns_to_short,
    ntp_to_unix_ns,
    reply_problem,
    request_problem,
    short_to_ns,
    unix_ns_to_ntp,
)
from clock.reference import ReferenceClock

MS = 1_000_000
S = 1_000_000_000
NOW_NS = 1_700_000_000 * S + 123_456_789
MONO_NS = 1_000 * S


def request_bytes(version: int = 4, mode: int = 3, transmit_ts: int = 0xE1E2E3E4_A1B2C3D4, poll: int = 6) -> bytes:
    return struct.pack("!BBBb11I", (version << 3) | mode, 0, poll, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, transmit_ts >> 32, transmit_ts & 0xFFFFFFFF)


def discipline(max_slew_ppm: float = MAX_SLEW_PPM) -> Discipline:
    return Discipline(ReferenceClock(NOW_NS, MONO_NS), max_slew_ppm=max_slew_ppm)


# --- timestamps -----------------------------------------------------------------


def test_unix_epoch_is_ntp_seconds_2208988800() -> None:
    """The Unix epoch is 2,208,988,800 s after the NTP epoch, fraction 0."""
    assert unix_ns_to_ntp(0) == NTP_UNIX_DELTA_S << 32
    assert ntp_to_unix_ns(NTP_UNIX_DELTA_S << 32) == 0


def test_timestamps_round_trip_within_a_nanosecond() -> None:
    """Unix ns -> NTP -> Unix ns is exact to 1 ns (a 32-bit fraction is 0.23 ns), across the 2036 era rollover."""
    rng = random.Random(5)
    for _ in range(2_000):
        unix_ns = rng.randint(0, 4_000_000_000 * S)  # to the year 2096
        assert abs(ntp_to_unix_ns(unix_ns_to_ntp(unix_ns)) - unix_ns) <= 1


def test_half_a_second_is_fraction_2_pow_31() -> None:
    """0.5 s after a whole second is the fraction 0x80000000."""
    assert unix_ns_to_ntp(S // 2) & 0xFFFFFFFF == 1 << 31


def test_era_one_after_2036() -> None:
    """Seconds with the top bit clear are read as era 1: 2036-02-07T06:28:16Z is NTP 0."""
    assert ntp_to_unix_ns(0) == (2**32 - NTP_UNIX_DELTA_S) * S
    assert unix_ns_to_ntp((2**32 - NTP_UNIX_DELTA_S) * S) == 0


def test_short_format() -> None:
    """16.16 shorts: 1.5 s is 0x18000, negative saturates at 0, huge at the maximum."""
    assert ns_to_short(1_500 * MS) == 0x18000
    assert short_to_ns(0x18000) == 1_500 * MS
    assert ns_to_short(-5) == 0
    assert ns_to_short(10**15) == 0xFFFFFFFF


def test_header_round_trip() -> None:
    """decode(encode(h)) == h for every field, a negative poll included."""
    header = Header(3, 4, 4, 2, -6, -20, 0x10, 0x20, b"GPS\0", 1 << 40, 2 << 40, 3 << 40, 4 << 40)
    assert Header.decode(header.encode()) == header
    assert len(header.encode()) == 48


def test_header_decode_ignores_extension_and_refuses_short() -> None:
    """Bytes after the 48-byte header are ignored; fewer than 48 raise ValueError."""
    data = request_bytes()
    assert Header.decode(data + b"\x00" * 20) == Header.decode(data)
    with pytest.raises(ValueError):
        Header.decode(data[:47])


# --- requests and replies -------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_client_request_of_versions_1_to_4_is_answerable(version: int) -> None:
    """A 48-byte mode-3 request of version 1..4 is answerable."""
    assert request_problem(request_bytes(version=version)) is None


@pytest.mark.parametrize(
    "data",
    [b"", b"\x23" * 10, request_bytes()[:47], request_bytes(mode=4), request_bytes(mode=1), request_bytes(version=0), request_bytes(version=7), request_bytes(version=5)],
    ids=["empty", "10 bytes", "47 bytes", "mode 4", "mode 1", "version 0", "version 7", "version 5"],
)
def test_malformed_requests_are_refused(data: bytes) -> None:
    """Short datagrams, any mode but 3 and versions outside 1..4 get a reason, not an answer."""
    assert request_problem(data)


def test_random_bytes_never_raise() -> None:
    """request_problem takes any bytes; what it accepts always decodes."""
    rng = random.Random(7)
    for _ in range(5_000):
        data = rng.randbytes(rng.choice([0, 1, 47, 48, 60, 100]))
        if request_problem(data) is None:
            assert Header.decode(data).mode == 3


def test_reply_echoes_version_and_transmit_and_stamps_times() -> None:
    """The reply: mode 4, the request's version and poll, originate = request's transmit bit for bit, our two stamps."""
    request = Header.decode(request_bytes(version=3, transmit_ts=0xDEADBEEF_01234567, poll=10))
    identity = ServerIdentity.synced(2, b"\x7f\x00\x00\x01", NOW_NS - S, 3 * MS, 5 * MS)
    reply = Header.decode(build_reply(request, NOW_NS, NOW_NS + 20_000, identity))
    assert (reply.mode, reply.version, reply.poll) == (4, 3, 10)
    assert reply.originate_ts == 0xDEADBEEF_01234567
    assert abs(ntp_to_unix_ns(reply.receive_ts) - NOW_NS) <= 1
    assert abs(ntp_to_unix_ns(reply.transmit_ts) - (NOW_NS + 20_000)) <= 1
    assert (reply.leap, reply.stratum, reply.reference_id) == (0, 3, b"\x7f\x00\x00\x01")
    assert abs(ntp_to_unix_ns(reply.reference_ts) - (NOW_NS - S)) <= 1
    assert abs(short_to_ns(reply.root_delay) - 3 * MS) < 20_000
    assert abs(short_to_ns(reply.root_dispersion) - 5 * MS) < 20_000


def test_identity_strata() -> None:
    """Local clock: stratum 8, no alarm; synced: upstream + 1 (at most 15); unsynchronized: alarm, stratum 0."""
    assert (ServerIdentity.local(NOW_NS).stratum, ServerIdentity.local(NOW_NS).leap) == (8, 0)
    assert ServerIdentity.local(NOW_NS, stratum=10).stratum == 10
    assert ServerIdentity.synced(1, bytes(4), NOW_NS, 0, 0).stratum == 2
    assert ServerIdentity.synced(15, bytes(4), NOW_NS, 0, 0).stratum == 15
    unsynced = ServerIdentity.unsynchronized()
    assert (unsynced.leap, unsynced.stratum) == (LEAP_ALARM, 0)


def good_reply(**changes: int) -> str | None:
    fields = dict(
        leap=0, mode=4, stratum=2, originate_ns=NOW_NS, receive_ns=NOW_NS + MS, transmit_ns=NOW_NS + MS + 10_000,
        sent_after_ns=NOW_NS - 1_000, received_before_ns=NOW_NS + 2 * MS,
    )  # fmt: skip
    fields.update(changes)
    return reply_problem(**fields)


def test_usable_upstream_reply() -> None:
    """A mode-4, stratum-2 answer echoing our request is usable."""
    assert good_reply() is None


@pytest.mark.parametrize(
    "changes",
    [{"mode": 3}, {"leap": 3}, {"stratum": 0}, {"stratum": 16}, {"originate_ns": NOW_NS - S}, {"transmit_ns": NOW_NS}],
    ids=["mode 3", "alarm", "kiss-o'-death", "stratum 16", "originate not ours", "transmit before receive"],
)
def test_unusable_upstream_replies(changes: dict[str, int]) -> None:
    """Wrong mode, an unsynchronized or kissing upstream, a foreign originate, time running backwards: not used."""
    assert good_reply(**changes)


def test_measure_offset_and_delay() -> None:
    """Upstream 250 ms ahead, 10 ms each way, 1 ms to answer: offset +250 ms, delay 20 ms; minus base - local."""
    t1 = NOW_NS
    t2 = t1 + 10 * MS + 250 * MS
    t3 = t2 + MS
    t4 = t1 + 21 * MS
    sample = measure(t1, t2, t3, t4, base_minus_local_ns=0, at_ns=MONO_NS)
    assert (sample.offset_ns, sample.delay_ns) == (250 * MS, 20 * MS)
    assert measure(t1, t2, t3, t4, base_minus_local_ns=30 * MS, at_ns=MONO_NS).offset_ns == 220 * MS


# --- the filter -----------------------------------------------------------------


def test_filter_picks_the_least_delay() -> None:
    """Of samples taken together, the one with the least round trip gives the estimate."""
    f = OffsetFilter()
    for offset_ms, delay_ms in [(5, 9), (3, 4), (1, 2), (4, 6)]:
        assert f.add(Measurement(offset_ms * MS, delay_ms * MS, MONO_NS)) is None
    best = f.best(MONO_NS)
    assert best is not None and best.offset_ns == 1 * MS


def test_filter_keeps_eight() -> None:
    """Only the last eight samples are kept: an old best ages out."""
    f = OffsetFilter()
    f.add(Measurement(99 * MS, 1 * MS, MONO_NS))
    for i in range(8):
        f.add(Measurement(i * MS, 2 * MS, MONO_NS + i * S))
    assert len(f.samples) == 8
    best = f.best(MONO_NS + 8 * S)
    assert best is not None and best.offset_ns != 99 * MS


def test_filter_prefers_recent_when_delays_are_close() -> None:
    """A sample 10 us slower but 17 min newer wins: dispersion grows 15 ppm of age (30 ms over 1,000 s both ways)."""
    f = OffsetFilter()
    f.add(Measurement(1 * MS, 100_000, MONO_NS))
    f.add(Measurement(2 * MS, 110_000, MONO_NS + 1_000 * S))
    best = f.best(MONO_NS + 1_000 * S)
    assert best is not None and best.offset_ns == 2 * MS


def test_filter_rejects_spikes_then_follows_a_new_path() -> None:
    """A delay far above the least is rejected with a reason; four in a row mean the path changed: start over."""
    f = OffsetFilter()
    f.add(Measurement(0, 2 * MS, MONO_NS))
    assert f.add(Measurement(80 * MS, 100 * MS, MONO_NS + S))
    assert f.add(Measurement(80 * MS, 5 * MS, MONO_NS + 2 * S)) is None  # under 3x: kept
    for i in range(3):
        assert f.add(Measurement(80 * MS, 100 * MS, MONO_NS + (3 + i) * S))
    assert f.add(Measurement(80 * MS, 100 * MS, MONO_NS + 6 * S)) is None
    assert [s.delay_ns for s in f.samples] == [100 * MS]


def test_filter_on_a_noisy_network_stays_within_half_the_least_delay() -> None:
    """Seeded random paths (1-20 ms base, exponential queueing, asymmetry within the delay): the estimate's error <= its delay / 2."""
    rng = random.Random(11)
    for _ in range(200):
        f = OffsetFilter()
        true_offset_ns = rng.randint(-S, S)
        base_ns = rng.randint(1, 20) * MS
        for i in range(rng.randint(1, 30)):
            up_ns = base_ns // 2 + int(rng.expovariate(1 / (5 * MS)))
            down_ns = base_ns // 2 + int(rng.expovariate(1 / (5 * MS)))
            t1 = NOW_NS + i * 64 * S
            t2 = t1 + up_ns + true_offset_ns
            t3 = t2 + 50_000
            t4 = t1 + up_ns + 50_000 + down_ns
            f.add(measure(t1, t2, t3, t4, 0, MONO_NS + i * 64 * S))
        best = f.best(MONO_NS + 30 * 64 * S)
        assert best is not None
        assert abs(best.offset_ns - true_offset_ns) <= best.delay_ns // 2 + 1


# --- the discipline -------------------------------------------------------------


def test_without_upstream_server_time_is_the_reference() -> None:
    """Before any estimate the correction is 0 and the state unsynchronized."""
    d = discipline()
    assert d.server_ns(MONO_NS + 5 * S) == NOW_NS + 5 * S
    assert d.state(MONO_NS) == "unsynchronized"


def test_first_estimate_steps_when_allowed() -> None:
    """The first estimate (+250 ms) steps the clock at once; the state says stepped."""
    d = discipline()
    assert d.apply(250 * MS, MONO_NS + S, may_step=True) == "step"
    assert d.server_ns(MONO_NS + S) == NOW_NS + S + 250 * MS
    assert d.state(MONO_NS + S) == "stepped"


def test_later_estimates_slew_at_most_max_slew_ppm() -> None:
    """After the step, a 5 ms change takes 50 s at 100 ppm: the rate never exceeds it, then it is locked."""
    d = discipline()
    d.apply(250 * MS, MONO_NS, may_step=True)
    assert d.apply(255 * MS, MONO_NS, may_step=True) == "slew"
    previous = d.server_ns(MONO_NS)
    for step in range(1, 61):
        mono = MONO_NS + step * S
        now = d.server_ns(mono)
        assert S <= now - previous <= S + S * MAX_SLEW_PPM // 1_000_000
        previous = now
    assert d.correction_ns(MONO_NS + 50 * S) == 255 * MS
    assert d.correction_ns(MONO_NS + 25 * S) == 252_500_000
    assert d.state(MONO_NS + 60 * S) == "locked"
    assert d.state(MONO_NS + 10 * S) == "slewing"


def test_no_jump_during_a_show() -> None:
    """Without may_step, a 400 ms change (over the 128 ms step threshold) slews and is reported as a refused step."""
    d = discipline()
    d.apply(0, MONO_NS, may_step=True)
    assert d.apply(400 * MS, MONO_NS + S, may_step=False) == "step_refused"
    assert d.refused_steps == 1
    previous = d.server_ns(MONO_NS + S)
    for ms in range(1, 20_001, 7):
        now = d.server_ns(MONO_NS + S + ms * MS)
        assert 0 < now - previous <= 7 * MS + 7 * MS * MAX_SLEW_PPM // 1_000_000
        previous = now


def test_first_estimate_during_a_show_slews() -> None:
    """A node that first hears its upstream while a show is scheduled slews from 0 instead of stepping."""
    d = discipline()
    assert d.apply(50 * MS, MONO_NS, may_step=False) == "slew"
    assert d.correction_ns(MONO_NS + 10 * S) == 1 * MS
    assert d.steps == 0


def test_large_change_steps_again_between_shows() -> None:
    """Between shows a change over the threshold steps again; under it, it slews."""
    d = discipline()
    d.apply(0, MONO_NS, may_step=True)
    assert d.apply(100 * MS, MONO_NS + S, may_step=True) == "slew"
    assert d.apply(-300 * MS, MONO_NS + 2 * S, may_step=True) == "step"
    assert d.steps == 2


def test_a_step_backwards_holds_time_still() -> None:
    """Stepping -250 ms: server time holds at its value until the stepped clock catches up, never goes back."""
    d = discipline()
    before = d.server_ns(MONO_NS + S)
    d.apply(-250 * MS, MONO_NS + S, may_step=True)
    assert d.server_ns(MONO_NS + S) == before
    assert d.server_ns(MONO_NS + S + 100 * MS) == before
    assert d.server_ns(MONO_NS + S + 300 * MS) == before + 50 * MS


def test_random_estimates_never_run_time_backwards_or_jump_in_a_show() -> None:
    """Seeded random estimates and show windows: time never goes back; with may_step false it moves at 1 +- max_slew_ppm."""
    rng = random.Random(13)
    for _ in range(100):
        max_ppm = rng.choice([50, 100, 500])
        d = discipline(max_ppm)
        mono = MONO_NS
        previous = d.server_ns(mono)
        for _ in range(200):
            dt = rng.randint(1, 5 * S)
            mono += dt
            now = d.server_ns(mono)
            assert now >= previous
            may_step = rng.random() < 0.3
            if not may_step:  # the rate only, no jump
                assert now - previous <= dt + dt * max_ppm // 1_000_000 + 1
            if rng.random() < 0.3:
                d.apply(rng.randint(-S, S), mono, may_step)
                after = d.server_ns(mono)
                assert after >= now
                if not may_step:
                    assert after == now
            previous = d.server_ns(mono)
