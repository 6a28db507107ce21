"""protocol.codec: round trips of every message, and every kind of bad input.

``decode`` documents that it raises only RemoteProtocolError subclasses
(MessageTooBig, MalformedMessage, UnknownMessageType, UnexpectedMessage,
InvalidField); each malformed case checks the exact class and nothing else.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.codec import MAX_COUNTS_ENTRIES, MAX_ORGANIZER_MESSAGE, MAX_PARTICIPANT_MESSAGE, decode, encode
from protocol.errors import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    MAX_REASON_BYTES,
    InvalidField,
    LocalProtocolError,
    MalformedMessage,
    MessageTooBig,
    RemoteProtocolError,
    UnexpectedMessage,
    UnknownMessageType,
)
from protocol.messages import (
    ALL_MESSAGES,
    MAX_CUES,
    MAX_SAFE_INT,
    ORGANIZER_TO_SERVER,
    PARTICIPANT_TO_SERVER,
    Abort,
    Announce,
    Announcement,
    Cue,
    Error,
    Estimate,
    Field,
    Hello,
    Join,
    Message,
    Overview,
    Ping,
    Pong,
    Ready,
    Record,
    Schedule,
    Show,
    Start,
)

EVERY_TYPE = tuple(ALL_MESSAGES.values())
# Large enough that no round trip hits the size limit; limits are tested apart.
NO_LIMIT = 1 << 20
DEVICE_ID = "device-0123456789"
VALID_PING = {"type": "ping", "seq": 7, "t0_us": 1_700_000_000_000_000}


# --- strategies built from each class's SCHEMA ------------------------------


def _utf8_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8"), max_size=max_size)


def field_values(spec: Field) -> st.SearchStrategy[Any]:
    """Every value the wire may carry for ``spec``."""
    base: st.SearchStrategy[Any]
    if spec.kind == "int":
        base = st.integers(int(spec.low), int(spec.high))
    elif spec.kind == "float":
        base = st.floats(spec.low, spec.high, allow_nan=False, allow_infinity=False)
    elif spec.kind == "bool":
        base = st.booleans()
    elif spec.kind == "enum":
        base = st.sampled_from(spec.choices)
    elif spec.kind == "str" and spec.pattern is not None:
        base = st.from_regex(spec.pattern, fullmatch=True)
    elif spec.kind == "str":
        base = _utf8_text(int(spec.high))
    elif spec.kind == "counts":
        # Up to 16 entries here keeps examples fast; the 256-entry limit has its own test.
        base = st.dictionaries(_utf8_text(64), st.integers(0, MAX_SAFE_INT), max_size=16)
    elif spec.kind == "ints":
        base = st.lists(st.integers(int(spec.low), int(spec.high)), max_size=spec.max_items).map(tuple)
    elif spec.kind == "records":
        # Up to 4 records keeps examples fast; the item limit has its own test.
        assert spec.record is not None
        base = st.lists(records_of(spec.record), max_size=4).map(tuple)
    elif spec.kind == "map":
        # A JSON-like document: string keys, scalars and nested lists or maps.
        scalars = st.none() | st.booleans() | st.integers(-MAX_SAFE_INT, MAX_SAFE_INT) | _utf8_text(16)
        document = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_utf8_text(8), inner, max_size=3), max_leaves=12)
        base = st.dictionaries(_utf8_text(16), document, max_size=8)
    else:
        raise AssertionError(f"no strategy for field kind {spec.kind!r}")
    return st.none() | base if spec.optional else base


def records_of(cls: type[Record]) -> st.SearchStrategy[Any]:
    return st.builds(cls, **{spec.name: field_values(spec) for spec in cls.SCHEMA})


def messages_of(cls: type[Message]) -> st.SearchStrategy[Message]:
    return records_of(cls)  # type: ignore[no-any-return]


any_message = st.sampled_from(EVERY_TYPE).flatmap(messages_of)


# --- helpers -----------------------------------------------------------------


def packed(obj: Any, **options: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, **options)  # type: ignore[no-any-return]


def decode_error(data: bytes, accept: tuple[type[Message], ...] = EVERY_TYPE, max_size: int = NO_LIMIT) -> RemoteProtocolError:
    """The RemoteProtocolError ``decode`` raises for ``data`` (fails if it returns or raises anything else)."""
    with pytest.raises(RemoteProtocolError) as info:
        decode(data, accept, max_size)
    check_reason_fits(info.value)
    return info.value


def check_reason_fits(error: RemoteProtocolError) -> None:
    reason_bytes = error.close_reason.encode("utf-8")
    assert len(reason_bytes) <= MAX_REASON_BYTES
    assert error.reason.encode("utf-8").startswith(reason_bytes)


def decode_or_documented_error(data: bytes, accept: tuple[type[Message], ...] = EVERY_TYPE) -> None:
    """Either a valid message of an accepted type comes back, or a RemoteProtocolError."""
    try:
        message = decode(data, accept, MAX_ORGANIZER_MESSAGE)
    except RemoteProtocolError as error:
        check_reason_fits(error)
        return
    assert type(message) in accept
    assert decode(encode(message), accept, NO_LIMIT) == message


def invalid_field(obj: dict[str, Any], field: str, expected_kind: str) -> InvalidField:
    error = decode_error(packed(obj))
    assert type(error) is InvalidField
    assert error.field == field
    assert error.message_type == obj["type"]
    assert error.expected == ALL_MESSAGES[obj["type"]].SCHEMA[_index(obj["type"], field)].describe()
    assert expected_kind in error.expected
    assert error.close_code == CLOSE_PROTOCOL_ERROR
    return error


def _index(type_name: str, field: str) -> int:
    return [spec.name for spec in ALL_MESSAGES[type_name].SCHEMA].index(field)


def estimate_map(**changes: Any) -> dict[str, Any]:
    base = {"type": "estimate", "at_us": 5, "offset_us": -2_000_000, "rate_ppm": 1.5, "bound_us": 300, "bound_growth_ppm": 200.0}
    return {**base, **changes}


# --- round trips -------------------------------------------------------------


@pytest.mark.parametrize("cls", EVERY_TYPE, ids=lambda cls: cls.TYPE)
@given(data=st.data())
def test_round_trip(cls: type[Message], data: st.DataObject) -> None:
    """decode(encode(m)) == m for every message class, over its whole schema."""
    message = data.draw(messages_of(cls))
    assert decode(encode(message), (cls,), NO_LIMIT) == message


def test_round_trip_literals() -> None:
    """Literal messages of every class survive a round trip, optional fields nil and defaults omitted."""
    messages = [
        Join(v=1, device_id=None),
        Join(v=1, device_id=DEVICE_ID, client="unisono-web/1"),
        Pong(seq=2**32 - 1, t0_us=-(2**53 - 1), t1_us=2**53 - 1, t2_us=0),
        Ready(loaded=True, unlocked=False),
        Ping(seq=0, t0_us=1_700_000_000_000_000),
        Estimate(at_us=1, offset_us=-2_000_000, rate_ppm=-10_000.0, bound_us=0, bound_growth_ppm=10_000.0),
        Schedule(epoch=0, state="idle", start_us=None),
        Error(code="too_big", message="é" * 500),
        Hello(v=1, token="t" * 256),
        Start(lead_ms=1_000),
        Abort(),
        Overview(epoch=3, state="playing", start_us=9, server_us=10, devices=2, groups={"red": 1, "blue": 0}, loaded=2, unlocked=1, synced=0),
    ]
    for message in messages:
        assert decode(encode(message), EVERY_TYPE, NO_LIMIT) == message


def test_join_without_optional_fields_takes_defaults() -> None:
    """A join with only `v` decodes with device_id None and client ''."""
    assert decode(packed({"type": "join", "v": 1}), PARTICIPANT_TO_SERVER, MAX_PARTICIPANT_MESSAGE) == Join(1, None, "")


def test_float_field_accepts_an_integer() -> None:
    """An int on the wire is a valid float field and decodes to a float."""
    message = decode(packed(estimate_map(rate_ppm=3)), EVERY_TYPE, NO_LIMIT)
    assert isinstance(message, Estimate)
    assert message.rate_ppm == 3.0 and type(message.rate_ppm) is float


def test_float32_on_the_wire_is_accepted() -> None:
    """A msgpack float 32 is a valid float field."""
    message = decode(packed(estimate_map(rate_ppm=0.5), use_single_float=True), EVERY_TYPE, NO_LIMIT)
    assert isinstance(message, Estimate) and message.rate_ppm == 0.5


def test_largest_messages_fit_their_endpoint_limit() -> None:
    """The biggest valid participant and organizer messages fit the frame limits."""
    big = "\U0001f3b5" * 64  # 4 bytes of UTF-8 each
    biggest_join = Join(v=65535, device_id="x" * 64, client=big)
    assert decode(encode(biggest_join), PARTICIPANT_TO_SERVER, MAX_PARTICIPANT_MESSAGE) == biggest_join
    biggest_hello = Hello(v=65535, token="\U0001f3b5" * 256)
    assert decode(encode(biggest_hello), ORGANIZER_TO_SERVER, MAX_ORGANIZER_MESSAGE) == biggest_hello


def test_counts_map_with_the_maximum_entries_round_trips() -> None:
    """A groups map of exactly MAX_COUNTS_ENTRIES entries is valid."""
    groups = {f"g{i}": i for i in range(MAX_COUNTS_ENTRIES)}
    message = Overview(0, "idle", None, 0, 0, groups, 0, 0, 0)
    assert decode(encode(message), EVERY_TYPE, NO_LIMIT) == message


# --- malformed frames ----------------------------------------------------------


def test_every_truncation_of_a_valid_message_is_malformed() -> None:
    """Each proper prefix of a valid encoding raises MalformedMessage."""
    data = encode(Pong(seq=3, t0_us=1_000_000, t1_us=2_000_000, t2_us=2_000_100))
    for end in range(len(data)):
        assert type(decode_error(data[:end])) is MalformedMessage


def test_trailing_bytes_are_malformed() -> None:
    """Anything after the map raises MalformedMessage with close code 1002."""
    for tail in (b"\x00", b"\xc0", packed(VALID_PING)):
        error = decode_error(packed(VALID_PING) + tail)
        assert type(error) is MalformedMessage
        assert error.close_code == CLOSE_PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("value", "kind"),
    [([1, 2], "array"), (5, "integer"), (None, "nil"), ("ping", "string"), (b"ping", "binary"), (1.5, "float"), (True, "boolean")],
)
def test_a_frame_that_is_not_a_map_is_malformed(value: Any, kind: str) -> None:
    """A frame holding an array, int or any non-map raises MalformedMessage naming what arrived."""
    error = decode_error(packed(value))
    assert type(error) is MalformedMessage
    assert error.reason == f"expected a msgpack map, found {kind}"


@pytest.mark.parametrize("type_value", [5, None, True, 1.0, ["ping"], {"ping": 1}, b"ping", msgpack.ExtType(3, b"ping")])
def test_type_that_is_not_a_string_is_malformed(type_value: Any) -> None:
    """A `type` of any msgpack kind but str (bin included) raises MalformedMessage."""
    obj = {**VALID_PING, "type": type_value}
    assert type(decode_error(packed(obj))) is MalformedMessage


def test_missing_type_is_malformed() -> None:
    """A map without `type` raises MalformedMessage."""
    assert type(decode_error(packed({"seq": 1, "t0_us": 2}))) is MalformedMessage


@pytest.mark.parametrize("garbage", [b"", b"hello world", b'{"type": "ping", "seq": 1}', b"\xc1", b"\xff\xff\xff", "ping ✓".encode()])
def test_text_and_garbage_are_malformed(garbage: bytes) -> None:
    """Empty input, JSON, plain text and reserved bytes raise MalformedMessage."""
    assert type(decode_error(garbage)) is MalformedMessage


def test_non_string_map_keys_are_malformed() -> None:
    """A map with an integer key raises MalformedMessage."""
    assert type(decode_error(packed({"type": "ping", 1: 2}))) is MalformedMessage


def test_unknown_type_closes_with_1003() -> None:
    """A `type` naming no message raises UnknownMessageType with close code 1003 and the name."""
    error = decode_error(packed({"type": "dance", "seq": 1}))
    assert type(error) is UnknownMessageType
    assert error.close_code == CLOSE_UNSUPPORTED_DATA
    assert error.type_name == "dance"
    assert error.reason == "unknown message type 'dance'"


@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=300).filter(lambda name: name not in ALL_MESSAGES))
def test_unknown_type_reason_fits_a_close_frame(type_name: str) -> None:
    """Any unknown type name, however long, gives a close_reason of at most 123 UTF-8 bytes."""
    error = decode_error(packed({"type": type_name}))
    assert type(error) is UnknownMessageType


def test_message_not_accepted_here_closes_with_1008() -> None:
    """A valid organizer message on the participant endpoint raises UnexpectedMessage, 1008."""
    error = decode_error(encode(Start(lead_ms=5_000)), PARTICIPANT_TO_SERVER, MAX_PARTICIPANT_MESSAGE)
    assert type(error) is UnexpectedMessage
    assert error.close_code == CLOSE_POLICY_VIOLATION
    assert error.reason == "message type 'start' is not allowed on this connection"


def test_oversize_frame_closes_with_1009() -> None:
    """A frame one byte over the limit raises MessageTooBig with size, limit and 1009."""
    error = decode_error(b"\x00" * (MAX_PARTICIPANT_MESSAGE + 1), PARTICIPANT_TO_SERVER, MAX_PARTICIPANT_MESSAGE)
    assert type(error) is MessageTooBig
    assert (error.size, error.limit, error.close_code) == (1025, 1024, CLOSE_MESSAGE_TOO_BIG)
    assert error.reason == "message of 1025 bytes exceeds the limit of 1024 bytes"


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    """A valid frame whose size equals max_size decodes."""
    data = encode(Join(v=1, device_id=DEVICE_ID, client="x" * 40))
    assert decode(data, PARTICIPANT_TO_SERVER, len(data)) == Join(1, DEVICE_ID, "x" * 40)
    assert type(decode_error(data, PARTICIPANT_TO_SERVER, len(data) - 1)) is MessageTooBig


# --- invalid fields ------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "field", "expected_kind", "found"),
    [
        ({**VALID_PING, "seq": "1"}, "seq", "integer", "string"),
        ({**VALID_PING, "seq": True}, "seq", "integer", "boolean"),
        ({**VALID_PING, "t0_us": False}, "t0_us", "integer", "boolean"),
        ({**VALID_PING, "seq": 1.0}, "seq", "integer", "float"),
        ({**VALID_PING, "seq": None}, "seq", "integer", "nil"),
        ({**VALID_PING, "seq": [1]}, "seq", "integer", "array"),
        ({**VALID_PING, "seq": {"a": 1}}, "seq", "integer", "map"),
        ({"type": "ready", "loaded": 1, "unlocked": True}, "loaded", "boolean", "integer"),
        ({"type": "ready", "loaded": True, "unlocked": 0}, "unlocked", "boolean", "integer"),
        ({"type": "ready", "loaded": "true", "unlocked": True}, "loaded", "boolean", "string"),
        (estimate_map(rate_ppm=True), "rate_ppm", "number", "boolean"),
        (estimate_map(rate_ppm="1.5"), "rate_ppm", "number", "string"),
        ({"type": "error", "code": 5, "message": "m"}, "code", "string", "integer"),
        ({"type": "error", "code": b"bin", "message": "m"}, "code", "string", "binary"),
        ({"type": "join", "v": 1, "device_id": DEVICE_ID.encode()}, "device_id", "string", "binary"),
        ({"type": "join", "v": 1, "client": None}, "client", "string", "nil"),
        ({"type": "hello", "v": 1, "token": msgpack.ExtType(1, b"x")}, "token", "string", "extension type"),
        ({**VALID_PING, "seq": msgpack.Timestamp(1, 0)}, "seq", "integer", "extension type"),
        ({"type": "schedule", "epoch": 1, "state": 1, "start_us": None}, "state", "one of", "integer"),
        ({"type": "schedule", "epoch": 1, "state": b"idle", "start_us": None}, "state", "one of", "binary"),
    ],
)
def test_wrong_field_type(obj: dict[str, Any], field: str, expected_kind: str, found: str) -> None:
    """A field of the wrong msgpack kind raises InvalidField with .field, .expected and .found set."""
    assert invalid_field(obj, field, expected_kind).found == found


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"type": "join", "v": 65536}, "v"),
        ({"type": "join", "v": -1}, "v"),
        ({**VALID_PING, "seq": -1}, "seq"),
        ({**VALID_PING, "seq": 2**32}, "seq"),
        ({**VALID_PING, "t0_us": 2**53}, "t0_us"),
        ({**VALID_PING, "t0_us": -(2**53)}, "t0_us"),
        ({**VALID_PING, "t0_us": 2**64 - 1}, "t0_us"),
        ({**VALID_PING, "t0_us": -(2**63)}, "t0_us"),
        ({"type": "start", "lead_ms": 999}, "lead_ms"),
        ({"type": "start", "lead_ms": 86_400_001}, "lead_ms"),
        (estimate_map(rate_ppm=10_000.5), "rate_ppm"),
        (estimate_map(rate_ppm=-10_001), "rate_ppm"),
        (estimate_map(bound_growth_ppm=-0.1), "bound_growth_ppm"),
        (estimate_map(bound_us=-1), "bound_us"),
        ({"type": "schedule", "epoch": -1, "state": "idle", "start_us": None}, "epoch"),
    ],
)
def test_out_of_range_number(obj: dict[str, Any], field: str) -> None:
    """A number outside its field's range raises InvalidField naming the field."""
    assert invalid_field(obj, field, "in [").found.endswith("(out of range)")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("single", [False, True], ids=["float64", "float32"])
