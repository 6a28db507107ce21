"""Show files (scores): a TOML file naming the show, its description and its groups.

```toml
title = "Place du Marché, 18:00"

[description]          # every key optional; _fr and _en of when, where, bring, text
when_en = "Saturday 14 June, 18:00"
when_fr = "Samedi 14 juin, 18 h"

[[groups]]
name = "red"           # [A-Za-z0-9_-], at most 64 characters, unique
track = "red.wav"      # relative to this file: WAV, any audio, or a prepared manifest (.json)
weight = 2             # optional, default 1: red gets twice as many devices as a weight-1 group

[[groups.cues]]
at = "1:30"            # seconds (90, 90.5) or "m:ss" / "h:mm:ss", within the track
text_en = "Raise your hand"
text_fr = "Levez la main"
colour = "#ff0000"     # optional: "#rgb" or "#rrggbb", flashed full screen
vibrate = [200, 100, 200]  # optional: ms on, off, on, ... (navigator.vibrate)
```

``load_show`` returns a ``ShowFile`` or raises ``ShowFileInvalid`` holding every
``ShowError`` found: each names the file, the key path (``groups[1].cues[3].at``,
indices from 0), its line, what was expected and what was found.
"""

from __future__ import annotations

import math
import re
import tomllib
import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.messages import (
    MAX_ABOUT_TEXT,
    MAX_CUE_TEXT,
    MAX_CUES,
    MAX_INFO_TEXT,
    MAX_VIBRATE_MS,
    MAX_VIBRATE_STEPS,
    Cue,
)

LANGUAGES = ("en", "fr")
DEFAULT_LANGUAGE = "en"
DESCRIPTION_FIELDS = {"when": MAX_INFO_TEXT, "where": MAX_INFO_TEXT, "bring": MAX_INFO_TEXT, "text": MAX_ABOUT_TEXT}
GROUP_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The organizer's overview counts devices per group in a map of at most 256 entries.
MAX_GROUPS = 256
# A weight is a ratio between groups; beyond this range it is surely a typo.
MAX_WEIGHT = 1_000_000
MAX_TITLE = 200
COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
TIME_TEXT = re.compile(r"(?:(\d+):)?(\d+):(\d\d(?:\.\d{1,6})?)")

TOP_KEYS = ("title", "description", "groups")
GROUP_KEYS = ("name", "track", "weight", "cues")
CUE_KEYS = ("at", "text_fr", "text_en", "colour", "vibrate")


def language_of(tag: str | None) -> str:
    """"fr" when a BCP 47 tag's primary subtag is fr (any case), else "en"."""
    if tag and tag.split("-")[0].split("_")[0].lower() == "fr":
        return "fr"
    return DEFAULT_LANGUAGE


@dataclass(frozen=True)
class ShowCue:
    """One cue of a group: position in the track, texts by language, flash and vibration."""

    at_us: int
    text: Mapping[str, str]
    colour: str | None = None
    vibrate: tuple[int, ...] | None = None

    def to_wire(self, lang: str) -> Cue:
        return Cue(at_us=self.at_us, text=self.text.get(lang, ""), colour=self.colour, vibrate=self.vibrate)


@dataclass(frozen=True)
class ShowGroup:
    name: str
    track: Path
    duration_ns: int
    weight: float = 1.0
    cues: tuple[ShowCue, ...] = ()


@dataclass(frozen=True)
class ShowFile:
    """A checked show file. ``description[lang][key]`` for key in when, where, bring, text."""

    path: Path
    title: str
    groups: tuple[ShowGroup, ...]
    description: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return max(group.duration_ns for group in self.groups)


@dataclass(frozen=True)
class ShowError:
    """One problem in a show file. ``line`` is 1-based, or None when it could not be found."""

    file: Path
    key: str
    line: int | None
    expected: str
    found: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} expected {self.expected}, found {self.found}"


