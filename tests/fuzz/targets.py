"""The decoders under fuzzing: each target is one property over arbitrary bytes.

A target's ``run(data)`` feeds ``data`` to one decoder and checks what came
out: a valid result (which must survive a round trip) or one of the errors
the decoder documents. It returns the *kind* of outcome ("ok", or the
documented error's name) and raises anything else, which is a crash: an
undocumented exception, or a broken property (AssertionError).

Both the hypothesis tests in this folder and the long campaign
(``python -m bench.fuzz``) import these targets, so the property is written
once. ``seeds`` are valid inputs for a mutation fuzzer to start from.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from clock.ntp import HEADER_LEN, MODE_CLIENT, MODE_SERVER, Header, ServerIdentity, request_problem, unix_ns_to_ntp
from clock.reference import ReferenceClock
from protocol import encode
from protocol.codec import MAX_ORGANIZER_MESSAGE, MAX_PARTICIPANT_MESSAGE, decode
from protocol.errors import MAX_REASON_BYTES, MessageTooBig, RemoteProtocolError
from protocol.messages import (
    ORGANIZER_TO_SERVER,
    PARTICIPANT_TO_SERVER,
    SERVER_TO_ORGANIZER,
    SERVER_TO_PARTICIPANT,
    Abort,
    Announce,
    Announcement,
    Cue,
    Error,
    Estimate,
    Hello,
    Join,
    Message,
    Overview,
    Ping,
    Pong,
    Ready,
    Schedule,
    Show,
    Start,
    Welcome,
)
from server.api import ApiError, _STATUS_FOR, announce_text, parse_body, start_request
from server.showfile import ShowFileInvalid, decode_show_text, parse_show
from server.timebase import ServerClock, SntpResponder

# Frames from the server may reach about 512 KiB (PROTOCOL.md section 1); the web client accepts 1 MiB.
MAX_SERVER_FRAME = 1 << 20
BIG_US = 1_700_000_000_123_456  # a realistic server time in µs, above 2**32

# One valid message of every type, to mutate.
SAMPLE_MESSAGES: tuple[Message, ...] = (
    Join(v=1, device_id="abcDEF12_-xyz", client="web/1", lang="fr-FR"),
    Join(v=1, device_id=None),
    Pong(seq=4_294_967_295, t0_us=BIG_US, t1_us=-BIG_US, t2_us=2**53 - 1),
    Ready(loaded=True, unlocked=False, downloaded=0.25, bound_us=4100, output_latency_us=-20_000, wake_lock=True, visible=False),
    Ready(loaded=False, unlocked=True),
    Welcome(v=1, device_id="A" * 22, group="red", track_url="/tracks/red.json", title="Théâtre 🎵"),
    Show(
        title="Flashmob", when="samedi", where="place", bring="écouteurs", about="Une heure.",
        cues=(Cue(at_us=0, text="Go", colour="#00ff00", vibrate=(200, 100)), Cue(at_us=BIG_US, text="")),
    ),  # fmt: skip
    Announcement(text="Pluie : sous la halle", at_us=BIG_US),
    Ping(seq=0, t0_us=BIG_US),
    Estimate(at_us=BIG_US, offset_us=-123_456_789, rate_ppm=-12.25, bound_us=800, bound_growth_ppm=0.5),
    Schedule(epoch=3, state="scheduled", start_us=BIG_US + 5_000_000),
    Schedule(epoch=0, state="idle", start_us=None),
    Error(code="invalid_state", message="cannot start: the show is scheduled"),
    Hello(v=1, token="secret-token"),
    Start(lead_ms=5000, confirm=True),
    Abort(),
    Announce(text="Rain: under the market hall"),
    Overview(
        epoch=7, state="playing", start_us=BIG_US, server_us=BIG_US + 1, devices=350, groups={"a": 175, "b": 175},
        loaded=300, unlocked=290, synced=280, status={"funnel": {"connected": 350}, "bounds": [1, 2.5]},
    ),  # fmt: skip
)
MESSAGE_SEEDS: tuple[bytes, ...] = tuple(encode(m) for m in SAMPLE_MESSAGES)


@dataclass(frozen=True)
class Target:
    """One decoder's property: ``run(data)`` returns the outcome's kind, or raises (a crash)."""

    name: str
    run: Callable[[bytes], str]
    seeds: tuple[bytes, ...]
    # A mutation that keeps the input's outer form (a msgpack map, TOML lines,
    # a JSON object) so that inputs get past the first parse; None: bytes only.
    structured: Callable[[bytes, Any], bytes] | None = None


# --- protocol messages -----------------------------------------------------------

# The error codes PROTOCOL.md section 6 lists for a frame (the others are for commands).
DOCUMENTED_CODES = {"malformed", "unknown_type", "invalid_field", "unexpected", "too_big"}


def decode_outcome(data: bytes, accept: tuple[type[Message], ...], max_size: int) -> str:
    """``protocol.decode`` on ``data``: a message that re-encodes to a fixed point, or a documented error."""
    try:
        message = decode(data, accept, max_size)
    except RemoteProtocolError as exc:
        assert exc.code in DOCUMENTED_CODES, f"undocumented error code {exc.code!r}"
        assert isinstance(exc, MessageTooBig) == (len(data) > max_size), "the size cap decides too_big, and only it"
        assert 0 < len(exc.close_reason.encode("utf-8")) <= MAX_REASON_BYTES
        return type(exc).__name__
    assert len(data) <= max_size
    assert isinstance(message, accept)
    # The decoded message is valid: it encodes (LocalProtocolError here would be
    # a message decode let through that encode refuses), and that encoding is a
    # fixed point. Bytes are compared, not objects: a NaN nested in the
    # overview's free-form status map is equal to itself only as bytes.
    again = encode(message)
    assert encode(decode(again, accept, max(max_size, len(again)))) == again
    return "ok"


def _protocol_target(name: str, accept: tuple[type[Message], ...], max_size: int) -> Target:
    return Target(name, lambda data: decode_outcome(data, accept, max_size), MESSAGE_SEEDS, mutate_message)


# --- SNTP ----------------------------------------------------------------------

# A client request as ntplib sends it: LI 0, version 4, mode 3, transmit time set.
SNTP_REQUEST = Header(
    leap=0, version=4, mode=MODE_CLIENT, stratum=0, poll=6, precision=-20, root_delay=0, root_dispersion=0,
    reference_id=bytes(4), reference_ts=0, originate_ts=0, receive_ts=0, transmit_ts=unix_ns_to_ntp(BIG_US * 1000),
).encode()  # fmt: skip
SNTP_SEEDS = (SNTP_REQUEST, SNTP_REQUEST + bytes(20), bytes([0x1B]) + bytes(47), bytes([0x23]) + SNTP_REQUEST[1:])


class _CapturingTransport:
    """Stands in for the UDP transport: keeps what the responder sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: object) -> None:
        self.sent.append(data)


