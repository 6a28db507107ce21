"""protocol.decode on arbitrary input: a valid message that round-trips, or a documented RemoteProtocolError.

Every direction's message set is fuzzed with arbitrary bytes, arbitrary msgpack
values, maps shaped like real messages with wrong values, and mutations of
every message type's valid encoding. ``python -m bench.fuzz`` runs the same
properties for a long campaign.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol import encode
from protocol.codec import MAX_PARTICIPANT_MESSAGE
from protocol.messages import PARTICIPANT_TO_SERVER
from tests.fuzz.targets import MESSAGE_SEEDS, SAMPLE_MESSAGES, TARGETS, mutate

PROTOCOL_TARGETS = [target for name, target in TARGETS.items() if name.startswith("protocol.")]
FAST = settings(max_examples=300, deadline=None)

# Any value msgpack can carry: every integer width, floats with NaN and
# infinities, long strings, binary, extension types (including the timestamp
# type, -1), nested arrays and maps.
MSGPACK_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=300)
    | st.binary(max_size=64)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=16))
    | st.builds(lambda s: msgpack.Timestamp(s, 0), st.integers(0, 2**34 - 1))
)
MSGPACK_VALUES = st.recursive(
    MSGPACK_SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10) | st.integers(-(2**63), 2**64 - 1), inner, max_size=5),
    max_leaves=20,
)


def _fields(message: Any) -> dict[str, Any]:
    """The wire map of a valid message."""
    fields: dict[str, Any] = msgpack.unpackb(encode(message), raw=False)
    return fields


def _outcomes(data: bytes) -> list[str]:
    """Every direction's decoder on ``data``; each returns an outcome or raises (the property fails)."""
    return [target.run(data) for target in PROTOCOL_TARGETS]


@FAST
@given(st.binary(max_size=5000))
@example(b"")
@example(b"\xc1")
@example(b"\x91" * 1024)  # nested arrays as deep as the size cap allows
@example(b"\x81\xa4type\xa2\xff\xfe")  # a str that is not UTF-8
@example(b"\x81\xa4type\xa4pong" + b"\x00" * 2000)  # over the participant cap
def test_arbitrary_bytes(data: bytes) -> None:
    """Arbitrary bytes decode to a valid message or raise only the documented errors, in every direction."""
    outcomes = _outcomes(data)
    if len(data) > MAX_PARTICIPANT_MESSAGE:
        assert outcomes[0] == "MessageTooBig"


@FAST
@given(MSGPACK_VALUES)
def test_arbitrary_msgpack_values(value: Any) -> None:
    """Any msgpack value (not only maps) decodes or raises a documented error."""
    _outcomes(msgpack.packb(value, use_bin_type=True))


@FAST
@given(st.sampled_from(SAMPLE_MESSAGES), st.data())
def test_messages_with_wrong_values(message: Any, data: st.DataObject) -> None:
    """A real message's map with one field replaced, removed, or an extra key added."""
    fields = _fields(message)
    keys = sorted(fields)
    change = data.draw(st.sampled_from(["replace", "remove", "add"]))
    if change == "replace":
        fields[data.draw(st.sampled_from(keys))] = data.draw(MSGPACK_VALUES)
    elif change == "remove":
        del fields[data.draw(st.sampled_from(keys))]
    else:
        fields[data.draw(st.text(max_size=12))] = data.draw(MSGPACK_VALUES)
    _outcomes(msgpack.packb(fields, use_bin_type=True))


@FAST
@given(st.sampled_from(MESSAGE_SEEDS), st.randoms(use_true_random=False))
def test_mutated_valid_messages(seed: bytes, rng: Any) -> None:
    """Every message type's valid encoding with bytes flipped, inserted, deleted or spliced."""
    _outcomes(mutate(seed, rng, MESSAGE_SEEDS))


def test_valid_seeds_decode() -> None:
    """The mutation corpus is valid: each seed decodes in its own direction (else the mutations start from junk)."""
    for seed in MESSAGE_SEEDS:
        assert "ok" in _outcomes(seed)
    assert PROTOCOL_TARGETS[0].run(MESSAGE_SEEDS[0]) == "ok"
    assert PARTICIPANT_TO_SERVER[0].TYPE == "join"
