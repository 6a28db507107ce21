"""What every websocket endpoint shares: frame intake, error closes, the writer task."""

from __future__ import annotations

import asyncio
import logging
import platform
import socket
import struct
import sys
import time
from asyncio import selector_events
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import WSMessage, WSMsgType, web

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


def shed_http_state(request: web.Request) -> None:
    """After a websocket upgrade, drop what aiohttp keeps for HTTP requests the connection will never carry.

    The connection's ``RequestHandler`` keeps its HTTP parser (~0.75 KB) and its
    queue of parsed requests (an empty deque, ~0.75 KB) until the connection
    closes, although after an accepted upgrade every byte goes to the
    websocket reader: aiohttp itself drops the parser only in
    ``connection_lost``. Checked on aiohttp 3.14: after the upgrade the queue
    is only tested for emptiness and its length, which an empty tuple answers
    (and an append would fail loudly instead of queueing silently).
    """
    protocol = request.protocol
    if not getattr(protocol, "_upgraded", False) or getattr(protocol, "_payload_parser", None) is None:
        return  # not an accepted upgrade (or another aiohttp): leave it alone
    if getattr(protocol, "_messages", None) is not None and not protocol._messages:
        protocol._messages = ()  # type: ignore[assignment]
    protocol._parser = None


# aiohttp itself refuses frames above this (close 1009, no reason); our codec
# enforces the much smaller per-endpoint limits with a reason first.
TRANSPORT_MAX_FRAME = 64 * 1024


class Arrivals:
    """When a connection's latest bytes arrived: the kernel's receive stamp when it gives one.

    A frame is handled after everything queued before it on the event loop;
    under load that is milliseconds after its bytes arrived, and a busy loop
    also reads the socket late. The kernel stamps each packet as it comes in
    (``SO_TIMESTAMPNS``); the stamp of the latest chunk read is never earlier
    than the arrival of any frame still waiting, so it is a valid receive time
    (``t3``). ``source`` says what stamps: ``"kernel"``, ``"read"`` (the clock
    read as the transport hands the bytes over: where the kernel's stamp is not
    available, e.g. TLS or uvloop) or ``"handling"`` (the caller's clock when
    it handles the frame).
    """

    def __init__(self, transport: asyncio.BaseTransport | None, now_ns: NowFn) -> None:
        self.now_ns = now_ns
        self.latest_ns = now_ns()
        self.source = "handling"
        if transport is None or transport.is_closing():
            return
        self.source = stamp_reads(transport, now_ns, self._arrived)

    def _arrived(self, stamp_ns: int) -> None:
        self.latest_ns = stamp_ns

    def receipt_ns(self) -> int:
        """The receive time of the frame being handled: its arrival stamp, or now where nothing stamps."""
        return self.now_ns() if self.source == "handling" else self.latest_ns


def stamp_reads(transport: asyncio.BaseTransport, now_ns: NowFn, arrived: Callable[[int], None]) -> str:
    """Call ``arrived(stamp_ns)`` for every chunk read from ``transport``, before the protocol sees its bytes.

    A chunk's kernel stamp is that of the newest packet in it: a reader that
    comes late finds later packets with its frame, in the same read or merged
    into the same buffer by TCP, and gets their stamp, never an earlier one.

    Returns ``"kernel"`` when the stamps are the kernel's (Linux, a plain TCP
    transport of asyncio's own loop), ``"read"`` when they are ``now_ns()``
    read as the bytes are handed over, ``"handling"`` when neither can be
    installed (the protocol reads into its own buffer): then nothing is called.
    """
    inner = transport.get_protocol()
    if isinstance(inner, asyncio.BufferedProtocol) or not isinstance(inner, asyncio.Protocol):
        return "handling"
    if _read_kernel_stamps(transport, now_ns, arrived):
        return "kernel"
    transport.set_protocol(_Stamping(inner, arrived, now_ns))
    return "read"


# struct timespec, as SO_TIMESTAMPNS hands it over.
_TIMESPEC = struct.Struct("@ll")
# Python's socket module does not name SO_TIMESTAMPNS; 35 is its number in
# Linux's asm-generic socket.h (x86, arm, riscv, powerpc, s390), where it
# carries a 64-bit timespec on 64-bit machines. Elsewhere: no kernel stamps.
SO_TIMESTAMPNS: int | None = getattr(socket, "SO_TIMESTAMPNS", None)
if SO_TIMESTAMPNS is None and sys.platform == "linux" and _TIMESPEC.size == 16:
    if not platform.machine().startswith(("alpha", "parisc", "sparc", "mips")):
        SO_TIMESTAMPNS = 35
