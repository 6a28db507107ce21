"""Bad input from the network: each case closes that connection with a reason, the rest keep going."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
import websockets

from bench.devices import SimClock, SimDevice
from protocol import PROTOCOL_VERSION, decode, encode
from protocol.messages import SERVER_TO_ORGANIZER, SERVER_TO_PARTICIPANT, Error, Hello, Join, Start
from tests.conftest import RunningServer, scaled
from tests.integration.organizer_client import Organizer

JOIN = encode(Join(v=PROTOCOL_VERSION, device_id=None, client="bad-input-test"))


async def closed_with(url: str, frames: list[bytes | str], accept=SERVER_TO_PARTICIPANT) -> tuple[int | None, str, Error | None]:  # type: ignore[no-untyped-def]
    """Send ``frames``, read until the server closes; return close code, reason and any error message."""
    error = None
    async with websockets.connect(url, max_size=2**20) as ws:
        for frame in frames:
            await ws.send(frame)
        try:
            while True:
                data = await asyncio.wait_for(ws.recv(), scaled(5))
                if isinstance(data, bytes):
                    message = decode(data, accept, 2**20)
                    if isinstance(message, Error):
                        error = message
        except websockets.ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason or "", error


CASES = [
    pytest.param([JOIN, b"\xc1garbage"], 1002, "malformed", "not a msgpack message", id="garbage"),
    pytest.param([JOIN, JOIN[:-3]], 1002, "malformed", "not a msgpack message", id="truncated"),
    pytest.param([JOIN, b"\x81\xa4type\xa4pong" + b"\x00" * 2000], 1009, "too_big", "exceeds the limit of 1024", id="oversize"),
    pytest.param([JOIN, b"\x00" * 100_000], 1009, None, "", id="oversize-transport"),
    pytest.param([JOIN, "hello"], 1002, "malformed", "text frames are not accepted", id="text-frame"),
    pytest.param([JOIN, msgpack.packb({"type": "dance"})], 1003, "unknown_type", "unknown message type 'dance'", id="unknown-type"),
    pytest.param([JOIN, msgpack.packb([1, 2])], 1002, "malformed", "expected a msgpack map, found array", id="array"),
    pytest.param(
        [JOIN, msgpack.packb({"type": "pong", "seq": 0, "t0_us": "x", "t1_us": 0, "t2_us": 0})],
        1002, "invalid_field", "pong.t0_us: expected integer", id="wrong-type",
    ),
    pytest.param([JOIN, msgpack.packb({"type": "ready", "loaded": 1, "unlocked": True})], 1002, "invalid_field", "ready.loaded: expected boolean, found integer", id="int-for-bool"),
    pytest.param([JOIN, encode(Start(lead_ms=5000))], 1008, "unexpected", "message type 'start' is not allowed", id="organizer-command"),
    pytest.param([msgpack.packb({"type": "ready", "loaded": True, "unlocked": True})], 1008, "unexpected", "expected join first, found ready", id="no-join"),
    pytest.param([JOIN, JOIN], 1008, "unexpected", "found a second join", id="second-join"),
    pytest.param([encode(Join(v=2, device_id=None))], 1002, "unsupported_version", "unsupported protocol version 2", id="version"),
    pytest.param([msgpack.packb({"type": "join", "v": 1, "device_id": "../../etc"})], 1002, "invalid_field", "join.device_id", id="bad-device-id"),
]


@pytest.mark.parametrize("frames, code, error_code, reason", CASES)
async def test_participant_bad_input_is_closed_with_reason(server: RunningServer, frames, code, error_code, reason) -> None:  # type: ignore[no-untyped-def]
    """Each kind of bad frame gets its close code, its reason and a matching error; others are unaffected."""
    now = server.hub.clock.now_ns
    bystander = SimDevice(SimClock(0), now, name="bystander")
    task = asyncio.create_task(bystander.run(server.ws_url))
    try:
        await asyncio.wait_for(bystander.joined.wait(), scaled(5))
        close_code, close_reason, error = await closed_with(server.ws_url, frames)
        assert close_code == code
        assert reason in close_reason
        if error_code is None:
            assert error is None
        else:
            assert error is not None and error.code == error_code and reason in error.message
        # The server still serves the bystander: it keeps sampling and sees a start.
        samples = bystander.samples
        async with Organizer(server.organizer_url, server.token) as organizer:
            overview = await organizer.overview()
            assert overview.devices == 1
            await organizer.send(Start(lead_ms=2000, confirm=True))
        await asyncio.wait_for(bystander.scheduled.wait(), scaled(5))
        assert not task.done()
        assert bystander.samples >= samples
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_wrong_organizer_token_is_refused(server: RunningServer) -> None:
    """A wrong token gets not_authorized and a 1008 close with 'invalid organizer token'."""
    code, reason, error = await closed_with(
        server.organizer_url, [encode(Hello(v=PROTOCOL_VERSION, token="not-the-token"))], SERVER_TO_ORGANIZER
    )
    assert code == 1008 and reason == "invalid organizer token"
    assert error == Error(code="not_authorized", message="invalid organizer token")
    assert server.hub.show.state == "idle"


async def test_organizer_commands_need_the_token_first(server: RunningServer) -> None:
    """A start sent before hello is refused and changes nothing."""
    code, reason, error = await closed_with(server.organizer_url, [encode(Start(lead_ms=2000))], SERVER_TO_ORGANIZER)
    assert code == 1008 and "expected hello first, found start" in reason
    assert error is not None and error.code == "unexpected"
    assert server.hub.show.state == "idle"


async def test_participant_message_on_organizer_endpoint_is_refused(server: RunningServer) -> None:
    """A join on /ws/organizer is not allowed there."""
    code, reason, _ = await closed_with(server.organizer_url, [JOIN], SERVER_TO_ORGANIZER)
    assert code == 1008 and "message type 'join' is not allowed" in reason
