"""Bytes <-> typed messages: msgpack maps, validated field by field.

A message on the wire is one msgpack map with string keys: ``"type"`` names the
message, the other keys are its fields (see ``protocol.messages``). Decoding is
strict: one map and nothing after it, known type, every required field present,
no unknown field, every value of the right type and in range.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import msgpack

from protocol.errors import (
    InvalidField,
    LocalProtocolError,
    MalformedMessage,
    MessageTooBig,
    UnexpectedMessage,
    UnknownMessageType,
)
from protocol.messages import ALL_MESSAGES, Field, Message, Record

# Size limits, in bytes, of one incoming frame. The largest participant message
# (a join with a 64-character id and client name) is under 200 bytes; 1 KiB
# leaves room without letting a phone make the server buffer much.
MAX_PARTICIPANT_MESSAGE = 1024
MAX_ORGANIZER_MESSAGE = 4096
# Counts maps (groups) hold at most this many entries.
MAX_COUNTS_ENTRIES = 256


def encode(message: Message) -> bytes:
    """The wire bytes of ``message``. Raises LocalProtocolError if it is invalid."""
    data: dict[str, Any] = {"type": message.TYPE}
    for spec in message.SCHEMA:
        value = _to_wire(spec, getattr(message, spec.name))
        problem = _problem(spec, value)
        if problem is not None:
            path, expected, found = problem
            raise LocalProtocolError(f"{message.TYPE}.{path}: expected {expected}, found {found}")
        data[spec.name] = value
    return msgpack.packb(data, use_bin_type=True)  # type: ignore[no-any-return]


def _to_wire(spec: Field, value: Any) -> Any:
    """A message's field value as msgpack-ready data: maps for records, lists for tuples."""
    if spec.kind == "counts" and isinstance(value, Mapping):
        return dict(value)
    if spec.kind == "ints" and isinstance(value, (tuple, list)):
        return list(value)
    if spec.kind == "records" and isinstance(value, (tuple, list)) and spec.record is not None:
        record = spec.record
        return [
            {sub.name: _to_wire(sub, getattr(item, sub.name)) for sub in record.SCHEMA}
            if isinstance(item, record)
            else item
            for item in value
        ]
    return value