_SNTP_CLOCK = ServerClock(ReferenceClock(BIG_US * 1000, 0))
_SNTP_IDENTITY = ServerIdentity.local(BIG_US * 1000)


def sntp_outcome(data: bytes) -> str:
    """The SNTP request check, the header parser and the responder on one datagram.

    ``request_problem`` says whether to answer; ``Header.decode`` raises only
    ValueError, and only below 48 bytes; the responder answers exactly the
    valid requests, with a server-mode reply that echoes the request's
    transmit time, and drops (counts) everything else.
    """
    problem = request_problem(data)
    try:
        header = Header.decode(data)
    except ValueError:
        assert len(data) < HEADER_LEN
        header = None
    else:
        assert len(data) >= HEADER_LEN
        assert Header.decode(header.encode()) == header
    responder = SntpResponder(_SNTP_CLOCK, lambda: _SNTP_IDENTITY)
    transport = _CapturingTransport()
    responder.transport = transport  # type: ignore[assignment]
    responder.datagram_received(data, ("192.0.2.1", 123))
    if problem is not None:
        assert transport.sent == [] and responder.dropped == 1 and responder.answered == 0
        return "dropped: " + problem.split(":")[0].split(" ")[0]
    assert header is not None and header.mode == MODE_CLIENT
    assert responder.answered == 1 and len(transport.sent) == 1
    reply = Header.decode(transport.sent[0])
    assert len(transport.sent[0]) == HEADER_LEN
    assert reply.mode == MODE_SERVER and reply.version == header.version
    assert reply.originate_ts == header.transmit_ts and reply.transmit_ts >= reply.receive_ts
    return "ok"


# --- show files ------------------------------------------------------------------

