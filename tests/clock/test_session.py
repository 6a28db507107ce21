"""clock.session: the polling policy and pong matching of one device, in simulated time."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from clock.estimator import STEP_CONFIRMATIONS, EstimatorConfig
from clock.sample import Rejection, Sample
from clock.session import SEQ_MODULO, DeviceSession, PollingConfig

MS = 1_000_000
S = 1_000_000_000
DEVICE_AHEAD_NS = 2 * S  # the simulated device's clock reads server + 2 s


def answer(
    session: DeviceSession, ping: tuple[int, int], delay_ns: int, turnaround_ns: int = 0, device_ahead_ns: int = DEVICE_AHEAD_NS
) -> Sample | Rejection:
    """Pong for ``ping`` over a symmetric path of round trip ``delay_ns``; returns what the session made of it."""
    seq, t0_ns = ping
    t1 = t0_ns + delay_ns // 2 + device_ahead_ns
    t3 = t0_ns + delay_ns + turnaround_ns
    return session.receive_pong(seq, t0_ns // 1000, t1, t1 + turnaround_ns, t3)


def run_prompt_device(
    session: DeviceSession,
    start_ns: int,
    until_ns: int,
    delay_ns: Callable[[int], int],
    device_ahead_ns: Callable[[int], int] = lambda index: DEVICE_AHEAD_NS,
) -> tuple[list[int], list[Sample | Rejection]]:
    """Drive the session by its deadlines, answering ping i after ``delay_ns(i)``; returns ping times and results."""
    sent: list[int] = []
    results: list[Sample | Rejection] = []
    now = start_ns
    while now <= until_ns:
        ping = session.poll(now)
        assert ping is not None, "poll at next_deadline must send"
        delay = delay_ns(len(sent))
        assert delay < session.polling.burst_interval_ns  # answered before the next ping is due
        results.append(answer(session, ping, delay, device_ahead_ns=device_ahead_ns(len(sent))))
        sent.append(now)
        now = session.next_deadline(now + delay)
    return sent, results


def gaps_ms(sent: list[int]) -> list[float]:
    return [(b - a) / MS for a, b in zip(sent, sent[1:])]


def test_first_poll_sends_at_once() -> None:
    """A new session's deadline is now and its first poll sends seq 0 stamped now."""
    session = DeviceSession()
    assert session.next_deadline(7 * S) == 7 * S
    assert session.poll(7 * S) == (0, 7 * S)


def test_estimate_is_none_until_a_pong() -> None:
    """The session has no estimate before its first accepted pong, and one holding the device's offset after."""
    session = DeviceSession(estimator=EstimatorConfig(device_resolution_ns=0))
    ping = session.poll(1 * S)
    assert ping is not None and session.estimate(1 * S) is None
    assert isinstance(answer(session, ping, 4 * MS), Sample)
    estimate = session.estimate(1 * S + 4 * MS)
    assert estimate is not None and estimate.offset_ns == -DEVICE_AHEAD_NS


BURST = PollingConfig().burst_count


def test_burst_then_sparse_when_bound_meets_target() -> None:
    """Answered in 2 ms: burst_count pings 50 ms apart, then one every 2 s (bound about 2 ms <= 5 ms)."""
    session = DeviceSession()
    sent, _ = run_prompt_device(session, 10 * S, 20 * S, delay_ns=lambda index: 2 * MS)
    assert gaps_ms(sent) == [50] * (BURST - 1) + [2000] * 4
    estimate = session.estimate(sent[-1])
    assert estimate is not None and estimate.bound_ns <= 5 * MS


def test_burst_continues_to_burst_max_then_boosts_while_bound_above_target() -> None:
    """With the bound never under target (0.5 ms < 1 ms resolution): 40 pings 50 ms apart, then every 500 ms."""
    session = DeviceSession(PollingConfig(target_bound_ns=500_000))
    sent, _ = run_prompt_device(session, 10 * S, 14 * S, delay_ns=lambda index: 2 * MS)
    assert gaps_ms(sent) == [50] * 39 + [500] * 4
    estimate = session.estimate(sent[-1])
    assert estimate is not None and estimate.bound_ns > 500_000