def decode(data: bytes, accept: tuple[type[Message], ...], max_size: int) -> Message:
    """Parse and validate one frame.

    ``accept`` lists the message classes allowed on this endpoint; ``max_size``
    is the frame limit in bytes. Raises only subclasses of RemoteProtocolError:
    MessageTooBig, MalformedMessage, UnknownMessageType, UnexpectedMessage,
    InvalidField.
    """
    if len(data) > max_size:
        raise MessageTooBig(len(data), max_size)
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=max_size,
            max_bin_len=max_size,
            max_array_len=max_size,
            max_map_len=max_size,
            max_ext_len=max_size,
        )
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise MalformedMessage(f"not a msgpack message ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise MalformedMessage(f"expected a msgpack map, found {_kind(obj)}")
    for key in obj:
        if not isinstance(key, str):
            raise MalformedMessage(f"expected string keys, found a {_kind(key)} key")
    type_name = obj.get("type")
    if not isinstance(type_name, str):
        raise MalformedMessage(f"expected a string 'type' field, found {_kind(type_name)}")
    cls = ALL_MESSAGES.get(type_name)
    if cls is None:
        raise UnknownMessageType(type_name)
    if cls not in accept:
        raise UnexpectedMessage(f"message type {type_name!r} is not allowed on this connection")
    return _build(cls, obj)


def _build(cls: type[Message], obj: dict[str, Any]) -> Message:
    for key in obj:
        if key != "type" and key not in {spec.name for spec in cls.SCHEMA}:
            raise InvalidField(cls.TYPE, _shown(key), "no such field", "an unknown field")
    problem = _record_problem(cls, obj, skip=("type",))
    if problem is not None:
        raise InvalidField(cls.TYPE, *problem)
    message: Message = _instance(cls, obj)
    return message


def _instance(cls: type[Record], obj: dict[str, Any]) -> Any:
    """``cls`` built from a map already checked against its schema."""
    values: dict[str, Any] = {}
    for spec in cls.SCHEMA:
        if spec.name not in obj:
            if spec.optional:
                values[spec.name] = None
            continue  # a defaulted field takes its default
        value = obj[spec.name]
        if value is None:
            values[spec.name] = None
        elif spec.kind == "float":
            values[spec.name] = float(value)
        elif spec.kind == "ints":
            values[spec.name] = tuple(value)
        elif spec.kind == "records" and spec.record is not None:
            values[spec.name] = tuple(_instance(spec.record, item) for item in value)
        else:
            values[spec.name] = value
    return cls(**values)


def _record_problem(cls: type[Record], obj: dict[str, Any], skip: tuple[str, ...] = ()) -> tuple[str, str, str] | None:
    """(field path, expected, found) of the first field of ``obj`` that breaks ``cls.SCHEMA``, else None."""
    known = {spec.name for spec in cls.SCHEMA}
    for key in obj:
        if key not in skip and key not in known:
            return _shown(key), "no such field", "an unknown field"
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for spec in cls.SCHEMA:
        if spec.name not in obj:
            if spec.optional or defaults.get(spec.name, dataclasses.MISSING) is not dataclasses.MISSING:
                continue
            return spec.name, spec.describe(), "nothing (missing)"
        problem = _problem(spec, obj[spec.name])
        if problem is not None:
            return problem
    return None


def _problem(spec: Field, value: Any) -> tuple[str, str, str] | None:
    """(field path, expected, found) if ``value`` does not fit ``spec``, else None.

    The path is the field's name, or ``name[i].sub`` inside a records field.
    Raises MalformedMessage for a map key inside a record that is not a string.
    """
    if spec.kind == "records" and isinstance(value, list) and len(value) <= spec.max_items and spec.record is not None:
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                return f"{spec.name}[{index}]", f"a {spec.record.__name__.lower()} map", _kind(item)
            for key in item:
                if not isinstance(key, str):  # as at the top level (and as msgpack's strict_map_key does for ints)
                    raise MalformedMessage(f"expected string keys, found a {_kind(key)} key")
            inner = _record_problem(spec.record, item)
            if inner is not None:
                return f"{spec.name}[{index}].{inner[0]}", inner[1], inner[2]
        return None
    scalar_found = _check(spec, value)
    return None if scalar_found is None else (spec.name, spec.describe(), scalar_found)


def _shown(key: str) -> str:
    return key if len(key) <= 32 else key[:32] + "..."


def _check(spec: Field, value: Any) -> str | None:
    """None if ``value`` fits ``spec``, else a short description of what was found."""
    if value is None:
        return None if spec.optional else "nil"
    kind = spec.kind
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            return _kind(value)
        return None if spec.low <= value <= spec.high else f"{value} (out of range)"
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _kind(value)
        if isinstance(value, float) and not math.isfinite(value):
            return "a non-finite number"
        return None if spec.low <= value <= spec.high else f"{value:g} (out of range)"
    if kind == "bool":
        return None if isinstance(value, bool) else _kind(value)
    if kind in ("str", "enum"):
        if not isinstance(value, str):
            return _kind(value)
        if kind == "enum":
            return None if value in spec.choices else "another string"
        if len(value) > spec.high:
            return f"a string of {len(value)} characters"
        if spec.pattern is not None and spec.pattern.fullmatch(value) is None:
            return "a string that does not match"
        return None
    if kind == "counts":
        if not isinstance(value, dict):
            return _kind(value)
        if len(value) > MAX_COUNTS_ENTRIES:
            return f"a map of {len(value)} entries"
        for key, count in value.items():
            if not isinstance(key, str) or len(key) > 64:
                return "a map with a bad key"
            if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= spec.high:
                return "a map with a bad count"
        return None
    if kind == "map":
        if not isinstance(value, dict):
            return _kind(value)
        if len(value) > MAX_COUNTS_ENTRIES:
            return f"a map of {len(value)} entries"
        return None if all(isinstance(key, str) for key in value) else "a map with a non-string key"
    if kind in ("ints", "records"):
        if not isinstance(value, list):
            return _kind(value)
        if len(value) > spec.max_items:
            return f"an array of {len(value)} items"
        if kind == "ints":
            for item in value:
                if not isinstance(item, int) or isinstance(item, bool):
                    return f"an array holding a{'n' if _kind(item)[0] in 'aeiou' else ''} {_kind(item)}"
                if not spec.low <= item <= spec.high:
                    return f"an array holding {item} (out of range)"
        return None  # records: their items are checked by _problem
    raise LocalProtocolError(f"field kind {kind!r} is not known")


def _kind(value: Any) -> str:
    """The msgpack-level name of a value's type, for error texts (never the value)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "binary"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "map"
    return "extension type"