def test_non_finite_float(value: float, single: bool) -> None:
    """NaN and +-inf, as float 64 or float 32, raise InvalidField."""
    error = decode_error(packed(estimate_map(bound_growth_ppm=value), use_single_float=single))
    assert type(error) is InvalidField
    assert (error.field, error.found) == ("bound_growth_ppm", "a non-finite number")


@pytest.mark.parametrize(
    ("obj", "field", "found"),
    [
        ({"type": "join", "v": 1, "device_id": "short"}, "device_id", "a string that does not match"),
        ({"type": "join", "v": 1, "device_id": "x" * 65}, "device_id", "a string of 65 characters"),
        ({"type": "join", "v": 1, "device_id": "has space 123"}, "device_id", "a string that does not match"),
        ({"type": "join", "v": 1, "device_id": "abcdefgh\n"}, "device_id", "a string that does not match"),
        ({"type": "join", "v": 1, "client": "c" * 65}, "client", "a string of 65 characters"),
        ({"type": "schedule", "epoch": 1, "state": "dancing", "start_us": None}, "state", "another string"),
    ],
)
def test_string_out_of_bounds(obj: dict[str, Any], field: str, found: str) -> None:
    """A string too long, not matching its pattern or not among the choices raises InvalidField."""
    error = decode_error(packed(obj))
    assert type(error) is InvalidField
    assert (error.field, error.found) == (field, found)


