"""Writes tests/js/fixtures/wire_vectors.json: frames and what protocol/codec.py makes of them.

The JS codec (clients/web/js/protocol.js) must agree with the Python one; the
fixture lets `node --test` check that without running Python. Regenerate after
a protocol change:  .venv/bin/python tests/js/make_wire_vectors.py
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import msgpack

from protocol import codec, messages
from protocol.errors import RemoteProtocolError

BIG_US = 1_700_000_000_123_456
ALL = tuple(messages.ALL_MESSAGES.values())
# The JS side decodes the vectors with the same limit (protocol_interop.test.mjs).
MAX_SIZE = 65536

FRAMES: list[tuple[str, bytes]] = [
    ("welcome", codec.encode(messages.Welcome(1, "dev_ABC-123", "b", "/tracks/b.mp3", "Flashmob ✨"))),
    ("ping", codec.encode(messages.Ping(4294967295, BIG_US))),
    ("estimate float rate", codec.encode(messages.Estimate(BIG_US, -987654, 35.75, 1200, 2.5))),
    ("estimate zero floats", codec.encode(messages.Estimate(BIG_US, 0, 0.0, 0, 0.0))),
    ("schedule idle", codec.encode(messages.Schedule(0, "idle", None))),
    ("schedule playing", codec.encode(messages.Schedule(12, "playing", BIG_US))),
    ("overview", codec.encode(messages.Overview(3, "scheduled", BIG_US, BIG_US - 9, 2, {"a": 1, "b": 1}, 2, 1, 0, {"lead_min_ms": 1500, "laggards": [{"device": "abcdefgh", "bound_ms": 12.5}]}))),
    ("error", codec.encode(messages.Error("not_authorized", "invalid organizer token"))),
    ("join minimal", msgpack.packb({"type": "join", "v": 1})),
    ("join with lang", codec.encode(messages.Join(1, "dev_ABC-123", "page", "fr-CA"))),
    ("show with cues", codec.encode(messages.Show("Flashmob", "samedi 18 h", "place du Marché", "des écouteurs", "Une heure ensemble.", (messages.Cue(0, "Bienvenue", "#FF8800", (200, 100, 200)), messages.Cue(BIG_US, "", None, None))))),
    ("show no cues", codec.encode(messages.Show("T", "", "", "", "", ()))),
    ("show cue omits optionals", msgpack.packb({"type": "show", "title": "T", "when": "", "where": "", "bring": "", "about": "", "cues": [{"at_us": 5, "text": "x"}]})),
    ("show bad cue colour", msgpack.packb({"type": "show", "title": "T", "when": "", "where": "", "bring": "", "about": "", "cues": [{"at_us": 5, "text": "x"}, {"at_us": 5, "text": "x", "colour": "red"}]})),
    ("show cue unknown field", msgpack.packb({"type": "show", "title": "T", "when": "", "where": "", "bring": "", "about": "", "cues": [{"at_us": 5, "text": "x", "size": 3}]})),
    ("show cue not a map", msgpack.packb({"type": "show", "title": "T", "when": "", "where": "", "bring": "", "about": "", "cues": [[5, "x"]]})),
    ("show cue missing at", msgpack.packb({"type": "show", "title": "T", "when": "", "where": "", "bring": "", "about": "", "cues": [{"text": "x"}]})),
    ("show bad vibrate step", msgpack.packb({"type": "show", "title": "T", "when": "", "where": "", "bring": "", "about": "", "cues": [{"at_us": 5, "text": "x", "vibrate": [100, 10001]}]})),
    ("show vibrate float", msgpack.packb({"type": "show", "title": "T", "when": "", "where": "", "bring": "", "about": "", "cues": [{"at_us": 5, "text": "x", "vibrate": [100, 1.0]}]})),
    ("show too many cues", msgpack.packb({"type": "show", "title": "T", "when": "", "where": "", "bring": "", "about": "", "cues": [{"at_us": 1, "text": ""}] * 501})),
    ("announcement", codec.encode(messages.Announcement("Rendez-vous à la fontaine", BIG_US))),
    ("announce", codec.encode(messages.Announce("Gather at the fountain"))),
    ("announce too long", msgpack.packb({"type": "announce", "text": "a" * 501})),
    ("pong", codec.encode(messages.Pong(1, -BIG_US, BIG_US, BIG_US + 5))),
    ("ready", codec.encode(messages.Ready(True, False))),
    ("ready full", codec.encode(messages.Ready(True, True, 0.5, 3200, 215000, True, False))),
    ("ready old client", msgpack.packb({"type": "ready", "loaded": True, "unlocked": False})),
    ("ready downloaded above 1", msgpack.packb({"type": "ready", "loaded": True, "unlocked": False, "downloaded": 1.5})),
    ("ready latency out of range", msgpack.packb({"type": "ready", "loaded": True, "unlocked": False, "output_latency_us": 10_000_001})),
    ("hello", codec.encode(messages.Hello(1, "tok"))),
    ("start", codec.encode(messages.Start(5000))),
    ("abort", codec.encode(messages.Abort())),
    ("truncated", codec.encode(messages.Ping(1, BIG_US))[:-2]),
    ("trailing byte", codec.encode(messages.Ping(1, BIG_US)) + b"\x00"),
    ("array", msgpack.packb(["ping", 1])),
    ("int key", msgpack.packb({1: 2, "type": "ping"})),
    ("no type", msgpack.packb({"seq": 1})),
    ("unknown type", msgpack.packb({"type": "dance"})),
    ("unknown field", msgpack.packb({"type": "ping", "seq": 1, "t0_us": 2, "x": 3})),
    ("missing field", msgpack.packb({"type": "ping", "seq": 1})),
    ("float for int", msgpack.packb({"type": "ping", "seq": 1, "t0_us": 2.0})),
    ("bool for int", msgpack.packb({"type": "ping", "seq": True, "t0_us": 2})),
    ("int for bool", msgpack.packb({"type": "ready", "loaded": 1, "unlocked": False})),
    ("bin for str", msgpack.packb({"type": "error", "code": b"x", "message": "m"}, use_bin_type=True)),
    ("beyond 2^53", msgpack.packb({"type": "ping", "seq": 1, "t0_us": 2**53})),
    ("rate out of range", msgpack.packb({"type": "estimate", "at_us": 0, "offset_us": 0, "rate_ppm": -10000.5, "bound_us": 0, "bound_growth_ppm": 0})),
    ("nan rate", msgpack.packb({"type": "estimate", "at_us": 0, "offset_us": 0, "rate_ppm": float("nan"), "bound_us": 0, "bound_growth_ppm": 0})),
    ("bad state", msgpack.packb({"type": "schedule", "epoch": 1, "state": "paused", "start_us": None})),
    ("long title", msgpack.packb({"type": "welcome", "v": 1, "device_id": "abcdefgh", "group": "g", "track_url": "/t", "title": "é" * 201})),
    ("bad counts", msgpack.packb({"type": "overview", "epoch": 0, "state": "idle", "start_us": None, "server_us": 0, "devices": 0, "groups": {"a": -1}, "loaded": 0, "unlocked": 0, "synced": 0})),
    ("float32 rate", b"\x86" + msgpack.packb("type") + msgpack.packb("estimate") + msgpack.packb("at_us") + b"\x00" + msgpack.packb("offset_us") + b"\x00" + msgpack.packb("rate_ppm") + b"\xca" + struct.pack(">f", 1.5) + msgpack.packb("bound_us") + b"\x00" + msgpack.packb("bound_growth_ppm") + b"\x00"),
]


def outcome(data: bytes) -> dict[str, Any]:
    try:
        message = codec.decode(data, ALL, MAX_SIZE)
    except RemoteProtocolError as exc:
        return {"code": exc.code, "reason": exc.reason}
    fields = {spec.name: codec._to_wire(spec, getattr(message, spec.name)) for spec in message.SCHEMA}
    return {"message": {"type": message.TYPE, **fields}}


def main() -> None:
    vectors = [{"name": name, "hex": data.hex(), **outcome(data)} for name, data in FRAMES]
    path = Path(__file__).parent / "fixtures" / "wire_vectors.json"
    path.write_text(json.dumps(vectors, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