def test_burst_ends_between_burst_count_and_burst_max_once_bound_meets_target() -> None:
    """Pongs of 20 ms then 44 ms keep the bound above 5 ms past the burst_count-th ping; the first 2 ms pong ends the burst."""
    session = DeviceSession()
    last_slow = BURST + 6
    sent, _ = run_prompt_device(
        session, 10 * S, 16 * S, delay_ns=lambda index: 20 * MS if index == 0 else 44 * MS if index < last_slow else 2 * MS
    )
    assert gaps_ms(sent) == [50] * last_slow + [2000] * 2


@pytest.mark.parametrize("seed", range(4))
def test_interval_follows_the_bound_at_every_poll(seed: int) -> None:
    """On random 1-45 ms pongs, each interval is: burst for burst_count, burst while bound > 5 ms up to 40, then 500 ms, else 2 s."""
    rng = random.Random(seed)
    session = DeviceSession()
    now = 10 * S
    for index in range(120):
        ping = session.poll(now)
        assert ping is not None
        delay = int(rng.uniform(1, 45) * MS)
        assert isinstance(answer(session, ping, delay), Sample)
        estimate = session.estimate(now + delay)
        assert estimate is not None
        if index + 1 < BURST:
            expected = 50 * MS
        elif estimate.bound_ns > 5 * MS:
            expected = 50 * MS if index + 1 < 40 else 500 * MS
        else:
            expected = 2 * S
        assert session.next_deadline(now + delay) - now == expected, (index, estimate)
        now += expected


def test_detected_clock_step_restarts_the_burst() -> None:
    """Sparse at 2 s; the device clock steps +300 ms: 2 OUTLIER pongs, the 3rd confirms, then a new burst 50 ms apart."""
    session = DeviceSession()
    step_at = BURST + 3
    sent, results = run_prompt_device(
        session, 10 * S, 60 * S, delay_ns=lambda index: 2 * MS,
        device_ahead_ns=lambda index: DEVICE_AHEAD_NS + (300 * MS if index >= step_at else 0),
    )
    assert results[step_at:step_at + 2] == [Rejection.OUTLIER] * (STEP_CONFIRMATIONS - 1)
    assert all(isinstance(result, Sample) for result in results[:step_at] + results[step_at + 2:])
    assert session.estimator.steps == 1
    gaps = gaps_ms(sent)
    assert gaps[:BURST - 1] == [50] * (BURST - 1)
    assert gaps[BURST - 1:step_at + 2] == [2000] * 6  # sparse, including the three after the step
    assert gaps[step_at + 2:step_at + 2 + BURST] == [50] * BURST  # the burst again, from the confirming pong
    assert set(gaps[step_at + 2 + BURST:]) == {2000}
    estimate = session.estimate(sent[-1])
    assert estimate is not None and abs(estimate.offset_ns + DEVICE_AHEAD_NS + 300 * MS) <= estimate.bound_ns
    assert session.rejections == {Rejection.OUTLIER: STEP_CONFIRMATIONS - 1}


def test_no_ping_before_the_interval() -> None:
    """During the burst, poll one nanosecond before the 50 ms spacing sends nothing."""
    session = DeviceSession()
    ping = session.poll(0)
    assert ping is not None and isinstance(answer(session, ping, 2 * MS), Sample)
    assert session.poll(50 * MS - 1) is None
    assert session.poll(50 * MS) == (1, 50 * MS)


NO_BURST = PollingConfig(burst_count=0, burst_max=0)


def test_good_samples_switch_boost_to_sparse() -> None:
    """With no burst, a slow pong gives the 500 ms interval and a fast one the 2 s interval."""
    session = DeviceSession(NO_BURST)
    first = session.poll(0)
    assert first is not None and isinstance(answer(session, first, 40 * MS), Sample)
    assert session.next_deadline(40 * MS) == 500 * MS
    second = session.poll(500 * MS)
    assert second is not None and isinstance(answer(session, second, 2 * MS), Sample)
    assert session.next_deadline(502 * MS) == 2_500 * MS


def test_boost_without_any_estimate() -> None:
    """With no burst and no accepted sample, a session past its answer timeout polls at the boost interval."""
    session = DeviceSession(PollingConfig(burst_count=0, burst_max=0, answer_timeout_ns=100 * MS))
    assert session.poll(0) == (0, 0)
    assert session.next_deadline(200 * MS) == 500 * MS


