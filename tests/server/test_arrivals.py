"""Arrival stamps (server/connection.py): the kernel's receive stamp, taken before a busy loop reads the socket."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from server import connection
from server.connection import Arrivals

STALL_S = 0.05


class Recorder(asyncio.Protocol):
    """Keeps every chunk with the arrival stamp in force when it was handed over."""

    def __init__(self) -> None:
        self.arrivals: Arrivals | None = None
        self.chunks: list[tuple[bytes, int, int]] = []  # data, arrival stamp, clock at handling
        self.got = asyncio.Event()
        self.connected = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.connected.set()

    def data_received(self, data: bytes) -> None:
        assert self.arrivals is not None
        self.chunks.append((data, self.arrivals.latest_ns, time.monotonic_ns()))
        self.got.set()


async def pair(protocol: Recorder) -> AsyncIterator[socket.socket]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    try:
        await asyncio.wait_for(protocol.connected.wait(), 5)
        yield client
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def stalled_sends(source: str, count: int = 1) -> list[tuple[int, int, int]]:
    """Send ``count`` chunks, each while the loop is stalled for STALL_S; (sent, stamped, handled) in monotonic ns each.

    Checks that ``Arrivals`` on the server side of the connection says ``source`` stamps them.
    """
    protocol = Recorder()
    results = []
    async for client in pair(protocol):
        assert protocol.transport is not None
        protocol.arrivals = Arrivals(protocol.transport, time.monotonic_ns)
        assert protocol.arrivals.source == source
        for _ in range(count):
            protocol.got.clear()
            sent_ns = time.monotonic_ns()
            client.sendall(b"pong")
            time.sleep(STALL_S)  # the loop is busy: nothing reads the socket meanwhile
            await asyncio.wait_for(protocol.got.wait(), 5)
            results.append((sent_ns, *protocol.chunks[-1][1:]))
    assert [chunk[0] for chunk in protocol.chunks] == [b"pong"] * count
    return results


@pytest.mark.skipif(connection.SO_TIMESTAMPNS is None, reason="kernel receive stamps exist on Linux only")
async def test_the_kernel_stamps_a_chunk_when_it_arrives_not_when_a_busy_loop_reads_it(kernel_stamps_on: None) -> None:
    for sent_ns, stamped_ns, handled_ns in await stalled_sends("kernel", 3):
        # The packet's arrival, on loopback at once. Its age is read on the wall clock, which NTP may be
        # slewing by up to 500 ppm: over the 50 ms stall, +-25 us.
        assert sent_ns - 100_000 <= stamped_ns < sent_ns + 20_000_000
        assert handled_ns - stamped_ns >= STALL_S * 1e9  # not the read after the stall


async def test_without_kernel_stamps_the_read_is_stamped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "SO_TIMESTAMPNS", None)
    ((sent_ns, stamped_ns, handled_ns),) = await stalled_sends("read")
    # Stamped as the transport hands the bytes over: after the stall, but still before handling.
    assert sent_ns + STALL_S * 1e9 <= stamped_ns <= handled_ns


@pytest.mark.skipif(connection.SO_TIMESTAMPNS is None, reason="kernel receive stamps exist on Linux only")
async def test_a_kernel_stamp_from_before_a_wall_clock_step_is_not_believed(monkeypatch: pytest.MonkeyPatch, kernel_stamps_on: None) -> None:
    # The wall clock jumps 10 s ahead between the packet's arrival and its read: its age is not believable.
    monkeypatch.setattr(connection.time, "time_ns", lambda: time.clock_gettime_ns(time.CLOCK_REALTIME) + 10**10)
    ((sent_ns, stamped_ns, handled_ns),) = await stalled_sends("kernel")
    assert sent_ns + STALL_S * 1e9 <= stamped_ns <= handled_ns  # the read's own time instead


async def test_a_protocol_that_reads_into_its_own_buffer_is_stamped_on_handling() -> None:
    class Buffered(asyncio.BufferedProtocol):
        def get_buffer(self, sizehint: int) -> bytearray:
            return bytearray(16)

        def buffer_updated(self, nbytes: int) -> None:
            pass

    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []

    class Keep(Buffered):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)

    server = await loop.create_server(Keep, "127.0.0.1", 0)
    client = socket.create_connection(("127.0.0.1", server.sockets[0].getsockname()[1]))
    try:
        for _ in range(100):
            if transports:
                break
            await asyncio.sleep(0.01)
        assert Arrivals(transports[0], time.monotonic_ns).source == "handling"
        assert Arrivals(None, time.monotonic_ns).source == "handling"
    finally:
        client.close()
        server.close()
        await server.wait_closed()