# A kernel stamp older than this (by the wall clock) when read is not believed:
# the wall clock stepped between the packet's arrival and its read.
MAX_STAMP_AGE_NS = 5_000_000_000


def _read_kernel_stamps(transport: Any, now_ns: NowFn, arrived: Callable[[int], None]) -> bool:
    """Replace the transport's read with one that takes the kernel's receive stamp; False where it cannot.

    asyncio's selector transport reads with ``sock.recv`` in its
    ``_read_ready_cb``; this reads with ``recvmsg`` instead, the same way, and
    passes the packet's stamp on. The stamp is on the wall clock: its age
    (wall now - stamp) is taken from the server clock's now, so the server
    clock never depends on the wall clock's value, only on its rate over
    milliseconds. Relies on CPython's ``_SelectorSocketTransport`` internals,
    checked here; anything else keeps the ``read`` stamps.
    """
    kind = SO_TIMESTAMPNS
    sock = getattr(transport, "_sock", None)
    if (
        kind is None
        or type(transport) is not _SELECTOR_TRANSPORT
        or not isinstance(sock, socket.socket)
        or not all(hasattr(transport, name) for name in _TRANSPORT_INTERNALS)
    ):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, kind, 1)
    except OSError:
        return False
    selector: Any = transport  # its internals, checked above
    recvmsg, max_size, space = sock.recvmsg, selector.max_size, socket.CMSG_SPACE(_TIMESPEC.size)
    level, size, unpack = socket.SOL_SOCKET, _TIMESPEC.size, _TIMESPEC.unpack_from
    wall_ns = time.time_ns

    def read_ready() -> None:
        if selector._conn_lost:
            return
        try:
            data, ancdata, _flags, _address = recvmsg(max_size, space)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            selector._fatal_error(exc, "Fatal read error on socket transport")
            return
        if not data:
            selector._read_ready__on_eof()
            return
        now = now_ns()
        stamp = now
        for cmsg_level, cmsg_type, cmsg_data in ancdata:
            if cmsg_level == level and cmsg_type == kind and len(cmsg_data) >= size:
                seconds, nanoseconds = unpack(cmsg_data)
                age = wall_ns() - (seconds * 1_000_000_000 + nanoseconds)
                if 0 <= age <= MAX_STAMP_AGE_NS:
                    stamp = now - age
        arrived(stamp)
        try:
            selector._protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            selector._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    selector._read_ready_cb = read_ready
    return True


_SELECTOR_TRANSPORT: type = getattr(selector_events, "_SelectorSocketTransport", type(None))
_TRANSPORT_INTERNALS = ("_read_ready_cb", "_conn_lost", "_fatal_error", "_read_ready__on_eof", "_protocol", "max_size")


class _Stamping(asyncio.Protocol):
    """Stands between the transport and aiohttp's protocol: stamps each chunk, passes everything on."""

    def __init__(self, inner: asyncio.Protocol, arrived: Callable[[int], None], now_ns: NowFn) -> None:
        self.inner = inner
        self.arrived = arrived
        self.now_ns = now_ns

    def data_received(self, data: bytes) -> None:
        self.arrived(self.now_ns())
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


async def first_message(ws: web.WebSocketResponse) -> WSMessage:
    """The connection's first message; FirstMessageTimeout if none came within ``FIRST_MESSAGE_TIMEOUT_S`` (websocket pings do not count)."""
    timeout_s = FIRST_MESSAGE_TIMEOUT_S
    try:
        async with asyncio.timeout(timeout_s):
            return await ws.receive()
    except TimeoutError:
        raise FirstMessageTimeout(timeout_s) from None


def frame_data(msg: WSMessage) -> bytes | None:
    """A binary frame's bytes; None when the connection is over (close, error); MalformedMessage for a text frame."""
    if msg.type == WSMsgType.BINARY:
        data: bytes = msg.data
        return data
    if msg.type == WSMsgType.TEXT:
        raise MalformedMessage("text frames are not accepted; send msgpack in binary frames")
    return None  # CLOSE, CLOSING, CLOSED, ERROR


async def frames(ws: web.WebSocketResponse, now_ns: NowFn, arrivals: Arrivals | None = None) -> AsyncIterator[tuple[bytes, int]]:
    """Yield ``(data, receipt_ns)`` for each binary frame: stamped at arrival when ``arrivals`` stamps, else on handling.

    Raises MalformedMessage for a text frame, FirstMessageTimeout when no
    message came within ``FIRST_MESSAGE_TIMEOUT_S`` of the call (websocket
    pings do not count); ends when the peer closes.
    """
    msg = await first_message(ws)
    while (data := frame_data(msg)) is not None:
        yield data, now_ns() if arrivals is None else arrivals.receipt_ns()
        msg = await ws.receive()


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
