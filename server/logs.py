"""Log output: today's text lines, or one JSON object a line for a log collector.

``configure_logging`` installs one handler on the root logger. In JSON, the
fields a call passes in ``extra={...}`` become fields of its object, so
``log.info("device joined", extra={"device": id, "group": g})`` can be
filtered by device or group without parsing the message.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import IO, Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")

# Every attribute a LogRecord has of its own (plus what formatting adds):
# anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",  # Python 3.12+
}
# The fields the JSON line always has; an ``extra`` field of the same name is
# renamed rather than allowed to overwrite them.
_JSON_FIELDS = ("ts", "level", "logger", "message", "exc", "stack")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (RFC 3339, UTC, ms), level, logger, message, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, tz=timezone.utc)
        line: dict[str, Any] = {
            "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES:
                line[f"extra_{key}" if key in _JSON_FIELDS else key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=repr: an extra that JSON cannot hold (a Path, an enum) still logs.
        return json.dumps(line, ensure_ascii=False, default=repr)


def configure_logging(fmt: str = "text", level: int = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (default stderr) as ``fmt`` ("text" or "json").

    Replaces the handler an earlier call installed, and no other (pytest's
    capture handlers stay). Returns the handler. Raises ValueError for an unknown ``fmt``.
    """
    formatter: logging.Formatter
    if fmt == "text":
        formatter = logging.Formatter(TEXT_FORMAT)
    elif fmt == "json":
        formatter = JsonFormatter()
    else:
        raise ValueError(f"log format: expected one of {', '.join(FORMATS)}, found {fmt!r}")
    handler = _UnisonoHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _UnisonoHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


class _UnisonoHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``configure_logging`` installs, told apart from everyone else's."""


# For tests that run ``unisono serve`` in-process and must take its handler away after.
UNISONO_HANDLER = _UnisonoHandler
