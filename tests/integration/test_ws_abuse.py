"""Websocket and TCP abuse against a real server while honest devices keep their sync.

Each case opens a raw TCP connection (hand-made handshake and frames, so that
reserved bits, bad opcodes, unmasked and fragmented frames can be written),
misbehaves, and checks how the server ends it: a close frame with its code
and reason, or, where no close frame can be sent (before the upgrade, or a
peer that stopped answering), the TCP connection closed within a bound. Two
SimDevices stay connected to the same server through every case; at the end
they are still connected, still getting estimates, and within their bounds.

The server's deadlines are shortened for the test (module constants read at
each connection): first message 1 s, idle HTTP connection 1.5 s, websocket
heartbeat 2 s (closed after 3 s without a pong).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

import server.connection
import server.organizer
import server.participants
from bench.devices import SimClock, SimDevice
from protocol import PROTOCOL_VERSION, decode, encode
from protocol.messages import SERVER_TO_PARTICIPANT, Hello, Join, Welcome
from tests.conftest import TEST_TOKEN, RunningServer, scaled, small_show, start_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

FIRST_MESSAGE_S = 1.0
IDLE_S = 1.5
# Closes a peer that answers no ping after 1.5 x this: after the first-message deadline, as in production (30 s, 45 s).
HEARTBEAT_S = 2.0
# Slack on every deadline: a loaded machine runs timers late.
SLACK_S = 2.0

JOIN = encode(Join(v=PROTOCOL_VERSION, device_id=None, client="abuse-test"))
HELLO = encode(Hello(v=PROTOCOL_VERSION, token=TEST_TOKEN))

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    """One websocket frame as a client writes it (RFC 6455 section 5.2), any bit settable."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask else 0
    size = len(payload)
    if size < 126:
        head = bytes([first, mask_bit | size])
    elif size < 1 << 16:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", size)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@dataclass
class Ending:
    """How the server ended a connection: a close frame's code and reason, or the TCP connection closed."""

    code: int | None  # None: the TCP connection closed with no close frame
    reason: str
    after_s: float