def overview_map(groups: Any) -> dict[str, Any]:
    return {
        "type": "overview", "epoch": 1, "state": "idle", "start_us": None, "server_us": 0,
        "devices": 0, "groups": groups, "loaded": 0, "unlocked": 0, "synced": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("groups", "found"),
    [
        ({"red": -1}, "a map with a bad count"),
        ({"red": True}, "a map with a bad count"),
        ({"red": 1.0}, "a map with a bad count"),
        ({"red": 2**53}, "a map with a bad count"),
        ({"r" * 65: 1}, "a map with a bad key"),
        ({b"red": 1}, "a map with a bad key"),
        ({f"g{i}": 0 for i in range(MAX_COUNTS_ENTRIES + 1)}, "a map of 257 entries"),
        ([["red", 1]], "array"),
    ],
)
def test_bad_counts_map(groups: Any, found: str) -> None:
    """A counts field with a bad key, a bad count or too many entries raises InvalidField."""
    error = decode_error(packed(overview_map(groups)))
    assert type(error) is InvalidField
    assert (error.field, error.found) == ("groups", found)


def test_missing_required_field() -> None:
    """A missing required field raises InvalidField saying it found nothing."""
    error = invalid_field({"type": "pong", "seq": 1, "t0_us": 2, "t1_us": 3}, "t2_us", "integer")
    assert error.found == "nothing (missing)"
    assert error.reason == "pong.t2_us: expected integer in [-9.0072e+15, 9.0072e+15], found nothing (missing)"


