"""PROTOCOL.md against protocol/messages.py and protocol/codec.py: they must not drift.

The doc gives each message a heading ``#### `name` `` followed by a field table
(``| field | type | meaning |``); a message without fields says so in prose.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import protocol
from protocol.codec import MAX_COUNTS_ENTRIES, MAX_ORGANIZER_MESSAGE, MAX_PARTICIPANT_MESSAGE
from protocol.messages import ALL_MESSAGES, Field, Record

DOC_PATH = Path(protocol.__file__).with_name("PROTOCOL.md")
HEADING = re.compile(r"^#### `([^`]+)`\s*$")
RECORD_HEADING = re.compile(r"^#### The `([^`]+)` record\s*$")
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|([^|]*)\|")


def documented_messages(text: str, heading_pattern: re.Pattern[str] = HEADING) -> dict[str, list[dict[str, str]]]:
    """Message name -> one {field: type text} per heading of that name (empty if it has no table)."""
    found: dict[str, list[dict[str, str]]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        heading = heading_pattern.match(line)
        if heading:
            current = {}
            found.setdefault(heading.group(1), []).append(current)
        elif line.startswith("#"):
            current = None
        elif current is not None:
            row = ROW.match(line)
            if row:
                current[row.group(1)] = row.group(2).strip()
    return found


DOC_TEXT = DOC_PATH.read_text(encoding="utf-8")
DOC = documented_messages(DOC_TEXT)
RECORD_DOC = documented_messages(DOC_TEXT, RECORD_HEADING)
# Records nested in messages (``records`` fields), by the name the doc gives them.
RECORDS: dict[str, type[Record]] = {
    spec.record.__name__.lower(): spec.record
    for cls in ALL_MESSAGES.values()
    for spec in cls.SCHEMA
    if spec.record is not None
}


def doc_fields(name: str) -> dict[str, str]:
    """The one field table documented for ``name`` (a repeated heading refers back with no table)."""
    tables = [table for table in {**RECORD_DOC, **DOC}[name] if table]
    assert len(tables) <= 1, f"{name} has {len(tables)} field tables"
    return tables[0] if tables else {}


def test_parser_reads_a_known_table() -> None:
    """The parser finds ping's two fields with their type texts."""
    assert doc_fields("ping") == {"seq": "int 0..2^32-1", "t0_us": "int"}


def test_every_message_type_is_documented() -> None:
    """Each message in ALL_MESSAGES has a heading in PROTOCOL.md."""
    assert sorted(set(ALL_MESSAGES) - set(DOC)) == []


def test_doc_documents_no_message_that_does_not_exist() -> None:
    """Every message heading in PROTOCOL.md names a message of messages.py."""
    assert sorted(set(DOC) - set(ALL_MESSAGES)) == []


@pytest.mark.parametrize("name", sorted(ALL_MESSAGES))
def test_documented_fields_match_the_schema(name: str) -> None:
    """A message's field table lists exactly its SCHEMA fields, in order."""
    assert list(doc_fields(name)) == [spec.name for spec in ALL_MESSAGES[name].SCHEMA]


def test_message_without_fields_says_so() -> None:
    """abort has no fields, and the doc says 'No fields' under its heading."""
    assert ALL_MESSAGES["abort"].SCHEMA == ()
    assert re.search(r"#### `abort`\s+No fields\.", DOC_TEXT)


def test_every_record_is_documented() -> None:
    """Each record nested in a message has a "The `name` record" table listing exactly its SCHEMA fields."""
    assert sorted(RECORD_DOC) == sorted(RECORDS)
    for name, cls in RECORDS.items():
        assert list(doc_fields(name)) == [spec.name for spec in cls.SCHEMA]


KIND_WORD = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "enum": "str",
    "counts": "counts",
    "ints": "ints",
    "records": "records",
    "map": "map",
}


def _number(text: str) -> float:
    """A bound as the doc writes it: 65535, -10000, 2^32-1."""
    match = re.fullmatch(r"(-?\d+)\^(\d+)(-\d+)?", text)
    if match:
        return int(match.group(1)) ** int(match.group(2)) + int(match.group(3) or 0)
    return float(text)


def _fields() -> list[tuple[str, Field]]:
    tables: dict[str, type[Record]] = {**ALL_MESSAGES, **RECORDS}
    return [(name, spec) for name, cls in sorted(tables.items()) for spec in cls.SCHEMA]


@pytest.mark.parametrize(("name", "spec"), _fields(), ids=lambda value: value if isinstance(value, str) else value.name)
def test_documented_type_matches_the_schema(name: str, spec: Field) -> None:
    """The type column names the field's kind, any range, length, pattern or choices it states, and 'nil' iff optional."""
    type_text = doc_fields(name)[spec.name]
    assert type_text.split()[0].strip(",:") == KIND_WORD[spec.kind]
    assert ("nil" in type_text) == spec.optional
    span = re.search(r"(-?[\d^-]+)\.\.(-?[\d^-]+)", type_text)
    if span:
        assert (_number(span.group(1)), _number(span.group(2))) == (spec.low, spec.high)
    at_least = re.search(r">= (\d+)", type_text)
    if at_least:
        assert _number(at_least.group(1)) == spec.low
    items = re.search(r"at most (\d+) entries|at most (\d+)$|at most (\d+),", type_text)
    if spec.kind in ("ints", "records"):
        assert items is not None and int(next(g for g in items.groups() if g)) == spec.max_items
        if spec.record is not None:
            assert f"`{spec.record.__name__.lower()}`" in type_text
    at_most = re.search(r"<= (\d+)", type_text)
    if at_most:
        assert spec.kind == "str" and _number(at_most.group(1)) == spec.high
    if spec.pattern is not None:
        assert f"`{spec.pattern.pattern}`" in type_text
    choices = re.findall(r"`(\w+)`", type_text)
    if spec.kind == "records":
        choices = []
    if spec.kind == "enum" and choices:  # overview.state says "as in schedule" instead
        assert choices == list(spec.choices)


def test_size_limits_match_the_codec() -> None:
    """The per-endpoint frame limits in section 1 are the codec's constants."""
    limits = dict(
        (path, int(size)) for size, path in re.findall(r"\*\*(\d+) bytes\*\*\s+on\s+`([^`]+)`", DOC_TEXT)
    )
    assert limits == {"/ws": MAX_PARTICIPANT_MESSAGE, "/ws/organizer": MAX_ORGANIZER_MESSAGE}


def test_counts_limit_matches_the_codec() -> None:
    """The counts row of the value-type table states the codec's entry limit and 64-character keys."""
    row = next(line for line in DOC_TEXT.splitlines() if line.startswith("| `counts` |"))
    assert f"at most {MAX_COUNTS_ENTRIES} entries" in row
    assert "<= 64 chars" in row
