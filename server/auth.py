"""Organizer authentication: constant-time token comparison, and a slowdown for guessers.

Every wrong token from an address makes that address wait longer before its
next answer (doubling from 0.25 s up to 5 s); a quiet minute forgets it. The
checks of one address run one at a time, each after that address's current
delay, so parallel guesses gain nothing: a guesser gets at most one try per
5 s per address, and an organizer who mistyped once loses a quarter of a
second. ``Throttle`` is pure (time passed in); ``Gate`` adds the waiting.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

FIRST_DELAY_S = 0.25
MAX_DELAY_S = 5.0
FORGET_AFTER_S = 60.0
# Addresses remembered at most; beyond it the oldest are forgotten first.
MAX_TRACKED = 10_000


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison, so the time taken tells nothing about the token."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@dataclass
class _Failures:
    count: int
    last_s: float


class Throttle:
    """Counts wrong tokens per client address and says how long to delay its answers."""

    def __init__(self) -> None:
        self._failures: dict[str, _Failures] = {}

    def delay_s(self, address: str, now_s: float) -> float:
        """How long to wait before answering ``address`` (0 when it has no recent failures)."""
        failures = self._failures.get(address)
        if failures is None:
            return 0.0
        if now_s - failures.last_s > FORGET_AFTER_S:
            del self._failures[address]
            return 0.0
        return float(min(MAX_DELAY_S, FIRST_DELAY_S * 2.0 ** (failures.count - 1)))

    def failed(self, address: str, now_s: float) -> None:
        """``address`` sent a wrong token at ``now_s``."""
        failures = self._failures.pop(address, None)
        if failures is None or now_s - failures.last_s > FORGET_AFTER_S:
            failures = _Failures(0, now_s)
        failures.count += 1
        failures.last_s = now_s
        self._failures[address] = failures  # re-inserted: the dict stays in order of last failure
        while len(self._failures) > MAX_TRACKED:
            del self._failures[next(iter(self._failures))]

    def check(self, address: str, given: str, expected: str, now_s: float) -> tuple[bool, float]:
        """``(ok, delay_s)``: whether ``given`` is the token, and how long to wait before answering.

        A wrong token is counted first, so even the first wrong guess waits.
        """
        if token_matches(given, expected):
            return True, 0.0
        self.failed(address, now_s)
        return False, self.delay_s(address, now_s)


class Gate:
    """The throttle on a running server: one check at a time per address, wrong ones answered late."""

    def __init__(
        self,
        throttle: Throttle | None = None,
        now_s: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``now_s`` and ``sleep`` are the clock and the wait (a test passes simulated ones)."""
        self.throttle = throttle or Throttle()
        self._now_s = now_s
        self._sleep = sleep
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    async def admit(self, address: str, given: str, expected: str) -> bool:
        """Whether ``given`` is the token; a wrong one is answered after the address's delay.

        ``address`` is the client's (``request.remote``: behind a trusted proxy,
        from X-Forwarded-For; server/security.py).
        """
        self._users[address] = self._users.get(address, 0) + 1
        lock = self._locks.setdefault(address, asyncio.Lock())
        try:
            async with lock:
                ok, delay = self.throttle.check(address, given, expected, self._now_s())
                if not ok:
                    await self._sleep(delay)
                return ok
        finally:
            self._users[address] -= 1
            if self._users[address] == 0:
                del self._users[address], self._locks[address]