def test_missing_version_reason_matches_the_doc_example() -> None:
    """A join without `v` gives the reason PROTOCOL.md shows."""
    error = decode_error(packed({"type": "join", "device_id": None}))
    assert error.reason == "join.v: expected integer in [0, 65535], found nothing (missing)"


def test_unknown_extra_field() -> None:
    """A field the message does not have raises InvalidField naming it."""
    error = decode_error(packed({**VALID_PING, "extra": 1}))
    assert type(error) is InvalidField
    assert (error.field, error.found) == ("extra", "an unknown field")


def test_fields_on_abort_are_unknown() -> None:
    """Abort has no fields, so any field is unknown."""
    error = decode_error(packed({"type": "abort", "now": True}))
    assert type(error) is InvalidField and error.field == "now"


# --- hostile structures ----------------------------------------------------------


def test_deeply_nested_arrays_are_malformed() -> None:
    """Arrays nested far beyond msgpack's stack raise MalformedMessage, not RecursionError."""
    assert type(decode_error(b"\x91" * 100_000 + b"\xc0")) is MalformedMessage


def test_deeply_nested_maps_in_a_field_are_malformed() -> None:
    """Maps nested far beyond msgpack's stack inside a field raise MalformedMessage."""
    data = b"\x82\xa4type\xa4ping\xa3seq" + b"\x81\xa1a" * 50_000 + b"\xc0"
    assert type(decode_error(data)) is MalformedMessage


