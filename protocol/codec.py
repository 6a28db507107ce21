"""Bytes <-> typed messages: msgpack maps, validated field by field.

A message on the wire is one msgpack map with string keys: ``"type"`` names the
message, the other keys are its fields (see ``protocol.messages``). Decoding is
strict: one map and nothing after it, known type, every required field present,
no unknown field, every value of the right type and in range.
"""

from __future__ import annotations

import dataclasses
import math
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
from protocol.messages import ALL_MESSAGES, Field, Message

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
        value = getattr(message, spec.name)
        problem = _check(spec, value)
        if problem is not None:
            raise LocalProtocolError(f"{message.TYPE}.{spec.name}: expected {spec.describe()}, found {problem}")
        data[spec.name] = dict(value) if spec.kind == "counts" else value
    return msgpack.packb(data, use_bin_type=True)  # type: ignore[no-any-return]


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
    known = {spec.name for spec in cls.SCHEMA}
    for key in obj:
        if key != "type" and key not in known:
            shown = key if len(key) <= 32 else key[:32] + "..."
            raise InvalidField(cls.TYPE, shown, "no such field", "an unknown field")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for spec in cls.SCHEMA:
        if spec.name not in obj:
            if spec.optional:
                values[spec.name] = None
                continue
            if defaults.get(spec.name, dataclasses.MISSING) is not dataclasses.MISSING:
                continue
            raise InvalidField(cls.TYPE, spec.name, spec.describe(), "nothing (missing)")
        value = obj[spec.name]
        problem = _check(spec, value)
        if problem is not None:
            raise InvalidField(cls.TYPE, spec.name, spec.describe(), problem)
        values[spec.name] = float(value) if spec.kind == "float" else value
    return cls(**values)


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
