"""What every websocket endpoint shares: frame intake, error closes, the writer task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import WSMsgType, web

from protocol import encode
from protocol.errors import CLOSE_INTERNAL_ERROR, MalformedMessage, RemoteProtocolError
from protocol.messages import Error
from server.hub import Outbox

log = logging.getLogger("unisono.connection")

NowFn = Callable[[], int]

# The websocket heartbeat catches a peer that vanished without closing (idle
# participants are probed by the server's pings every few seconds anyway).
HEARTBEAT_S = 30.0

# aiohttp itself refuses frames above this (close 1009, no reason); our codec
# enforces the much smaller per-endpoint limits with a reason first.
TRANSPORT_MAX_FRAME = 64 * 1024


async def frames(ws: web.WebSocketResponse, now_ns: NowFn) -> AsyncIterator[tuple[bytes, int]]:
    """Yield ``(data, receipt_ns)`` for each binary frame, stamped on arrival.

    Raises MalformedMessage for a text frame; ends when the peer closes.
    """
    while True:
        msg = await ws.receive()
        received_ns = now_ns()
        if msg.type == WSMsgType.BINARY:
            yield msg.data, received_ns
        elif msg.type == WSMsgType.TEXT:
            raise MalformedMessage("text frames are not accepted; send msgpack in binary frames")
        else:  # CLOSE, CLOSING, CLOSED, ERROR: the connection is over
            return


async def close_for(ws: web.WebSocketResponse, exc: BaseException) -> None:
    """Close after an error: the peer's fault gets its code and reason, ours 1011."""
    if ws.closed:
        return
    if isinstance(exc, RemoteProtocolError):
        log.info("closing a connection (%d): %s", exc.close_code, exc.reason)
        try:
            await ws.send_bytes(encode(Error(code=exc.code, message=exc.reason[:500])))
        except (ConnectionError, RuntimeError):
            pass
        await ws.close(code=exc.close_code, message=exc.close_reason.encode("utf-8"))
    else:
        log.error("internal error on a websocket", exc_info=exc)
        await ws.close(code=CLOSE_INTERNAL_ERROR, message=b"internal error")


async def drain(outbox: Outbox) -> None:
    """Send what the outbox holds, in order, until the connection ends."""
    queue = outbox.queue
    try:
        while not outbox.ws.closed:
            await outbox.send_one(await queue.get())
    except (ConnectionError, RuntimeError):
        pass  # the peer went away; the reader side notices and cleans up
