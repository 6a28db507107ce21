"""What every websocket endpoint shares: frame intake, error closes, the writer task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import WSMsgType, web

from protocol import encode
from protocol.errors import CLOSE_INTERNAL_ERROR, FirstMessageTimeout, MalformedMessage, RemoteProtocolError
from protocol.messages import Error

log = logging.getLogger("unisono.connection")

NowFn = Callable[[], int]

# The websocket heartbeat catches a peer that vanished without closing (idle
# participants are probed by the server's pings every few seconds anyway).
HEARTBEAT_S = 30.0

# A websocket must send its first message (join, hello) this soon after the
# upgrade, or it is closed (1008): a page sends join as soon as the socket
# opens; 30 s leaves room for a crowd's lossy network (TCP retransmissions of
# 200 ms and more, FIELD-NOTES.md) and a server busy with a join storm (the
# slowest welcome at 15,000 phones took 11 s, bench/RESULTS.md). Read at each
# connection, so a test may shorten it.
FIRST_MESSAGE_TIMEOUT_S = 30.0

# A TCP connection that sends no complete HTTP request within this many
# seconds of connecting (or of its previous response) is closed without an
# answer: a half-open connection or a slowloris request trickling its headers.
# aiohttp's default is 3,630 s; 75 s is nginx's own keep-alive default, longer
# than a proxy's idle upstream connections (60 s), so a proxy never reuses a
# connection at the instant this server drops it.
IDLE_CONNECTION_TIMEOUT_S = 75.0


def handler_args() -> dict[str, Any]:
    """aiohttp's per-connection options (``web.Application(handler_args=...)``): the idle timeout above."""
    return {"keepalive_timeout": IDLE_CONNECTION_TIMEOUT_S}


# aiohttp itself refuses frames above this (close 1009, no reason); our codec
# enforces the much smaller per-endpoint limits with a reason first.
TRANSPORT_MAX_FRAME = 64 * 1024


class Arrivals:
    """When a connection's latest bytes arrived, stamped as the socket hands them over.

    A frame is handled after everything queued before it on the event loop;
    under load that is milliseconds after its bytes arrived. The stamp of the
    latest chunk read (taken before aiohttp parses it) is never earlier than
    the arrival of any frame still waiting, so it is a valid receive time
    (``t3``), and much closer than the clock read when the frame is handled.
    """

    def __init__(self, transport: asyncio.BaseTransport | None, now_ns: NowFn) -> None:
        self.latest_ns = now_ns()
        self.stamping = False
        if transport is None or transport.is_closing():
            return
        inner = transport.get_protocol()
        if isinstance(inner, asyncio.BufferedProtocol) or not isinstance(inner, asyncio.Protocol):
            return  # stamped on handling instead
        transport.set_protocol(_Stamping(inner, self, now_ns))
        self.stamping = True


class _Stamping(asyncio.Protocol):
    """Stands between the transport and aiohttp's protocol: stamps each chunk, passes everything on."""

    def __init__(self, inner: asyncio.Protocol, arrivals: Arrivals, now_ns: NowFn) -> None:
        self.inner = inner
        self.arrivals = arrivals
        self.now_ns = now_ns

    def data_received(self, data: bytes) -> None:
        self.arrivals.latest_ns = self.now_ns()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


async def frames(ws: web.WebSocketResponse, now_ns: NowFn, arrivals: Arrivals | None = None) -> AsyncIterator[tuple[bytes, int]]:
    """Yield ``(data, receipt_ns)`` for each binary frame: stamped at arrival when ``arrivals`` is given, else on handling.

    Raises MalformedMessage for a text frame, FirstMessageTimeout when no
    message came within ``FIRST_MESSAGE_TIMEOUT_S`` of the call (websocket
    pings do not count); ends when the peer closes.
    """
    first_timeout_s: float | None = FIRST_MESSAGE_TIMEOUT_S
    while True:
        if first_timeout_s is not None:
            try:
                async with asyncio.timeout(first_timeout_s):
                    msg = await ws.receive()
            except TimeoutError:
                raise FirstMessageTimeout(first_timeout_s) from None
            first_timeout_s = None
        else:
            msg = await ws.receive()
        received_ns = now_ns() if arrivals is None else arrivals.latest_ns
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