class RawClient:
    """A websocket client made by hand on a TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.received: list[bytes] = []  # binary messages from the server
        self.opened = asyncio.get_running_loop().time()

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def upgrade(self, path: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), scaled(5))
        assert head.startswith(b"HTTP/1.1 101"), head[:40]
        self.opened = asyncio.get_running_loop().time()

    def send(self, *data: bytes) -> None:
        for chunk in data:
            self.writer.write(chunk)

    async def ending(self, within_s: float) -> Ending:
        """Read until the server's close frame or the end of the TCP stream; ws pings are not answered."""
        loop = asyncio.get_running_loop()
        end = loop.time() + scaled(within_s)
        try:
            while True:
                head = await asyncio.wait_for(self.reader.readexactly(2), end - loop.time())
                size = head[1] & 0x7F
                if size == 126:
                    size = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif size == 127:
                    size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                payload = await self.reader.readexactly(size)
                if head[0] & 0x0F == OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    return Ending(code, payload[2:].decode(), loop.time() - self.opened)
                if head[0] & 0x0F == OP_BINARY:
                    self.received.append(payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            return Ending(None, "", loop.time() - self.opened)
        finally:
            self.writer.close()

    async def still_open_after(self, seconds: float) -> list[bytes]:
        """The binary messages received while the connection stays open for ``seconds``; fails if it ends."""
        try:
            ended = await self.ending(seconds)
        except TimeoutError:
            return self.received
        raise AssertionError(f"the server ended the connection: {ended}")


@dataclass
class Bench:
    server: RunningServer
    port: int
    devices: list[SimDevice]
    tasks: list[asyncio.Task[None]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bench(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bench]:
    """A server with short deadlines and two honest devices (clock offsets +1.5 s and -0.8 s) synced to it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(server.connection, "FIRST_MESSAGE_TIMEOUT_S", FIRST_MESSAGE_S)
        patch.setattr(server.connection, "IDLE_CONNECTION_TIMEOUT_S", IDLE_S)
        patch.setattr(server.participants, "HEARTBEAT_S", HEARTBEAT_S)
        patch.setattr(server.organizer, "HEARTBEAT_S", HEARTBEAT_S)
        tmp_path: Path = tmp_path_factory.mktemp("abuse")
        runner, running = await start_server(tmp_path, small_show(tmp_path))
        now = running.hub.clock.now_ns
        devices = [SimDevice(SimClock(1_500_000_000, 30.0), now, name="honest-a"), SimDevice(SimClock(-800_000_000, -20.0), now, name="honest-b")]
        tasks = [asyncio.create_task(device.run(running.ws_url)) for device in devices]
        try:
            await _wait_for_estimates(devices, scaled(10))
            yield Bench(running, int(running.base_url.rsplit(":", 1)[1]), devices, tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()


async def _wait_for_estimates(devices: list[SimDevice], timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while any(device.estimate is None for device in devices):
        assert loop.time() < end, "the honest devices got no estimate"
        await asyncio.sleep(0.05)


async def _assert_in_sync(bench: Bench) -> None:
    """Both honest devices are connected (and the abuser is gone), and their offset error is within their bound."""
    assert all(not task.done() for task in bench.tasks), [d.close_code for d in bench.devices]
    loop = asyncio.get_running_loop()
    end = loop.time() + scaled(SLACK_S)
    while len(bench.server.hub.devices) != 2:  # an abuser that joined is removed once its handler returns
        assert loop.time() < end, f"{len(bench.server.hub.devices)} devices on the server"
        await asyncio.sleep(0.02)
    for device in bench.devices:
        true_ns = bench.server.hub.clock.now_ns()
        device_us = device.clock.device_ns(true_ns) / 1000
        error_us = device.offset_us_at(device_us) - device.clock.true_offset_ns(true_ns) / 1000
        bound_us = device.bound_us_at(device_us)
        assert bound_us < 50_000, f"{device.name}: bound {bound_us:.0f} us"
        assert abs(error_us) <= bound_us + 1_000, f"{device.name}: offset error {error_us:.0f} us, bound {bound_us:.0f} us"


def _closed(ending: Ending, code: int | None, reason: str, within_s: float) -> None:
    """``ending`` has close ``code`` (None: no close frame) with ``reason`` in its reason, within ``within_s`` (+ slack)."""
    assert ending.code == code, ending
    assert reason in ending.reason, ending
    assert ending.after_s <= within_s + SLACK_S, ending


# (path, join first?, frames, expected close code, reason text, within s)
CLOSED_CASES = [
    pytest.param("/ws", True, [frame(OP_BINARY, b"\xc1garbage")], 1002, "not a msgpack message", 0, id="garbage-binary"),
    pytest.param("/ws", False, [frame(OP_BINARY, os.urandom(64))], 1002, "", 0, id="garbage-before-join"),
    pytest.param("/ws", True, [frame(OP_TEXT, b'{"type": "pong"}')], 1002, "text frames are not accepted", 0, id="text-ws"),
    pytest.param("/ws/organizer", False, [frame(OP_TEXT, b"hello")], 1002, "text frames are not accepted", 0, id="text-organizer"),
    pytest.param("/ws", True, [frame(OP_BINARY, b"\x00" * 2000)], 1009, "exceeds the limit of 1024 bytes", 0, id="over-cap-ws"),
    pytest.param("/ws/organizer", False, [frame(OP_BINARY, b"\x00" * 5000)], 1009, "exceeds the limit of 4096 bytes", 0, id="over-cap-organizer"),
    # Above aiohttp's own 64 KiB frame limit: closed by aiohttp, code only.
    pytest.param("/ws", True, [frame(OP_BINARY, b"\x00" * 70_000)], 1009, "", 0, id="over-transport-cap"),
    # Fragments adding up to more than the cap are refused like one big frame.
    pytest.param("/ws", True, [frame(OP_BINARY, b"\x00" * 1500, fin=False), frame(OP_CONTINUATION, b"\x00" * 1500)], 1009, "exceeds the limit of 1024", 0, id="fragments-over-cap"),
    pytest.param("/ws", False, [frame(OP_BINARY, JOIN[:5], fin=False)], 1008, "no message within 1 s", FIRST_MESSAGE_S, id="fragment-never-finished"),
    pytest.param("/ws", True, [frame(OP_CONTINUATION, JOIN)], 1002, "", 0, id="continuation-first"),
    pytest.param("/ws", True, [frame(OP_BINARY, JOIN[:5], fin=False), frame(OP_BINARY, JOIN)], 1002, "", 0, id="new-message-mid-fragment"),
    pytest.param("/ws", True, [frame(0x3, b"abc")], 1002, "", 0, id="reserved-opcode"),
    pytest.param("/ws", True, [frame(OP_BINARY, JOIN, rsv=0b100)], 1002, "", 0, id="reserved-bits"),
    pytest.param("/ws", True, [frame(OP_PING, b"x" * 200)], 1002, "", 0, id="control-frame-over-125"),
    pytest.param("/ws", True, [frame(OP_CLOSE, b"\x03\xe8\xff\xfe")], 1007, "", 0, id="close-reason-not-utf8"),
    pytest.param("/ws", True, [frame(OP_CLOSE, b"\x03")], 1002, "", 0, id="close-one-byte"),
    pytest.param("/ws", True, [frame(OP_CLOSE, struct.pack("!H", 999) + b"why")], 1002, "", 0, id="close-invalid-code"),
    pytest.param("/ws", False, [], 1008, "no message within 1 s", FIRST_MESSAGE_S, id="upgrade-then-nothing"),
    pytest.param("/ws/organizer", False, [], 1008, "no message within 1 s", FIRST_MESSAGE_S, id="organizer-upgrade-then-nothing"),
    # Joined, then silent: it answers no websocket ping, so the heartbeat drops it (no close frame).
    pytest.param("/ws", True, [], None, "", HEARTBEAT_S * 1.5, id="joined-then-silent"),
    pytest.param("/ws/organizer", False, [frame(OP_BINARY, HELLO)], None, "", HEARTBEAT_S * 1.5, id="organizer-then-silent"),
]  # fmt: skip


@pytest.mark.parametrize("path, join, frames, code, reason, within_s", CLOSED_CASES)
async def test_abuser_is_closed_and_others_keep_sync(bench: Bench, path: str, join: bool, frames: list[bytes], code: int | None, reason: str, within_s: float) -> None:  # fmt: skip
    """Each abuse ends in its close code and reason (or a dropped connection) within its bound; the honest devices stay in sync."""
    client = await RawClient.connect(bench.port)
    await client.upgrade(path)
    if join:
        client.send(frame(OP_BINARY, JOIN))
    client.send(*frames)
    ending = await client.ending(within_s + SLACK_S + 3)
    _closed(ending, code, reason, within_s)
    await _assert_in_sync(bench)


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([frame(OP_BINARY, JOIN[:7], fin=False), frame(OP_CONTINUATION, JOIN[7:20], fin=False), frame(OP_CONTINUATION, JOIN[20:])], id="fragmented"),
        pytest.param([frame(OP_BINARY, JOIN[:7], fin=False), frame(OP_PING, b"p"), frame(OP_CONTINUATION, JOIN[7:])], id="ping-between-fragments"),
        # RFC 6455 section 5.1 wants a server to refuse an unmasked client frame; aiohttp accepts it.
        pytest.param([frame(OP_BINARY, JOIN, mask=False)], id="unmasked"),
    ],
)  # fmt: skip
async def test_join_accepted(bench: Bench, frames: list[bytes]) -> None:
    """A join split into continuation frames (pings between them allowed), or unmasked, is served as one message."""
    client = await RawClient.connect(bench.port)
    await client.upgrade("/ws")
    client.send(*frames)
    received = await client.still_open_after(0.5)
    assert isinstance(decode(received[0], SERVER_TO_PARTICIPANT, 1 << 20), Welcome)
    client.writer.close()
    await _assert_in_sync(bench)


@pytest.mark.parametrize(
    "opening",
    [
        pytest.param(b"", id="tcp-sends-nothing"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n", id="half-a-request"),
    ],
)
async def test_connection_without_a_request_is_dropped(bench: Bench, opening: bytes) -> None:
    """A TCP connection that completes no HTTP request is closed, with no answer, within the idle timeout."""
    client = await RawClient.connect(bench.port)
    client.send(opening)
    ending = await client.ending(IDLE_S + SLACK_S + 3)
    _closed(ending, None, "", IDLE_S)
    await _assert_in_sync(bench)


async def test_slowloris_trickling_headers_is_dropped(bench: Bench) -> None:
    """Headers trickled a byte every 100 ms never complete a request: closed at the idle timeout, not extended by each byte."""
    client = await RawClient.connect(bench.port)
    request = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 200
    trickle = asyncio.create_task(_trickle(client, request, 0.1))
    ending = await client.ending(IDLE_S + SLACK_S + 3)
    trickle.cancel()
    _closed(ending, None, "", IDLE_S)
    await _assert_in_sync(bench)


async def test_slow_sender_of_a_valid_join_is_closed_at_the_deadline(bench: Bench) -> None:
    """A join trickled a byte every 100 ms (about 5 s) misses the first-message deadline: 1008 with the reason."""
    client = await RawClient.connect(bench.port)
    await client.upgrade("/ws")
    join_frame = frame(OP_BINARY, JOIN)
    assert len(join_frame) * 0.1 > FIRST_MESSAGE_S + SLACK_S
    trickle = asyncio.create_task(_trickle(client, join_frame, 0.1))
    ending = await client.ending(FIRST_MESSAGE_S + SLACK_S + 3)
    trickle.cancel()
    _closed(ending, 1008, "no message within 1 s", FIRST_MESSAGE_S)
    await _assert_in_sync(bench)


async def _trickle(client: RawClient, data: bytes, every_s: float) -> None:
    try:
        for i in range(len(data)):
            client.writer.write(data[i : i + 1])
            await asyncio.sleep(every_s)
    except (ConnectionError, RuntimeError):
        pass  # the server closed it


async def test_honest_devices_kept_getting_estimates(bench: Bench) -> None:
    """After every case above, the honest devices are still connected, still receive estimates, and are within their bounds."""
    counts = [device.samples for device in bench.devices]
    loop = asyncio.get_running_loop()
    end = loop.time() + scaled(15)
    while not all(device.samples > count for device, count in zip(bench.devices, counts)):
        assert loop.time() < end, "no new estimate in 15 s"
        await asyncio.sleep(0.1)
    await _assert_in_sync(bench)
    assert all(device.close_code is None for device in bench.devices)
    # Nothing of the abuse is left on the server: no extra device, no organizer.
    assert not bench.server.hub.organizers