def test_burst_pings_are_pipelined_up_to_max_outstanding() -> None:
    """In the burst, unanswered pings do not hold back the next: 8 go out 50 ms apart, the 9th waits for the 3 s timeout."""
    session = DeviceSession()
    assert [session.poll(i * 50 * MS) for i in range(8)] == [(i, i * 50 * MS) for i in range(8)]
    assert session.next_deadline(400 * MS) == 350 * MS + 3 * S
    assert session.poll(350 * MS + 3 * S - 1) is None
    assert session.poll(350 * MS + 3 * S) == (8, 350 * MS + 3 * S)


def test_slow_path_still_samples_every_burst_interval() -> None:
    """Pongs taking 120 ms: the burst's pings still go out every 50 ms and all 12 are kept."""
    session = DeviceSession()
    in_flight: list[tuple[int, tuple[int, int]]] = []  # (arrival, ping)
    sent: list[int] = []
    now = 0
    while len(sent) < 12:
        for arrival, answered in [p for p in in_flight if p[0] <= now]:
            in_flight.remove((arrival, answered))
            assert isinstance(answer(session, answered, 120 * MS), Sample)
        ping = session.poll(now)
        if ping is not None:
            sent.append(now)
            in_flight.append((now + 120 * MS, ping))
        now = min([session.next_deadline(now), *[p[0] for p in in_flight]])
    assert sent == [i * 50 * MS for i in range(12)]


def test_unanswered_ping_blocks_the_next_until_the_timeout() -> None:
    """Past the burst, an unanswered ping holds back the next one until answer_timeout_ns (3 s) has passed."""
    session = DeviceSession(NO_BURST)
    first = session.poll(0)
    assert first is not None and isinstance(answer(session, first, 2 * MS), Sample)
    assert session.poll(2 * S) == (1, 2 * S)  # never answered
    assert session.next_deadline(4 * S) == 5 * S
    assert session.poll(5 * S - 1) is None
    assert session.poll(5 * S) == (2, 5 * S)


def test_late_pong_is_still_matched() -> None:
    """A pong arriving after its ping timed out (and after later pings) is still used."""
    session = DeviceSession()
    assert session.poll(0) == (0, 0)
    assert session.poll(3 * S) == (1, 3 * S)
    result = session.receive_pong(0, 0, DEVICE_AHEAD_NS + 1 * S, DEVICE_AHEAD_NS + 1 * S, 3_500 * MS)
    assert isinstance(result, Sample)
    assert (result.t0_server_ns, result.t3_server_ns) == (0, 3_500 * MS)
    assert session.rejections == {}


def test_unknown_seq_is_rejected_and_counted() -> None:
    """A pong for a seq never sent, or answered already, returns UNKNOWN_PING and is counted."""
    session = DeviceSession()
    ping = session.poll(0)
    assert ping is not None
    assert session.receive_pong(99, 0, 5, 5, 1 * MS) is Rejection.UNKNOWN_PING
    assert isinstance(answer(session, ping, 2 * MS), Sample)
    assert answer(session, ping, 2 * MS) is Rejection.UNKNOWN_PING
    assert session.rejections == {Rejection.UNKNOWN_PING: 2}


def test_echo_mismatch_is_rejected_and_counted() -> None:
    """A pong echoing another t0_us than its ping's returns ECHO_MISMATCH and is counted."""
    session = DeviceSession()
    assert session.poll(5 * S) == (0, 5 * S)
    assert session.receive_pong(0, 5_000_001, 7 * S, 7 * S, 5 * S + 2 * MS) is Rejection.ECHO_MISMATCH
    assert session.rejections == {Rejection.ECHO_MISMATCH: 1}
    assert session.estimate(6 * S) is None


def test_echo_of_t0_is_compared_in_whole_microseconds() -> None:
    """A ping at 1_234_567_891 ns is answered by echoing t0_us 1_234_567 (truncated)."""
    session = DeviceSession()
    assert session.poll(1_234_567_891) == (0, 1_234_567_891)
    assert isinstance(session.receive_pong(0, 1_234_567, 9 * S, 9 * S, 1_236_567_891), Sample)


def test_bad_stamps_in_a_pong_are_rejected_and_counted() -> None:
    """A pong with t2 before t1 returns DEVICE_TIME_BACKWARDS, counted; the estimator stays empty."""
    session = DeviceSession()
    assert session.poll(0) == (0, 0)
    assert session.receive_pong(0, 0, 5 * S, 5 * S - 1, 2 * MS) is Rejection.DEVICE_TIME_BACKWARDS
    assert session.rejections == {Rejection.DEVICE_TIME_BACKWARDS: 1}
    assert session.estimate(3 * MS) is None