DEMO_SHOW = Path(__file__).resolve().parents[2] / "server" / "demo_show.toml"
TRACK_SECONDS = 180
# A folder holding the tracks the demo and test shows name; durations are stubbed, not read.
_TRACK_DIR = Path(tempfile.mkdtemp(prefix="unisono-fuzz-tracks-"))
for _name in ("demo-red.wav", "demo-blue.wav", "red.wav", "blue.wav"):
    (_TRACK_DIR / _name).write_bytes(b"")


def _stub_duration_ns(path: Path) -> int:
    return TRACK_SECONDS * 1_000_000_000


def _show_seeds() -> tuple[bytes, ...]:
    from tests.conftest import SMALL_SHOW_TOML

    return (DEMO_SHOW.read_bytes(), SMALL_SHOW_TOML.encode("utf-8"))


def showfile_outcome(data: bytes) -> str:
    """A show file's bytes as ``load_show`` reads them: a checked show, or ShowFileInvalid with located errors."""
    path = _TRACK_DIR / "show.toml"
    try:
        text = decode_show_text(data, path)
        show = parse_show(text, path, _TRACK_DIR, _stub_duration_ns)
    except ShowFileInvalid as exc:
        assert exc.errors, "ShowFileInvalid with no error"
        lines = data.count(b"\n") + 1
        for error in exc.errors:
            assert error.line is None or 1 <= error.line <= lines, f"line {error.line} of {lines}"
            assert str(error).startswith(f"{path}:")
            assert error.expected and error.found
        first = exc.errors[0].expected
        return "invalid: " + ("encoding" if first.startswith("UTF-8") else "syntax" if first == "valid TOML" else "content")
    assert show.groups and show.title.strip()
    return "ok"


# --- HTTP API bodies ----------------------------------------------------------------

API_SEEDS = tuple(
    json.dumps(body).encode()
    for body in (
        {"in_s": 10},
        {"in_s": 2.5, "confirm": True},
        {"at": "2026-11-28T21:00:00+01:00"},
        {"at": "2026-11-28T20:00:00Z", "confirm": False},
        {"text": "Rain: under the market hall"},
        {"text": ""},
    )
)
ISSUED_NS = BIG_US * 1000


def api_outcome(data: bytes) -> str:
    """A request body through each operation's parsing: a valid command, or an ApiError answered with a 4xx."""
    kinds = []
    for operation in ("start", "announce"):
        try:
            body = parse_body(data)
            if operation == "start":
                start_ns, confirm = start_request(body, ISSUED_NS)
                assert isinstance(start_ns, int) and isinstance(confirm, bool)
                assert start_ns - ISSUED_NS <= 86_400 * 1_000_000_000
            else:
                text = announce_text(body)
                encode(Announcement(text=text, at_us=0))  # what the hub sends to every phone
        except ApiError as exc:
            status = _STATUS_FOR.get(exc.code, 400)
            assert 400 <= status < 500, exc.code
            assert exc.message and len(exc.message) < 1000
            json.dumps({"error": exc.code, "message": exc.message})  # the answer's body
            kinds.append(f"{operation} {exc.code}")
        else:
            kinds.append(f"{operation} ok")
    return ", ".join(kinds)


def json_values() -> Any:
    """Hypothesis strategy: any JSON document, including NaN, infinities and huge numbers."""
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


# --- mutation -------------------------------------------------------------------

# Bytes that mean something to the decoders: msgpack's never-used 0xc1, its
# 8/16/32-bit str, bin, array and map headers, nil, false, true, fixmap and
# fixarray headers; ASCII that TOML, JSON and NTP's first byte care about.
INTERESTING_BYTES = bytes(
    [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xCA, 0xCB, 0xCF, 0xD3, 0xD9, 0xDA,
     0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0x8F, 0x9F, 0xBF, 0xD4, 0xC7, 0x1B, 0x23, 0x24, 0x0A, 0x22, 0x27, 0x5B, 0x5D,
     0x7B, 0x7D, 0x3D, 0x2C, 0x3A, 0x23, 0x5C]
)  # fmt: skip


