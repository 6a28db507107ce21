"""Clients that connect, join and leave as fast as they can for 10 s: no leak, no harm to the others.

Four loops on loopback, each: open /ws, send ``join``, wait for ``welcome``,
leave (half with a close handshake, half by cutting the TCP connection, as a
phone losing its network does), again at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import websockets

from protocol import PROTOCOL_VERSION, decode, encode
from protocol.messages import SERVER_TO_PARTICIPANT, Join, Welcome
from tests.conftest import scaled
from tests.faults.helpers import Reconnecting, Spawn, join_all, make_server, sim_devices, sync_error_us
from tests.integration.processes import open_fds

HONEST = 10
LOOPS = 4
STORM_S = 10.0
TRACK_S = 20.0


async def churn(url: str, abort: bool, until: float, counts: dict[str, int]) -> None:
    """Join and leave ``url`` in a tight loop until loop time ``until``; counts welcomes and refusals."""
    loop = asyncio.get_running_loop()
    device_id: str | None = None
    while loop.time() < until:
        try:
            async with websockets.connect(url, open_timeout=5, close_timeout=1) as ws:
                await ws.send(encode(Join(v=PROTOCOL_VERSION, device_id=device_id, client="churn")))
                while True:
                    message = decode(await asyncio.wait_for(ws.recv(), 5), SERVER_TO_PARTICIPANT, 1 << 20)
                    if isinstance(message, Welcome):
                        device_id = message.device_id
                        counts["welcomed"] += 1
                        break
                if abort:
                    ws.transport.abort()
        except (OSError, TimeoutError, websockets.WebSocketException):
            counts["refused"] += 1
            await asyncio.sleep(0.01)


async def test_a_reconnect_storm_leaks_nothing_and_harms_no_one(tmp_path: Path, spawn: Spawn) -> None:
    """After 10 s of 4 join/leave loops: the server is up, counts only the honest phones, holds its baseline fds; honest phones in sync."""
    server = make_server(tmp_path, TRACK_S)
    await server.start()
    try:
        assert server.proc is not None
        honest = sim_devices(HONEST, seed=7)
        runners = await join_all(spawn, [Reconnecting(d, server.ws_url) for d in honest])
        await asyncio.sleep(2)
        fds_before = open_fds(server.proc.pid)

        counts = {"welcomed": 0, "refused": 0}
        until = asyncio.get_running_loop().time() + STORM_S
        await asyncio.gather(*(churn(server.ws_url, abort=k % 2 == 1, until=until, counts=counts) for k in range(LOOPS)))
        assert counts["welcomed"] > 100, f"the storm hardly ran: {counts}"
        assert server.proc.poll() is None, "the server died"

        for _ in range(int(scaled(100))):
            status = await server.get("/api/status")
            fds = open_fds(server.proc.pid)
            if status["devices"] == HONEST and fds <= fds_before + 2:
                break
            await asyncio.sleep(0.1)
        assert status["devices"] == HONEST, f"{status['devices']} devices counted after the storm, {HONEST} connected"
        assert fds <= fds_before + 2, f"file descriptors {fds_before} before the storm, {fds} after"

        started = await server.post("/api/start", {"in_s": 2, "confirm": True})
        await asyncio.wait_for(asyncio.gather(*(d.scheduled.wait() for d in honest)), scaled(5))
        for d in honest:
            assert d.schedule is not None and d.schedule.start_us == started["start_us"]
            error_us, bound_us = sync_error_us(d)
            assert error_us <= bound_us, (d.name, error_us, bound_us)
        assert all(not r.closes and r.welcomes == 1 for r in runners), [r.closes for r in runners if r.closes]
        assert "Traceback" not in server.log()
        print(f"storm: {counts}, fds {fds_before} before, {fds} after")
    finally:
        server.stop()
