"""SNTP on arbitrary datagrams: the request check, the header parser and the responder.

Datagrams of 0..200 bytes and mutated valid requests: ``Header.decode``
raises only ValueError (below 48 bytes), and the responder answers exactly the
valid client-mode requests and drops the rest, never raising.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import SNTP_REQUEST, SNTP_SEEDS, TARGETS, mutate

SNTP = TARGETS["sntp"].run
FAST = settings(max_examples=400, deadline=None)


@FAST
@given(st.binary(max_size=200))
@example(b"")
@example(SNTP_REQUEST[:47])
@example(bytes([0x1C]) + SNTP_REQUEST[1:])  # mode 4: a server's reply, not a request
@example(bytes([0x03]) + SNTP_REQUEST[1:])  # version 0
@example(bytes([0xFB]) + bytes(47))  # leap 3, version 7, mode 3
def test_arbitrary_datagrams(data: bytes) -> None:
    """Any datagram is answered (a valid client request) or dropped; nothing raises."""
    SNTP(data)


@FAST
@given(st.sampled_from(SNTP_SEEDS), st.randoms(use_true_random=False))
def test_mutated_requests(seed: bytes, rng: Any) -> None:
    """Valid requests with bytes flipped, inserted, deleted or spliced."""
    SNTP(mutate(seed, rng, SNTP_SEEDS))


def test_outcomes_of_known_datagrams() -> None:
    """A valid request is answered; short, wrong-mode and wrong-version datagrams are dropped with their reason."""
    assert SNTP(SNTP_REQUEST) == "ok"
    assert SNTP(SNTP_REQUEST + bytes(20)) == "ok"  # extension fields are ignored
    assert SNTP(SNTP_REQUEST[:47]) == "dropped: too"
    assert SNTP(bytes([0x24]) + SNTP_REQUEST[1:]) == "dropped: mode"
    assert SNTP(bytes([0x3B]) + SNTP_REQUEST[1:]) == "dropped: version"
