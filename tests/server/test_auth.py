"""The wrong-token slowdown: doubling delays per address, forgotten after a quiet minute."""

from __future__ import annotations

import asyncio
import time

from server.auth import FIRST_DELAY_S, FORGET_AFTER_S, MAX_DELAY_S, Gate, Throttle, token_matches

TOKEN = "the-right-token-0123456789"


def test_token_matches_only_the_same_token() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN[:-1], TOKEN)
    assert not token_matches("", TOKEN)
    assert not token_matches("é" + TOKEN, TOKEN)


def test_delays_double_up_to_the_cap_per_address() -> None:
    throttle = Throttle()
    delays = [throttle.check("10.0.0.1", "wrong", TOKEN, now_s=float(i))[1] for i in range(8)]
    assert delays == [FIRST_DELAY_S * 2**i for i in range(5)] + [MAX_DELAY_S] * 3
    assert throttle.delay_s("10.0.0.2", 8.0) == 0.0  # another address is not slowed
    assert throttle.check("10.0.0.1", TOKEN, TOKEN, 9.0) == (True, 0.0)


def test_a_quiet_minute_forgets_the_failures() -> None:
    throttle = Throttle()
    for i in range(4):
        throttle.failed("10.0.0.1", float(i))
    assert throttle.delay_s("10.0.0.1", 3.0) == FIRST_DELAY_S * 8
    assert throttle.delay_s("10.0.0.1", 3.0 + FORGET_AFTER_S + 1) == 0.0
    assert throttle.check("10.0.0.1", "wrong", TOKEN, 100.0)[1] == FIRST_DELAY_S


async def test_gate_serializes_guesses_from_one_address() -> None:
    """Three parallel wrong guesses from one address take the sum of their delays, not the longest."""
    gate = Gate()
    began = time.monotonic()
    results = await asyncio.gather(*(gate.admit("10.0.0.9", "wrong", TOKEN) for _ in range(3)))
    elapsed = time.monotonic() - began
    assert results == [False, False, False]
    assert elapsed >= FIRST_DELAY_S * (1 + 2 + 4) * 0.95
    assert await gate.admit("10.0.0.10", TOKEN, TOKEN)  # another address, right token: at once