class ShowFileInvalid(Exception):
    """The show file has errors; ``errors`` lists every one, in file order."""

    def __init__(self, errors: list[ShowError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


def wav_duration_ns(path: Path) -> int:
    """Length of a WAV file in nanoseconds. Raises ValueError (with the reason) if it is not one."""
    try:
        with wave.open(str(path), "rb") as wav:
            frames, rate = wav.getnframes(), wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a readable WAV file ({exc})") from None
    if rate <= 0:
        raise ValueError("a WAV file with no sample rate")
    return frames * 1_000_000_000 // rate


def track_duration_ns(path: Path) -> int:
    """Length of a track in ns: a WAV read by its header, anything else (a prepared
    segment manifest ``*.json``, MP3, FLAC, ...) by ``server.prepare``. Raises
    ValueError saying why when the file is not audio."""
    if path.suffix.lower() in (".wav", ".wave"):
        return wav_duration_ns(path)
    from server.prepare import PrepareError
    from server.prepare import track_duration_ns as prepared_duration_ns

    try:
        return prepared_duration_ns(path)
    except PrepareError as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:  # PyAV raises its own errors for files that are not audio
        raise ValueError(f"not a readable audio file ({type(exc).__name__})") from None


def load_show(
    path: Path,
    track_dir: Path | None = None,
    duration_ns: Callable[[Path], int] = track_duration_ns,
) -> ShowFile:
    """Read and check a show file. Tracks resolve against ``track_dir`` (default: the file's folder).

    ``duration_ns`` reads a track's length and raises ValueError or OSError if
    it cannot. Raises ShowFileInvalid listing every error (a file that is not
    UTF-8 included), or OSError if the file itself cannot be read.
    """
    text = decode_show_text(path.read_bytes(), path)
    return parse_show(text, path, track_dir or path.parent, duration_ns)


def decode_show_text(data: bytes, path: Path) -> str:
    """A show file's bytes as text (UTF-8, as TOML requires); raises ShowFileInvalid naming the line of a bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        found = f"byte 0x{data[exc.start]:02x} at column {column}"
        raise ShowFileInvalid([ShowError(path, "", line, "UTF-8 text (TOML files are UTF-8)", found)]) from None


def parse_show(text: str, path: Path, track_dir: Path, duration_ns: Callable[[Path], int] = track_duration_ns) -> ShowFile:
    """``load_show`` on text already read: ``path`` is only used to name the file in errors."""
    checker = _Checker(text, path, track_dir, duration_ns)
    show = checker.run()
    if checker.errors or show is None:
        raise ShowFileInvalid(sorted(checker.errors, key=lambda e: e.line or 0))
    return show


# --- checking ---------------------------------------------------------------------


def _found(value: Any) -> str:
    """How a value from the file is shown in an error: its TOML kind and a short form."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value:g}" if isinstance(value, float) else f"integer {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f"string {shown!r}" if len(value) <= 40 else f"a string of {len(value)} characters ({shown!r})"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    return f"a {type(value).__name__}"


def _parse_clock(text: str) -> float | None:
    """Seconds from "m:ss", "mm:ss.s" or "h:mm:ss" (minutes under 60 when hours are given), else None."""
    match = TIME_TEXT.fullmatch(text)
    if match is None:
        return None
    hours, minutes, seconds = match.group(1), int(match.group(2)), float(match.group(3))
    if seconds >= 60 or (hours is not None and minutes >= 60):
        return None
    return int(hours or 0) * 3600 + minutes * 60 + seconds


def _clock_text(ns: int) -> str:
    total = ns // 1_000_000_000
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class _LineIndex:
    """Where each key path is written: a scan of table headers and ``key =`` lines.

    TOML parsers give no positions, so this follows ``[table]`` and
    ``[[array]]`` headers and bare keys; a path it cannot place (an inline
    table, a dotted key) falls back to its nearest placed parent.
    """

    HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\s\"'-]+?)\s*\]\]?\s*(?:#.*)?$")
    KEY = re.compile(r"^\s*([A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')\s*=")

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        counters: dict[str, int] = {}
        prefix = ""
        in_multiline: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline is not None:
                if line.count(in_multiline) % 2 == 1:
                    in_multiline = None
                continue
            header = self.HEADER.match(line)
            if header:
                prefix = self._header_path(header.group(1) == "[[", header.group(2), counters, prefix)
                self.lines.setdefault(prefix, number)
                continue
            key = self.KEY.match(line)
            if key:
                name = key.group(1).strip("\"'")
                self.lines.setdefault(f"{prefix}.{name}" if prefix else name, number)
                for quote in ('"""', "'''"):
                    if line.count(quote) % 2 == 1:
                        in_multiline = quote

    def _header_path(self, is_array: bool, dotted: str, counters: dict[str, int], prefix: str) -> str:
        parts = [part.strip().strip("\"'") for part in dotted.split(".")]
        # Map "groups.cues" onto the current "groups[i]" element.
        path = ""
        for depth, part in enumerate(parts):
            plain = f"{path}.{part}" if path else part
            if depth < len(parts) - 1:
                index = counters.get(plain, 0) - 1
                path = f"{plain}[{index}]" if index >= 0 else plain
            else:
                path = plain
        if not is_array:
            return path
        index = counters.get(path, 0)
        counters[path] = index + 1
        # A new element restarts the numbering of the arrays nested in it.
        for key in [k for k in counters if k.startswith(f"{path}[")]:
            del counters[key]
        return f"{path}[{index}]"

    def line_of(self, key: str) -> int | None:
        while key:
            if key in self.lines:
                return self.lines[key]
            cut = max(key.rfind("."), key.rfind("["))
            key = key[:cut] if cut > 0 else ""
        return None


class _Checker:
    def __init__(self, text: str, path: Path, track_dir: Path, duration_ns: Callable[[Path], int]) -> None:
        self.text = text
        self.path = path
        self.track_dir = track_dir
        self.read_duration_ns = duration_ns
        self.errors: list[ShowError] = []
        self.index = _LineIndex(text)

    def error(self, key: str, expected: str, found: str) -> None:
        self.errors.append(ShowError(self.path, key, self.index.line_of(key), expected, found))

    def run(self) -> ShowFile | None:
        try:
            data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            at = re.search(r"\(at line (\d+), column (\d+)\)", message)
            detail = re.sub(r"\s*\(at line \d+, column \d+\)", "", message) or "invalid TOML"
            self.errors.append(
                ShowError(self.path, "", int(at.group(1)) if at else None, "valid TOML", f"a syntax error ({detail})")
            )
            return None
        self.unknown_keys(data, "", TOP_KEYS)
        title = self.text_value(data, "title", "title", MAX_TITLE, required=True)
        description = self.description(data.get("description"))
        groups = self.groups(data.get("groups"))
        if self.errors or not groups:
            return None
        return ShowFile(path=self.path, title=title, groups=tuple(groups), description=description)

    def unknown_keys(self, table: Mapping[str, Any], prefix: str, known: tuple[str, ...]) -> None:
        for key in table:
            if key not in known:
                path = f"{prefix}.{key}" if prefix else key
                self.error(path, f"one of the keys {', '.join(known)}", f"the unknown key {key!r}")

    def text_value(self, table: Mapping[str, Any], name: str, key: str, max_len: int, required: bool = False) -> str:
        if name not in table:
            if required:
                self.error(key, f"a string of 1 to {max_len} characters", "nothing (missing)")
            return ""
        value = table[name]
        if not isinstance(value, str):
            self.error(key, f"a string of at most {max_len} characters", _found(value))
            return ""
        if len(value) > max_len or (required and not value.strip()):
            self.error(key, f"a string of {'1 to ' if required else 'at most '}{max_len} characters", _found(value))
            return ""
        return value

    def description(self, value: Any) -> dict[str, dict[str, str]]:
        result: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}
        if value is None:
            return result
        if not isinstance(value, dict):
            self.error("description", "a table ([description])", _found(value))
            return result
        known = tuple(f"{name}_{lang}" for name in DESCRIPTION_FIELDS for lang in LANGUAGES)
        self.unknown_keys(value, "description", known)
        for name, max_len in DESCRIPTION_FIELDS.items():
            for lang in LANGUAGES:
                key = f"{name}_{lang}"
                result[lang][name] = self.text_value(value, key, f"description.{key}", max_len)
        _fill_missing_language(result)
        return result

    def groups(self, value: Any) -> list[ShowGroup]:
        if value is None:
            self.error("groups", "at least one [[groups]] table", "nothing (missing)")
            return []
        if not isinstance(value, list) or not all(isinstance(g, dict) for g in value):
            self.error("groups", "an array of tables ([[groups]])", _found(value))
            return []
        if not 1 <= len(value) <= MAX_GROUPS:
            self.error("groups", f"1 to {MAX_GROUPS} groups", f"{len(value)} groups")
            return []
        groups: list[ShowGroup] = []
        names: set[str] = set()
        track_names: dict[str, Path] = {}
        for i, table in enumerate(value):
            key = f"groups[{i}]"
            self.unknown_keys(table, key, GROUP_KEYS)
            name = self.group_name(table, key, names)
            track, duration_ns = self.track(table, key, track_names)
            weight = self.weight(table, key)
            cues = self.cues(table.get("cues"), f"{key}.cues", duration_ns)
            if name and track is not None and duration_ns is not None and weight is not None and cues is not None:
                groups.append(ShowGroup(name, track, duration_ns, weight, cues))
        return groups

    def group_name(self, table: Mapping[str, Any], key: str, names: set[str]) -> str:
        value = table.get("name")
        expected = "a group name of 1 to 64 letters, digits, _ or -"
        if value is None:
            self.error(f"{key}.name", expected, "nothing (missing)")
            return ""
        if not isinstance(value, str) or GROUP_NAME.fullmatch(value) is None:
            self.error(f"{key}.name", expected, _found(value))
            return ""
        if value in names:
            self.error(f"{key}.name", "a name no other group has", f"a second group named {value!r}")
            return ""
        names.add(value)
        return value

    def track(self, table: Mapping[str, Any], key: str, track_names: dict[str, Path]) -> tuple[Path | None, int | None]:
        value = table.get("track")
        key = f"{key}.track"
        if value is None:
            self.error(key, "the path of an audio file, relative to the show file", "nothing (missing)")
            return None, None
        if not isinstance(value, str) or not value.strip():
            self.error(key, "the path of an audio file, relative to the show file", _found(value))
            return None, None
        try:
            path = (self.track_dir / value).resolve()
            exists = path.is_file()
        except (OSError, ValueError) as exc:  # a name too long for the system, a NUL byte, a loop of links
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.error(key, "the path of an audio file, relative to the show file", f"a path the system refuses ({reason})")
            return None, None
        if not exists:
            self.error(key, "an existing audio file", f"no file at {path}")
            return None, None
        other = track_names.setdefault(path.name, path)
        if other != path:
            self.error(key, "track file names that differ between groups (tracks are served by name)", f"a second {path.name!r}")
            return None, None
        try:
            duration_ns = self.read_duration_ns(path)
        except (OSError, ValueError) as exc:
            self.error(key, "an audio file (WAV, MP3, FLAC, ...) or a prepared segment manifest (.json)", str(exc))
            return None, None
        if duration_ns <= 0:
            self.error(key, "an audio file that is not empty", "a track of length 0")
            return None, None
        return path, duration_ns

    def weight(self, table: Mapping[str, Any], key: str) -> float | None:
        value = table.get("weight", 1)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not 0 < value <= MAX_WEIGHT:
            self.error(f"{key}.weight", f"a number above 0 and at most {MAX_WEIGHT}", _found(value))
            return None
        return float(value)

    def cues(self, value: Any, key: str, duration_ns: int | None) -> tuple[ShowCue, ...] | None:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
            self.error(key, "an array of tables ([[groups.cues]])", _found(value))
            return None
        if len(value) > MAX_CUES:
            self.error(key, f"at most {MAX_CUES} cues", f"{len(value)} cues")
            return None
        before = len(self.errors)
        cues = [self.cue(table, f"{key}[{j}]", duration_ns) for j, table in enumerate(value)]
        if len(self.errors) > before:
            return None
        return tuple(sorted((c for c in cues if c is not None), key=lambda c: c.at_us))

    def cue(self, table: Mapping[str, Any], key: str, duration_ns: int | None) -> ShowCue | None:
        self.unknown_keys(table, key, CUE_KEYS)
        at_us = self.cue_time(table, key, duration_ns)
        texts = {lang: self.text_value(table, f"text_{lang}", f"{key}.text_{lang}", MAX_CUE_TEXT) for lang in LANGUAGES}
        # One language given: show it to everyone rather than nothing.
        for lang in LANGUAGES:
            if not texts[lang]:
                texts[lang] = next((t for t in texts.values() if t), "")
        colour = self.colour(table, key)
        vibrate = self.vibrate(table, key)
        if at_us is None:
            return None
        return ShowCue(at_us=at_us, text=texts, colour=colour, vibrate=vibrate)

    def cue_time(self, table: Mapping[str, Any], key: str, duration_ns: int | None) -> int | None:
        value = table.get("at")
        expected = "a time in the track: seconds (90, 90.5) or \"m:ss\" / \"h:mm:ss\""
        if duration_ns is not None:
            expected += f", from 0 to {_clock_text(duration_ns)}"
        key = f"{key}.at"
        if value is None:
            self.error(key, expected, "nothing (missing)")
            return None
        seconds: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            seconds = float(value)
        elif isinstance(value, str):
            seconds = _parse_clock(value.strip())
        if seconds is None or seconds < 0:
            self.error(key, expected, _found(value))
            return None
        at_us = round(seconds * 1_000_000)
        if duration_ns is not None and at_us * 1000 > duration_ns:
            self.error(key, expected, f"{_found(value)}, after the track's end")
            return None
        return at_us

    def colour(self, table: Mapping[str, Any], key: str) -> str | None:
        value = table.get("colour")
        if value is None:
            return None
        if not isinstance(value, str) or COLOUR.fullmatch(value) is None:
            self.error(f"{key}.colour", 'a CSS hex colour "#rgb" or "#rrggbb"', _found(value))
            return None
        digits = value[1:]
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return "#" + digits.lower()

    def vibrate(self, table: Mapping[str, Any], key: str) -> tuple[int, ...] | None:
        value = table.get("vibrate")
        if value is None:
            return None
        expected = f"an array of 1 to {MAX_VIBRATE_STEPS} whole milliseconds, each 0 to {MAX_VIBRATE_MS}"
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_VIBRATE_STEPS:
            self.error(f"{key}.vibrate", expected, _found(value))
            return None
        for i, step in enumerate(value):
            if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= MAX_VIBRATE_MS:
                self.error(f"{key}.vibrate[{i}]", expected, _found(step))
                return None
        return tuple(value)


def _fill_missing_language(description: dict[str, dict[str, str]]) -> None:
    """Where a field is given in one language only, use it for the other too."""
    for name in DESCRIPTION_FIELDS:
        given = next((description[lang][name] for lang in LANGUAGES if description[lang].get(name)), "")
        for lang in LANGUAGES:
            if not description[lang].get(name):
                description[lang][name] = given