def test_moderately_nested_field_is_an_invalid_field() -> None:
    """A field holding a 200-deep array (within the stack) raises InvalidField."""
    value: Any = None
    for _ in range(200):
        value = [value]
    error = decode_error(packed({**VALID_PING, "seq": value}))
    assert type(error) is InvalidField and error.found == "array"


@pytest.mark.parametrize(
    "header",
    [
        b"\xdb\xff\xff\xff\xff",  # str 32
        b"\xc6\xff\xff\xff\xff",  # bin 32
        b"\xdd\xff\xff\xff\xff",  # array 32
        b"\xdf\xff\xff\xff\xff",  # map 32
        b"\xde\xff\xff",  # map 16
        b"\xc9\xff\xff\xff\xff\x05",  # ext 32
        b"\x82\xa4type\xdb\xff\xff\xff\xff",  # str 32 as the type
    ],
)
def test_huge_declared_lengths_are_malformed(header: bytes) -> None:
    """A header declaring gigabytes that never follow raises MalformedMessage, quickly."""
    assert type(decode_error(header + b"abc", max_size=MAX_ORGANIZER_MESSAGE)) is MalformedMessage


def test_invalid_timestamp_extension_is_malformed() -> None:
    """An ext -1 (timestamp) of an impossible length raises MalformedMessage."""
    assert type(decode_error(b"\x81\xa4type\xd5\xff\x00\x00")) is MalformedMessage