def test_seq_wraps_modulo_2_32() -> None:
    """After seq 2**32 - 1 the next ping is seq 0, and both are matched."""
    session = DeviceSession()
    # Reaching the top by polling would take 2**32 pings; start the counter there instead.
    session._next_seq = SEQ_MODULO - 1  # noqa: SLF001
    top = session.poll(0)
    assert top == (2**32 - 1, 0)
    assert isinstance(answer(session, top, 2 * MS), Sample)
    wrapped = session.poll(50 * MS)
    assert wrapped == (0, 50 * MS)
    assert isinstance(answer(session, wrapped, 2 * MS), Sample)


def test_max_outstanding_forgets_the_oldest() -> None:
    """With max_outstanding 2 and three unanswered pings, the oldest is forgotten, the others matched."""
    session = DeviceSession(PollingConfig(max_outstanding=2, answer_timeout_ns=1 * S))
    pings = [session.poll(t) for t in (0, 1 * S, 2 * S)]
    assert pings == [(0, 0), (1, 1 * S), (2, 2 * S)]
    assert session.receive_pong(0, 0, 9 * S, 9 * S, 2_100 * MS) is Rejection.UNKNOWN_PING
    assert isinstance(session.receive_pong(1, 1_000_000, 9 * S, 9 * S, 2_100 * MS), Sample)
    assert isinstance(session.receive_pong(2, 2_000_000, 9 * S, 9 * S, 2_100 * MS), Sample)


def test_estimator_config_is_passed_through() -> None:
    """The session's estimator uses the EstimatorConfig it was given."""
    config = EstimatorConfig(window=4)
    assert DeviceSession(estimator=config).estimator.config is config


@pytest.mark.parametrize("seed", range(6))
def test_simulated_session_keeps_the_true_offset_within_bound(seed: int) -> None:
    """Driven by next_deadline over 60 s of jittery, lossy network, every estimate holds the true offset."""
    rng = random.Random(seed)
    offset_ns = rng.randint(-10 * S, 10 * S)  # server - device
    session = DeviceSession()
    pongs: list[tuple[int, int, int, int, int]] = []  # arrival, seq, t0_us, t1, t2
    now = rng.randint(0, 1000 * S)
    end = now + 60 * S
    sent = 0  # pings sent
    while now < end:
        ping = session.poll(now)
        if ping is not None:
            sent += 1
            if rng.random() > 0.1:
                up, down = rng.uniform(1, 60) * MS, rng.uniform(1, 60) * MS
                t1 = int(now + up - offset_ns) // MS * MS
                pongs.append((int(now + up + down), ping[0], ping[1] // 1000, t1, t1))
        due = [p for p in pongs if p[0] <= now]
        for pong in due:
            pongs.remove(pong)
            assert isinstance(session.receive_pong(*pong[1:], now_ns=pong[0]), Sample)
            estimate = session.estimate(pong[0])
            assert estimate is not None
            assert abs(offset_ns - estimate.offset_ns) <= estimate.bound_ns
        now = min([session.next_deadline(now), *[p[0] for p in pongs]])
    assert sent >= 12


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"burst_interval_ns": 0}, "burst_interval_ns"),
        ({"sparse_interval_ns": -1}, "sparse_interval_ns"),
        ({"boost_interval_ns": 0}, "boost_interval_ns"),
        ({"answer_timeout_ns": 0}, "answer_timeout_ns"),
        ({"burst_count": -1}, "burst_count"),
        ({"max_outstanding": 0}, "max_outstanding"),
    ],
)
def test_polling_config_error_names_the_option(options: dict[str, int], name: str) -> None:
    """An invalid PollingConfig raises ValueError naming the option."""
    with pytest.raises(ValueError, match=name):
        PollingConfig(**options)


def test_lost_ping_does_not_hold_back_the_next_once_the_newest_is_answered() -> None:
    """A ping lost more than answer_timeout_ns ago no longer delays the burst after a later ping is answered."""
    session = DeviceSession()
    assert session.poll(0) == (0, 0)  # lost: never answered
    assert session.poll(3 * S) == (1, 3 * S)
    assert isinstance(session.receive_pong(1, 3_000_000, 7 * S, 7 * S, 3 * S + 2 * MS), Sample)
    assert session.poll(3 * S + 50 * MS) == (2, 3 * S + 50 * MS)
