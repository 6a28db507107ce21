"""A participant that stops reading its socket: closed as too slow; the honest phones never notice.

The slow one is a raw socket with a 4 KB receive buffer that does the
websocket handshake, sends ``join`` and then never reads again, so the
kernel's receive window fills and the server's writes back up. Announcements
(500 characters, to every phone) are the traffic that fills it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from pathlib import Path

import aiohttp

from protocol import PROTOCOL_VERSION, encode
from protocol.messages import Join
from tests.conftest import scaled
from tests.faults.helpers import Reconnecting, Spawn, join_all, make_server, sim_devices, sync_error_us, true_now_ns
from tests.integration.processes import rss_bytes

HONEST = 20
TRACK_S = 20.0
TEXT = "x" * 500  # MAX_ANNOUNCEMENT_TEXT


def stalled_participant(port: int) -> socket.socket:
    """Connect to /ws, join, and return the socket: the caller never reads it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window offered stays small
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = encode(Join(v=PROTOCOL_VERSION, device_id=None, client="stalled"))
    assert len(payload) < 126
    mask = os.urandom(4)
    sock.sendall(bytes([0x82, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


async def test_a_stalled_reader_is_closed_and_the_others_start_on_time(tmp_path: Path, spawn: Spawn) -> None:
    """The stalled one is dropped ('does not keep up'), 20 honest phones get every announcement and the start, in sync; RSS stays flat."""
    server = make_server(tmp_path, TRACK_S)
    await server.start()
    stalled: socket.socket | None = None
    try:
        assert server.proc is not None
        honest = sim_devices(HONEST, seed=6)
        runners = await join_all(spawn, [Reconnecting(d, server.ws_url) for d in honest])
        stalled = stalled_participant(server.port)
        await asyncio.sleep(2)
        assert (await server.get("/api/status"))["devices"] == HONEST + 1
        rss_before = rss_bytes(server.proc.pid)

        async with aiohttp.ClientSession(headers=server.headers()) as http:
            async def announce() -> None:
                async with http.post(f"{server.base_url}/api/announce", json={"text": TEXT}) as response:
                    assert response.status == 200, await response.text()

            for _ in range(int(scaled(600))):
                await asyncio.gather(*(announce() for _ in range(25)))
                if "does not keep up" in server.log():
                    break

            else:
                raise AssertionError("the stalled participant was never closed")
        for _ in range(int(scaled(100))):
            if (await server.get("/api/status"))["devices"] == HONEST:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the stalled participant is still counted")
        rss_growth_mb = (rss_bytes(server.proc.pid) - rss_before) / 2**20
        print(f"slow consumer: closed after {server.log().count('announce')} announcements; RSS +{rss_growth_mb:.1f} MB")
        assert rss_growth_mb < 10, f"the server grew {rss_growth_mb:.1f} MB while the stalled one was backed up"

        started = await server.post("/api/start", {"in_s": 2, "confirm": True})
        start_us = started["start_us"]
        await asyncio.wait_for(asyncio.gather(*(d.scheduled.wait() for d in honest)), scaled(5))
        assert true_now_ns() // 1000 < start_us, "the honest phones got the start too late"
        for d in honest:
            assert d.schedule is not None and d.schedule.start_us == start_us
            error_us, bound_us = sync_error_us(d)
            assert error_us <= bound_us, (d.name, error_us, bound_us)
        assert all(not r.closes and r.welcomes == 1 for r in runners), [r.closes for r in runners if r.closes]
        assert server.proc.poll() is None and "Traceback" not in server.log()
    finally:
        if stalled is not None:
            stalled.close()
        server.stop()