# --- fuzz ------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_documented_errors(data: bytes) -> None:
    """Arbitrary bytes either decode to a valid message or raise a RemoteProtocolError."""
    decode_or_documented_error(data)


@FUZZ
@given(any_message, st.data())
def test_bit_flips_raise_only_documented_errors(message: Message, data: st.DataObject) -> None:
    """A valid encoding with bits flipped decodes validly or raises a RemoteProtocolError."""
    wire = bytearray(encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(wire) - 1))
        wire[index] ^= 1 << data.draw(st.integers(0, 7))
    decode_or_documented_error(bytes(wire))


@FUZZ
@given(any_message, st.data())
def test_cuts_and_splices_raise_only_documented_errors(message: Message, data: st.DataObject) -> None:
    """A valid encoding truncated, with a span deleted or bytes inserted, raises only documented errors."""
    wire = encode(message)
    start = data.draw(st.integers(0, len(wire)))
    end = data.draw(st.integers(start, len(wire)))
    inserted = data.draw(st.binary(max_size=8))
    decode_or_documented_error(wire[:start])
    decode_or_documented_error(wire[:start] + inserted + wire[end:])


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | _utf8_text(20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_utf8_text(10), children, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(st.sampled_from(EVERY_TYPE), st.dictionaries(st.sampled_from(["seq", "v", "state", "groups", "t0_us", "x"]) | _utf8_text(8), msgpack_values, max_size=6))
def test_structured_garbage_raises_only_documented_errors(cls: type[Message], fields: dict[str, Any]) -> None:
    """Maps with a real type and arbitrary str-keyed fields decode validly or raise a RemoteProtocolError."""
    decode_or_documented_error(packed({"type": cls.TYPE, **fields}))


@FUZZ
@given(any_message)
def test_decode_respects_accept(message: Message) -> None:
    """A valid message decodes on an endpoint that accepts it and raises UnexpectedMessage on one that does not."""
    others = tuple(cls for cls in EVERY_TYPE if cls is not type(message))
    assert type(decode_error(encode(message), others)) is UnexpectedMessage


# --- encoding our own bad messages ------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        Ping(seq=-1, t0_us=0),
        Ping(seq=2**32, t0_us=0),
        Ping(seq=True, t0_us=0),
        Ping(seq=0, t0_us=2**53),
        Ready(loaded=1, unlocked=True),  # type: ignore[arg-type]
        Estimate(at_us=0, offset_us=0, rate_ppm=math.nan, bound_us=0, bound_growth_ppm=0.0),
        Estimate(at_us=0, offset_us=0, rate_ppm=0.0, bound_us=0, bound_growth_ppm=math.inf),
        Join(v=1, device_id="short"),
        Join(v=1, device_id=None, client=None),  # type: ignore[arg-type]
        Schedule(epoch=0, state="dancing", start_us=None),  # type: ignore[arg-type]
        Overview(0, "idle", None, 0, 0, {"red": -1}, 0, 0, 0),
        Error(code=b"bin", message=""),  # type: ignore[arg-type]
        Start(lead_ms=999),
    ],
)
def test_encoding_an_invalid_message_is_a_local_error(message: Message) -> None:
    """encode raises LocalProtocolError (our bug, not the peer's) for a message outside its schema."""
    with pytest.raises(LocalProtocolError):
        encode(message)


# --- error texts ------------------------------------------------------------------------------

SECRET = "SECRET-PAYLOAD"


