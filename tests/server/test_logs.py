"""server.logs: text and JSON log lines, extras, tracebacks, a bad format named."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from server.logs import configure_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    """Put the root logger's handlers and level back as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_text_keeps_todays_format(restore_root: None) -> None:
    """Text lines read "time LEVEL logger: message"."""
    stream = io.StringIO()
    configure_logging("text", stream=stream)
    logging.getLogger("unisono.test").info("device %s joined", "abc")
    (line,) = lines(stream)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO unisono.test: device abc joined", line)


def test_json_one_object_per_line_with_extras(restore_root: None) -> None:
    """JSON lines hold ts (RFC 3339 UTC, ms), level, logger, the formatted message and the extra fields."""
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    log = logging.getLogger("unisono.test")
    log.info("device %s joined", "abc", extra={"device": "abc", "group": "red", "rtt_ms": 12.5})
    log.warning("second")
    first, second = (json.loads(line) for line in lines(stream))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert first == {
        "ts": first["ts"],
        "level": "INFO",
        "logger": "unisono.test",
        "message": "device abc joined",
        "device": "abc",
        "group": "red",
        "rtt_ms": 12.5,
    }
    assert second["level"] == "WARNING" and "exc" not in second


def test_json_traceback_and_odd_extras(restore_root: None) -> None:
    """An exception's traceback goes in "exc"; an extra JSON cannot hold is logged as its repr."""
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("unisono.test").exception("tick failed", extra={"where": {1, 2}})
    (entry,) = (json.loads(line) for line in lines(stream))
    assert entry["message"] == "tick failed" and entry["level"] == "ERROR"
    assert "Traceback" in entry["exc"] and "RuntimeError: boom" in entry["exc"]
    assert entry["where"] == "{1, 2}"


def test_level_and_reconfiguring(restore_root: None) -> None:
    """Records under the level are dropped; a second call replaces the first handler instead of adding one."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging("text", stream=first)
    configure_logging("json", level=logging.WARNING, stream=second)
    log = logging.getLogger("unisono.test")
    log.info("quiet")
    log.warning("loud")
    assert lines(first) == []
    assert [json.loads(line)["message"] for line in lines(second)] == ["loud"]


def test_unknown_format_names_the_option() -> None:
    """An unknown format raises ValueError naming the option and the choices."""
    with pytest.raises(ValueError, match=r"log format: expected one of text, json, found 'xml'"):
        configure_logging("xml")
