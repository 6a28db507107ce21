"""Every message of the Unisono wire protocol, as frozen dataclasses.

Each class names its ``TYPE`` (the value of the ``type`` key on the wire) and a
``SCHEMA``: one ``Field`` per dataclass field, in order, saying what values the
wire may carry. ``protocol.codec`` uses the schema to validate incoming maps and
to check outgoing messages. ``PROTOCOL.md`` documents the same table in prose;
``tests/protocol/test_protocol_doc.py`` keeps them from drifting apart.

Units and signs are in the field names: ``*_us`` is an integer number of
microseconds; ``offset_us`` is always ``server clock - device clock``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping, Union

PROTOCOL_VERSION = 1

# Integers on the wire stay within what a JavaScript number holds exactly,
# so that a browser client never rounds a timestamp (Number.MAX_SAFE_INTEGER).
MAX_SAFE_INT = 2**53 - 1
MIN_SAFE_INT = -MAX_SAFE_INT
MAX_SEQ = 2**32 - 1

DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")
SHOW_STATES = ("idle", "scheduled", "playing", "ended")
ShowState = Literal["idle", "scheduled", "playing", "ended"]


@dataclass(frozen=True)
class Field:
    """What one wire field may hold.

    kind: "int", "float" (an int is accepted too), "str", "bool", "enum",
    "counts" (a map of short strings to non-negative ints), "ints" (an array of
    at most ``max_items`` ints, each in ``low``..``high``; a tuple in Python) or
    "records" (an array of at most ``max_items`` maps, each holding exactly the
    fields of ``record.SCHEMA``; a tuple of ``record`` instances in Python) or
    "map" (a map with string keys holding a document whose shape is described
    elsewhere: the organizer's status, see ``server/openapi.py``).
    ``optional`` allows nil. For numbers, ``low``/``high`` are inclusive bounds;
    for strings, ``high`` is the maximum length in characters and ``pattern`` a
    full match.
    """

    name: str
    kind: str
    low: float = MIN_SAFE_INT
    high: float = MAX_SAFE_INT
    optional: bool = False
    pattern: re.Pattern[str] | None = None
    choices: tuple[str, ...] = ()
    max_items: int = 0
    record: type[Record] | None = None

    def describe(self) -> str:
        """Human text of what this field expects, used in error messages."""
        if self.kind in ("int", "float"):
            text = f"{'integer' if self.kind == 'int' else 'number'} in [{self.low:g}, {self.high:g}]"
        elif self.kind == "str":
            text = f"string of at most {int(self.high)} characters"
            if self.pattern is not None:
                text = f"string matching {self.pattern.pattern}"
        elif self.kind == "enum":
            text = "one of " + ", ".join(self.choices)
        elif self.kind == "counts":
            text = "map of group name to count"
        elif self.kind == "ints":
            text = f"array of at most {self.max_items} integers in [{self.low:g}, {self.high:g}]"
        elif self.kind == "records":
            name = self.record.__name__.lower() if self.record is not None else "record"
            text = f"array of at most {self.max_items} {name} maps"
        elif self.kind == "map":
            text = "map with string keys"
        else:
            text = "boolean"
        return text + (" or nil" if self.optional else "")


def _int(name: str, low: float = MIN_SAFE_INT, high: float = MAX_SAFE_INT, optional: bool = False) -> Field:
    return Field(name, "int", low, high, optional)


def _str(name: str, max_len: int, pattern: re.Pattern[str] | None = None, optional: bool = False) -> Field:
    return Field(name, "str", 0, max_len, optional, pattern)


class Record:
    """A map nested in a message (a ``records`` field's items): ``SCHEMA`` lists its fields."""

    SCHEMA: ClassVar[tuple[Field, ...]]


class Message(Record):
    """Base of all messages. ``TYPE`` is the wire name; ``SCHEMA`` the fields."""

    TYPE: ClassVar[str]


# --- participant -> server -------------------------------------------------

# A reported output latency beyond 10 s (either sign) is nonsense: Bluetooth
# adds 150-300 ms (FIELD-NOTES.md); the manual adjustment is capped far below.
MAX_LATENCY_US = 10_000_000


@dataclass(frozen=True)
class Join(Message):
    """First message on /ws. ``device_id`` nil asks the server to assign one.

    ``lang``: the device's preferred language as a BCP 47 tag (``navigator.language``);
    texts come in French when its primary subtag is ``fr``, else in English.
    """

    TYPE: ClassVar[str] = "join"
    v: int
    device_id: str | None
    client: str = ""
    lang: str | None = None
    SCHEMA: ClassVar[tuple[Field, ...]] = (
        _int("v", 0, 65535),
        _str("device_id", 64, DEVICE_ID_PATTERN, optional=True),
        _str("client", 64),
        _str("lang", 35, optional=True),
    )


@dataclass(frozen=True)
class Pong(Message):
    """Answer to ``Ping``: echoes ``t0_us``, adds the device's receive and send stamps."""

    TYPE: ClassVar[str] = "pong"
    seq: int
    t0_us: int
    t1_us: int
    t2_us: int
    SCHEMA: ClassVar[tuple[Field, ...]] = (
        _int("seq", 0, MAX_SEQ),
        _int("t0_us"),
        _int("t1_us"),
        _int("t2_us"),
    )


@dataclass(frozen=True)
class Ready(Message):
    """The device's readiness: track downloaded and decoded, audio unlocked by a tap.

    The other fields came later and may be omitted (nil: not reported), so that
    older pages stay valid: ``downloaded`` the fraction of the show's files held
    offline (0..1); ``bound_us`` the device's current sync error bound;
    ``output_latency_us`` the output latency it compensates (reported plus the
    participant's manual adjustment, which may be negative); ``wake_lock``
    whether it holds a screen wake lock; ``visible`` whether the page is visible.
    """

    TYPE: ClassVar[str] = "ready"
    loaded: bool
    unlocked: bool
    downloaded: float | None = None
    bound_us: int | None = None
    output_latency_us: int | None = None
    wake_lock: bool | None = None
    visible: bool | None = None
    SCHEMA: ClassVar[tuple[Field, ...]] = (
        Field("loaded", "bool"),
        Field("unlocked", "bool"),
        Field("downloaded", "float", 0, 1, optional=True),
        _int("bound_us", 0, optional=True),
        _int("output_latency_us", -MAX_LATENCY_US, MAX_LATENCY_US, optional=True),
        Field("wake_lock", "bool", optional=True),
        Field("visible", "bool", optional=True),
    )


# --- server -> participant -------------------------------------------------


@dataclass(frozen=True)
class Welcome(Message):
    """Answer to ``Join``: the device's id (keep it) and group, and what to play."""

    TYPE: ClassVar[str] = "welcome"
    v: int
    device_id: str
    group: str
    track_url: str
    title: str
    SCHEMA: ClassVar[tuple[Field, ...]] = (
        _int("v", 0, 65535),
        _str("device_id", 64, DEVICE_ID_PATTERN),
        _str("group", 64),
        _str("track_url", 1024),
        _str("title", 200),
    )


# Limits of a show's texts and cues on the wire. A cue's text is read at a
# glance on a phone held at arm's length: 200 characters is already a lot. 500
# cues is a cue every 7 s for an hour; the biggest show message (500 cues of
# 200 four-byte characters) stays under 512 KiB.
MAX_CUES = 500
MAX_CUE_TEXT = 200
MAX_VIBRATE_STEPS = 32  # navigator.vibrate patterns longer than this are cut by some browsers
MAX_VIBRATE_MS = 10_000  # Chrome's cap on one vibration step
MAX_ABOUT_TEXT = 2000
MAX_INFO_TEXT = 200
MAX_ANNOUNCEMENT_TEXT = 500
COLOUR_PATTERN = re.compile(r"#[0-9a-fA-F]{6}")


@dataclass(frozen=True)
class Cue(Record):
    """One timed cue of the device's group, in the device's language.

    ``at_us``: track position (microseconds from track position 0, i.e. server
    time ``start_us + at_us``). ``colour``: ``#rrggbb`` to flash, or None.
    ``vibrate``: a ``navigator.vibrate`` pattern in ms (on, off, on, ...), or None.
    """

    at_us: int
    text: str
    colour: str | None = None
    vibrate: tuple[int, ...] | None = None
    SCHEMA: ClassVar[tuple[Field, ...]] = (
        _int("at_us", 0),
        _str("text", MAX_CUE_TEXT),
        _str("colour", 7, COLOUR_PATTERN, optional=True),
        Field("vibrate", "ints", 0, MAX_VIBRATE_MS, optional=True, max_items=MAX_VIBRATE_STEPS),
    )


@dataclass(frozen=True)
class Show(Message):
    """What the device shows around the audio: the event's description and its group's cues.

    Sent once after ``welcome``, in the language ``join.lang`` asked for.
    ``cues`` are sorted by ``at_us``.
    """

    TYPE: ClassVar[str] = "show"
    title: str
    when: str
    where: str
    bring: str
    about: str
    cues: tuple[Cue, ...]
    SCHEMA: ClassVar[tuple[Field, ...]] = (
        _str("title", 200),
        _str("when", MAX_INFO_TEXT),
        _str("where", MAX_INFO_TEXT),
        _str("bring", MAX_INFO_TEXT),
        _str("about", MAX_ABOUT_TEXT),
        Field("cues", "records", max_items=MAX_CUES, record=Cue),
    )


@dataclass(frozen=True)
class Announcement(Message):
    """The organizer's free text, to show prominently. ``at_us``: server time it was sent."""

    TYPE: ClassVar[str] = "announcement"
    text: str
    at_us: int
    SCHEMA: ClassVar[tuple[Field, ...]] = (_str("text", MAX_ANNOUNCEMENT_TEXT), _int("at_us"))


@dataclass(frozen=True)
class Ping(Message):
    """A clock probe. ``t0_us``: server clock when sent. Answer at once with ``Pong``."""

    TYPE: ClassVar[str] = "ping"
    seq: int
    t0_us: int
    SCHEMA: ClassVar[tuple[Field, ...]] = (_int("seq", 0, MAX_SEQ), _int("t0_us"))


@dataclass(frozen=True)
class Estimate(Message):
    """The server's estimate of this device's clock.

    At device time ``at_us``, server time = device time + ``offset_us``. Between
    then and device time t, the offset changes by ``rate_ppm * 1e-6 * (t - at_us)``.
    The true offset lies within ``bound_us + bound_growth_ppm * 1e-6 * |t - at_us|``.
    """

    TYPE: ClassVar[str] = "estimate"
    at_us: int
    offset_us: int
    rate_ppm: float
    bound_us: int
    bound_growth_ppm: float
    SCHEMA: ClassVar[tuple[Field, ...]] = (
        _int("at_us"),
        _int("offset_us"),
        Field("rate_ppm", "float", -10_000, 10_000),
        _int("bound_us", 0),
        Field("bound_growth_ppm", "float", 0, 10_000),
    )


@dataclass(frozen=True)
class Schedule(Message):
    """The show's state. ``start_us``: server time of track position 0, nil when idle.

    ``epoch`` grows with every change; ignore a schedule older than one already seen.
    """

    TYPE: ClassVar[str] = "schedule"
    epoch: int
    state: ShowState
    start_us: int | None
    SCHEMA: ClassVar[tuple[Field, ...]] = (
        _int("epoch", 0),
        Field("state", "enum", choices=SHOW_STATES),
        _int("start_us", optional=True),
    )


@dataclass(frozen=True)
class Error(Message):
    """Why the server is about to close, or why an organizer command was refused."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    SCHEMA: ClassVar[tuple[Field, ...]] = (_str("code", 64), _str("message", 500))


# --- organizer -> server ---------------------------------------------------


@dataclass(frozen=True)
class Hello(Message):
    """First message on /ws/organizer: the protocol version and the organizer token."""

    TYPE: ClassVar[str] = "hello"
    v: int
    token: str
    SCHEMA: ClassVar[tuple[Field, ...]] = (_int("v", 0, 65535), _str("token", 256))


# Bounds of the lead time of a start, in milliseconds: at least one second for
# the schedule to reach every phone (Beatsync caps its lead at 3 s; a crowd on
# 4G needs more), at most a day.
MIN_LEAD_MS = 1_000
MAX_LEAD_MS = 86_400_000


@dataclass(frozen=True)
class Start(Message):
    """Start the show ``lead_ms`` milliseconds after the server receives this.

    The server refuses a lead shorter than its safe minimum (``too_soon``) and,
    unless ``confirm`` is true, a start while too few devices are ready
    (``not_ready``).
    """

    TYPE: ClassVar[str] = "start"
    lead_ms: int
    confirm: bool = False
    SCHEMA: ClassVar[tuple[Field, ...]] = (_int("lead_ms", MIN_LEAD_MS, MAX_LEAD_MS), Field("confirm", "bool"))


@dataclass(frozen=True)
class Abort(Message):
    """Cancel a scheduled or playing show; every device stops and the show is idle."""

    TYPE: ClassVar[str] = "abort"
    SCHEMA: ClassVar[tuple[Field, ...]] = ()


@dataclass(frozen=True)
class Announce(Message):
    """Show ``text`` on every participant's page now (safety messages, changes of plan)."""

    TYPE: ClassVar[str] = "announce"
    text: str
    SCHEMA: ClassVar[tuple[Field, ...]] = (_str("text", MAX_ANNOUNCEMENT_TEXT),)


# --- server -> organizer ---------------------------------------------------


@dataclass(frozen=True)
class Overview(Message):
    """What the organizer sees, sent on every change and at least once a second.

    ``status``: the full status document, as ``GET /api/status`` returns it
    (its shape is the OpenAPI document's ``Status`` schema, served at
    ``/api/openapi.json``); nil from servers that do not send it.
    """

    TYPE: ClassVar[str] = "overview"
    epoch: int
    state: ShowState
    start_us: int | None
    server_us: int
    devices: int
    groups: Mapping[str, int]
    loaded: int
    unlocked: int
    synced: int
    status: Mapping[str, Any] | None = None
    SCHEMA: ClassVar[tuple[Field, ...]] = (
        _int("epoch", 0),
        Field("state", "enum", choices=SHOW_STATES),
        _int("start_us", optional=True),
        _int("server_us"),
        _int("devices", 0),
        Field("groups", "counts"),
        _int("loaded", 0),
        _int("unlocked", 0),
        _int("synced", 0),
        Field("status", "map", optional=True),
    )


ParticipantMessage = Union[Join, Pong, Ready]
OrganizerMessage = Union[Hello, Start, Abort, Announce]

# Which messages each side may send on each endpoint.
PARTICIPANT_TO_SERVER: tuple[type[Message], ...] = (Join, Pong, Ready)
SERVER_TO_PARTICIPANT: tuple[type[Message], ...] = (Welcome, Show, Ping, Estimate, Schedule, Announcement, Error)
ORGANIZER_TO_SERVER: tuple[type[Message], ...] = (Hello, Start, Abort, Announce)
SERVER_TO_ORGANIZER: tuple[type[Message], ...] = (Overview, Error)

ALL_MESSAGES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (*PARTICIPANT_TO_SERVER, *SERVER_TO_PARTICIPANT, *ORGANIZER_TO_SERVER, *SERVER_TO_ORGANIZER)
}


def check_finite(value: Any) -> bool:
    """True for an int, or a float that is neither NaN nor infinite."""
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