@pytest.mark.parametrize(
    "obj",
    [
        {**VALID_PING, "seq": SECRET},
        {**VALID_PING, "seq": SECRET.encode()},
        {**VALID_PING, "t0_us": [SECRET]},
        {**VALID_PING, "t0_us": {SECRET: SECRET}},
        {"type": "join", "v": 1, "device_id": SECRET + "!"},
        {"type": "join", "v": 1, "device_id": SECRET * 5},
        {"type": "join", "v": SECRET},
        {"type": "error", "code": SECRET * 5, "message": ""},
        {"type": "schedule", "epoch": 0, "state": SECRET, "start_us": None},
        {"type": "ready", "loaded": SECRET, "unlocked": True},
        estimate_map(rate_ppm=SECRET),
        overview_map({SECRET * 5: 1}),
        overview_map({"red": SECRET}),
        {"type": "hello", "v": 1, "token": msgpack.ExtType(7, SECRET.encode())},
    ],
)
def test_error_text_never_contains_the_payload(obj: dict[str, Any]) -> None:
    """A bad field value never appears in the error's text, reason or repr."""
    error = decode_error(packed(obj))
    assert type(error) is InvalidField
    for text in (str(error), repr(error), error.reason, error.close_reason, error.found, error.expected):
        assert SECRET not in text


@pytest.mark.parametrize("data", [SECRET.encode(), packed([SECRET]), packed({"type": SECRET.encode()}), packed({"type": "ping", 1: SECRET})])
def test_malformed_text_never_contains_the_payload(data: bytes) -> None:
    """A malformed frame's reason names what arrived by kind, never its content."""
    error = decode_error(data)
    assert type(error) is MalformedMessage
    assert SECRET not in str(error) and SECRET not in repr(error)


def test_long_reason_is_cut_for_the_close_frame() -> None:
    """close_reason cuts a long multi-byte reason to at most 123 bytes of valid UTF-8."""
    error = decode_error(packed({**VALID_PING, "\U0001f3b5" * 40: 1}))
    assert len(error.reason.encode("utf-8")) > MAX_REASON_BYTES
    assert len(error.close_reason.encode("utf-8")) <= MAX_REASON_BYTES
    assert error.close_reason == error.reason.encode("utf-8")[:MAX_REASON_BYTES].decode("utf-8", "ignore")


@pytest.mark.parametrize("key", [b"k" * 40, b"k"])
def test_binary_map_key_is_malformed(key: bytes) -> None:
    """A map key sent as msgpack bin (not str) raises MalformedMessage, whatever its length."""
    data = msgpack.packb({"type": "ready", "loaded": True, "unlocked": True, key: 1}, use_bin_type=True)
    with pytest.raises(RemoteProtocolError) as info:
        decode(data, tuple(ALL_MESSAGES.values()), 4096)
    assert type(info.value) is MalformedMessage


# --- show, cues and announcements (records and ints fields) ---------------------------------

CUE_MAP = {"at_us": 5_000_000, "text": "Lève la main", "colour": "#ff0000", "vibrate": [200, 100, 200]}


def show_map(cues: Any) -> dict[str, Any]:
    return {"type": "show", "title": "T", "when": "", "where": "", "bring": "", "about": "", "cues": cues}


def test_show_with_cues_round_trips_as_tuples_of_cues() -> None:
    """A show's cues decode to a tuple of Cue, vibrate to a tuple of ints, and encode back to the same bytes."""
    message = decode(packed(show_map([CUE_MAP, {"at_us": 0, "text": ""}])), EVERY_TYPE, NO_LIMIT)
    assert isinstance(message, Show)
    assert message.cues == (Cue(5_000_000, "Lève la main", "#ff0000", (200, 100, 200)), Cue(0, "", None, None))
    assert decode(encode(message), EVERY_TYPE, NO_LIMIT) == message


def test_the_maximum_number_of_cues_round_trips_and_one_more_is_invalid() -> None:
    """MAX_CUES cues are valid; MAX_CUES + 1 raise InvalidField on show.cues."""
    cues = [{"at_us": i, "text": "x"} for i in range(MAX_CUES)]
    message = decode(packed(show_map(cues)), EVERY_TYPE, NO_LIMIT)
    assert isinstance(message, Show) and len(message.cues) == MAX_CUES
    error = decode_error(packed(show_map(cues + [{"at_us": 0, "text": "x"}])))
    assert type(error) is InvalidField and error.field == "cues" and error.found == f"an array of {MAX_CUES + 1} items"


