"""Every error the protocol layer raises, split by whose fault it is.

``RemoteProtocolError`` and its subclasses mean the peer sent something wrong;
each carries the websocket close code to use and a reason that says what was
expected and what arrived (never the raw payload). ``LocalProtocolError`` means
our own code tried to build or send an invalid message: a bug, not bad input.
This split follows h11's ``RemoteProtocolError`` / ``LocalProtocolError``.
"""

from __future__ import annotations

# Websocket close codes, RFC 6455 section 7.4.1.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

# A close frame's reason must fit in 123 bytes of UTF-8 (RFC 6455 section 5.5).
MAX_REASON_BYTES = 123


class ProtocolError(Exception):
    """Base of every error raised by ``protocol``."""


class LocalProtocolError(ProtocolError):
    """Our own code built an invalid message. A bug: never caused by a peer."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something this protocol does not allow.

    ``code`` is a short stable identifier (it also goes into ``Error``
    messages); ``close_code`` is the websocket close code to use.
    """

    code = "protocol_error"
    close_code = CLOSE_PROTOCOL_ERROR

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def close_reason(self) -> str:
        """``reason`` cut to what a close frame can carry."""
        data = self.reason.encode("utf-8")[:MAX_REASON_BYTES]
        return data.decode("utf-8", errors="ignore")


class MessageTooBig(RemoteProtocolError):
    """The frame is larger than the limit for this endpoint."""

    code = "too_big"
    close_code = CLOSE_MESSAGE_TOO_BIG

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class MalformedMessage(RemoteProtocolError):
    """The bytes are not one msgpack map with string keys (or a text frame arrived)."""

    code = "malformed"
    close_code = CLOSE_PROTOCOL_ERROR


class UnknownMessageType(RemoteProtocolError):
    """The ``type`` field names no message of this protocol version."""

    code = "unknown_type"
    close_code = CLOSE_UNSUPPORTED_DATA

    def __init__(self, type_name: str) -> None:
        shown = type_name if len(type_name) <= 32 else type_name[:32] + "..."
        super().__init__(f"unknown message type {shown!r}")
        self.type_name = type_name


class InvalidField(RemoteProtocolError):
    """A field is missing, unexpected, of the wrong type or out of range."""

    code = "invalid_field"
    close_code = CLOSE_PROTOCOL_ERROR

    def __init__(self, message_type: str, field: str, expected: str, found: str) -> None:
        super().__init__(f"{message_type}.{field}: expected {expected}, found {found}")
        self.message_type = message_type
        self.field = field
        self.expected = expected
        self.found = found


class UnsupportedVersion(RemoteProtocolError):
    """The peer speaks a protocol version this side does not."""

    code = "unsupported_version"
    close_code = CLOSE_PROTOCOL_ERROR

    def __init__(self, version: int, supported: int) -> None:
        super().__init__(f"unsupported protocol version {version}, this server speaks {supported}")
        self.version = version
        self.supported = supported


class UnexpectedMessage(RemoteProtocolError):
    """A valid message that is not allowed on this endpoint or at this point."""

    code = "unexpected"
    close_code = CLOSE_POLICY_VIOLATION


class NotAuthorized(RemoteProtocolError):
    """The organizer token is missing or wrong."""

    code = "not_authorized"
    close_code = CLOSE_POLICY_VIOLATION


class FirstMessageTimeout(RemoteProtocolError):
    """The peer opened a websocket and sent no first message (join, hello) in time."""

    code = "timeout"
    close_code = CLOSE_POLICY_VIOLATION

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no message within {timeout_s:g} s of connecting; send join (or hello) first")
        self.timeout_s = timeout_s
