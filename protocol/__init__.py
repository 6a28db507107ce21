"""The Unisono wire protocol: typed messages, msgpack codec, errors. Pure: no I/O.

See PROTOCOL.md beside this file for the specification a client is written from.
"""

from protocol.codec import MAX_ORGANIZER_MESSAGE, MAX_PARTICIPANT_MESSAGE, decode, encode
from protocol.messages import PROTOCOL_VERSION

__all__ = ["MAX_ORGANIZER_MESSAGE", "MAX_PARTICIPANT_MESSAGE", "PROTOCOL_VERSION", "decode", "encode"]