@pytest.mark.parametrize(
    ("cue", "field", "found"),
    [
        ({**CUE_MAP, "at_us": -1}, "cues[1].at_us", "-1 (out of range)"),
        ({**CUE_MAP, "at_us": 1.5}, "cues[1].at_us", "float"),
        ({**CUE_MAP, "text": b"x"}, "cues[1].text", "binary"),
        ({**CUE_MAP, "colour": "red"}, "cues[1].colour", "a string that does not match"),
        ({**CUE_MAP, "vibrate": [200, -1]}, "cues[1].vibrate", "an array holding -1 (out of range)"),
        ({**CUE_MAP, "vibrate": [200, True]}, "cues[1].vibrate", "an array holding a boolean"),
        ({**CUE_MAP, "vibrate": [1] * 33}, "cues[1].vibrate", "an array of 33 items"),
        ({**CUE_MAP, "vibrate": {"a": 1}}, "cues[1].vibrate", "map"),
        ({**CUE_MAP, "x": 1}, "cues[1].x", "an unknown field"),
        ({"text": "x"}, "cues[1].at_us", "nothing (missing)"),
        ([1, 2], "cues[1]", "array"),
        ("cue", "cues[1]", "string"),
    ],
)
def test_bad_cue_names_its_index_and_field(cue: Any, field: str, found: str) -> None:
    """A bad cue raises InvalidField whose field path names the cue's index and its field."""
    error = decode_error(packed(show_map([CUE_MAP, cue])))
    assert type(error) is InvalidField
    assert (error.field, error.found) == (field, found)
    assert error.reason.startswith(f"show.{field}: expected ")


def test_cue_map_with_a_non_string_key_is_invalid() -> None:
    """An integer key inside a cue map raises a documented error, never a crash."""
    error = decode_error(packed(show_map([{1: 2, "at_us": 0, "text": ""}])))
    assert type(error) in (InvalidField, MalformedMessage)


def test_join_lang_is_optional() -> None:
    """join.lang absent decodes to None; a tag round-trips; over 35 characters is invalid."""
    assert decode(packed({"type": "join", "v": 1}), PARTICIPANT_TO_SERVER, MAX_PARTICIPANT_MESSAGE).lang is None  # type: ignore[attr-defined]
    join = Join(1, DEVICE_ID, "c", "fr-FR")
    assert decode(encode(join), PARTICIPANT_TO_SERVER, MAX_PARTICIPANT_MESSAGE) == join
    assert type(decode_error(packed({"type": "join", "v": 1, "lang": "x" * 36}))) is InvalidField


def test_announce_is_an_organizer_message_only() -> None:
    """announce decodes on the organizer endpoint and is unexpected (1008) on /ws."""
    data = encode(Announce("Gather at the fountain"))
    assert decode(data, ORGANIZER_TO_SERVER, MAX_ORGANIZER_MESSAGE) == Announce("Gather at the fountain")
    error = decode_error(data, PARTICIPANT_TO_SERVER, MAX_PARTICIPANT_MESSAGE)
    assert type(error) is UnexpectedMessage and error.close_code == CLOSE_POLICY_VIOLATION


def test_announcement_round_trips() -> None:
    """announcement carries its text and the server time it was sent."""
    message = Announcement("Pluie : rendez-vous sous la halle", 1_700_000_000_000_000)
    assert decode(encode(message), EVERY_TYPE, NO_LIMIT) == message


@pytest.mark.parametrize(
    "message",
    [
        Show("T", "", "", "", "", (Cue(-1, "x"),)),
        Show("T", "", "", "", "", (Cue(0, "x", "#ff00"),)),
        Show("T", "", "", "", "", (Cue(0, "x", None, (1, 20_000)),)),
        Show("T", "", "", "", "", tuple(Cue(0, "x") for _ in range(MAX_CUES + 1))),
        Announce("x" * 501),
    ],
)
def test_encoding_a_bad_show_is_a_local_error(message: Message) -> None:
    """encode raises LocalProtocolError for a cue or announcement outside its schema."""
    with pytest.raises(LocalProtocolError):
        encode(message)


def test_the_biggest_show_fits_in_512_kib() -> None:
    """500 cues of 200 four-byte characters with 32-step patterns, and the longest texts, encode under 512 KiB (PROTOCOL.md section 1)."""
    cue = Cue(MAX_SAFE_INT, "\U0001f3b5" * 200, "#ffffff", tuple([10_000] * 32))
    show = Show("\U0001f3b5" * 200, "\U0001f3b5" * 200, "\U0001f3b5" * 200, "\U0001f3b5" * 200, "\U0001f3b5" * 2000, (cue,) * MAX_CUES)
    data = encode(show)
    assert len(data) <= 512 * 1024
    assert decode(data, EVERY_TYPE, 512 * 1024) == show