def mutate(data: bytes, rng: Any, corpus: tuple[bytes, ...] = ()) -> bytes:
    """``data`` after 1 to 4 random edits (``rng``: a random.Random): flips, interesting bytes, inserts, deletes, splices."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:  # flip one bit
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1 and out:  # an interesting byte
            out[rng.randrange(len(out))] = rng.choice(INTERESTING_BYTES)
        elif op == 2:  # insert random bytes
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and out:  # delete a range
            del out[at : at + rng.randint(1, 16)]
        elif op == 4 and out:  # duplicate a range
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 32)]
        elif op == 5:  # truncate
            del out[at:]
        elif op == 6 and corpus:  # splice with another input
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            out[at:] = other[cut:]
        else:  # an interesting byte inserted
            out[at:at] = bytes([rng.choice(INTERESTING_BYTES)])
    return bytes(out)


# Values at the edges of what each field takes: nil, booleans, integer limits
# (JavaScript's safe range, 32 and 64 bits), non-finite and tiny floats, empty
# and long strings, binary, containers, an extension type.
INTERESTING_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 255, 65535, 65536, 2**32 - 1, 2**32, 2**53 - 1, 2**53, -(2**53), 2**63 - 1,
    -(2**63), 2**64 - 1, 0.5, -0.0, 1e308, float("nan"), float("inf"), float("-inf"), 5e-324, "", "x" * 300,
    "é" * 70, "#ff00ff", "../../etc", "join", "pong", b"\xff", [], [1, 2], {}, {"a": 1}, {"type": "join"},
)  # fmt: skip


def mutate_message(data: bytes, rng: Any) -> bytes:
    """A msgpack map with one key's value replaced, a key removed or one added (bytes mutation if not a map)."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 - not msgpack: mutate the bytes instead
        return mutate(data, rng)
    if not isinstance(obj, dict) or not obj:
        return mutate(data, rng)
    key = rng.choice(sorted(obj, key=repr))
    op = rng.randrange(4)
    if op == 0:
        del obj[key]
    elif op == 1:
        obj[rng.choice(("type", "v", "seq", "extra", "", 7))] = rng.choice(INTERESTING_VALUES)
    else:
        obj[key] = rng.choice(INTERESTING_VALUES)
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


TOML_VALUES = (
    '""', '"x"', "0", "-1", "1e400", "nan", "inf", "-0.0", "true", "[]", "{}", "[1, 2]", '"0:61"', '"1:00:00"', '"99:99"',
    '"#ff0000"', '"#fff"', '"red.wav"', '"../../etc/passwd"', '"' + "x" * 300 + '"', "9" * 30, "1979-05-27T07:32:00Z",
    "[[1], [2]]", "{ at = 1 }", '"a\\u0000b"', '"""', "'",
)  # fmt: skip


def mutate_toml(data: bytes, rng: Any) -> bytes:
    """A show file with a line deleted, duplicated or moved, or a value replaced by an edge value (stays UTF-8)."""
    lines = data.decode("utf-8", errors="replace").split("\n")
    i = rng.randrange(len(lines))
    op = rng.randrange(4)
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(rng.randrange(len(lines) + 1), lines[i])
    elif op == 2:
        lines.insert(rng.randrange(len(lines)), lines.pop(i))
    elif "=" in lines[i]:
        lines[i] = lines[i].split("=", 1)[0] + "= " + rng.choice(TOML_VALUES)
    else:
        lines[i] = rng.choice(("[[groups]]", "[[groups.cues]]", "[description]", "[groups]", "title = 1"))
    return "\n".join(lines).encode("utf-8")


def mutate_json(data: bytes, rng: Any) -> bytes:
    """A JSON body with a field replaced by an edge value (or added), or bytes mutation if it is not an object."""
    try:
        body = json.loads(data)
    except ValueError:
        return mutate(data, rng)
    if not isinstance(body, dict):
        return mutate(data, rng)
    key = rng.choice(sorted(body) + ["in_s", "at", "confirm", "text", "x"])
    value = rng.choice(INTERESTING_VALUES + ("2026-11-28T21:00:00", "2026-02-30T00:00:00Z", "0001-01-01T00:00:00+00:00"))
    body[key] = value.decode("latin-1") if isinstance(value, bytes) else value
    return json.dumps(body).encode()


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        _protocol_target("protocol.participant", PARTICIPANT_TO_SERVER, MAX_PARTICIPANT_MESSAGE),
        _protocol_target("protocol.organizer", ORGANIZER_TO_SERVER, MAX_ORGANIZER_MESSAGE),
        _protocol_target("protocol.to_participant", SERVER_TO_PARTICIPANT, MAX_SERVER_FRAME),
        _protocol_target("protocol.to_organizer", SERVER_TO_ORGANIZER, MAX_SERVER_FRAME),
        Target("sntp", sntp_outcome, SNTP_SEEDS),
        Target("showfile", showfile_outcome, _show_seeds(), mutate_toml),
        Target("api", api_outcome, API_SEEDS, mutate_json),
    )
}
