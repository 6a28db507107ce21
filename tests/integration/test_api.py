"""The organizer's HTTP API against a real server: auth, commands, safety checks, the event log."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
import websockets

from bench.devices import SimClock, SimDevice
from protocol import encode
from protocol.messages import Abort, Announce, Hello, Start
from tests.conftest import RunningServer, scaled
from tests.integration.test_bad_input import JOIN, closed_with
from tests.integration.test_start import wait_until

ACTIONS = [
    ("GET", "/api/status", None),
    ("POST", "/api/start", {"in_s": 5, "confirm": True}),
    ("POST", "/api/reschedule", {"in_s": 5, "confirm": True}),
    ("POST", "/api/abort", None),
    ("POST", "/api/announce", {"text": "hello"}),
    ("GET", "/api/events", None),
]


class Unready:
    """A participant that joins and never says it is ready (nor answers pings)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: Any = None

    async def __aenter__(self) -> "Unready":
        self.ws = await websockets.connect(self.url)
        await self.ws.send(JOIN)
        await self.ws.recv()  # welcome: the server has added the device
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()


async def call(server: RunningServer, method: str, path: str, body: Any = None, token: str | None = "", client: str = "test-client") -> tuple[int, Any]:
    headers = {"X-Unisono-Client": client}
    token = server.token if token == "" else token
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http:
        async with http.request(method, server.base_url + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json()


@pytest.mark.parametrize(("method", "path", "body"), ACTIONS, ids=[a[1] for a in ACTIONS])
@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"], ids=["no-token", "wrong-token"])
async def test_every_action_needs_the_token(server: RunningServer, method: str, path: str, body: Any, token: str | None) -> None:
    status, answer = await call(server, method, path, body, token=token)
    assert status == 401 and answer["error"] == "unauthorized"
    assert "unisono token" in answer["message"]
    assert server.hub.show.state == "idle"
    assert [e.action for e in server.hub.events if e.action != "server_start"] == []


@pytest.mark.parametrize("message", [Start(lead_ms=5000, confirm=True), Abort(), Announce(text="hi"), Hello(v=1, token="x" * 20)], ids=lambda m: m.TYPE)
async def test_participants_reach_no_organizer_action(server: RunningServer, message: Any) -> None:
    """Every organizer message on a participant connection closes it and changes nothing."""
    code, reason, error = await closed_with(server.ws_url, [JOIN, encode(message)])
    assert code == 1008 and f"message type '{message.TYPE}' is not allowed" in reason
    assert error is not None and error.code == "unexpected"
    assert server.hub.show.state == "idle" and server.hub.announcement is None


async def test_start_reschedule_abort_and_the_event_log(server: RunningServer) -> None:
    device = SimDevice(SimClock(0), server.hub.clock.now_ns, name="d")
    task = asyncio.create_task(device.run(server.ws_url))
    try:
        await asyncio.wait_for(device.joined.wait(), scaled(5))
        status, snap = await call(server, "POST", "/api/start", {"in_s": 30, "confirm": True})
        assert status == 200 and snap["state"] == "scheduled" and snap["epoch"] == 1
        await asyncio.wait_for(device.scheduled.wait(), scaled(5))
        assert device.schedule is not None and device.schedule.start_us == snap["start_us"]
        assert datetime.fromisoformat(snap["start_time"]).timestamp() == pytest.approx(snap["start_us"] / 1e6, abs=0.001)

        status, again = await call(server, "POST", "/api/start", {"in_s": 30, "confirm": True})
        assert status == 409 and again["error"] == "invalid_state" and "reschedule" in again["message"]

        at = (datetime.now(timezone.utc) + timedelta(seconds=60)).isoformat()
        status, moved = await call(server, "POST", "/api/reschedule", {"at": at, "confirm": True})
        assert status == 200 and moved["epoch"] == 2 and moved["state"] == "scheduled"
        assert moved["start_us"] == round(datetime.fromisoformat(at).timestamp() * 1e6)
        await wait_until(lambda: device.schedule is not None and device.schedule.epoch == 2)

        status, aborted = await call(server, "POST", "/api/abort")
        assert status == 200 and aborted["state"] == "idle" and aborted["start_us"] is None
        status, again = await call(server, "POST", "/api/abort")
        assert status == 409 and again["error"] == "invalid_state"
        status, moved = await call(server, "POST", "/api/reschedule", {"in_s": 30})
        assert status == 409 and again["error"] == "invalid_state"

        status, sent = await call(server, "POST", "/api/announce", {"text": "Gather by the fountain"})
        assert status == 200 and sent["devices"] == 1

        status, log = await call(server, "GET", "/api/events?limit=10")
        assert status == 200
        actions = [(e["action"], e["who"]) for e in log["events"]]
        assert actions == [
            ("server_start", "server"),
            ("start", "test-client 127.0.0.1"),
            ("reschedule", "test-client 127.0.0.1"),
            ("abort", "test-client 127.0.0.1"),
            ("announce", "test-client 127.0.0.1"),
        ]
        assert "Gather by the fountain" in log["events"][-1]["detail"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_start_too_soon_or_in_the_past_is_refused(server: RunningServer) -> None:
    status, answer = await call(server, "POST", "/api/start", {"in_s": 0.2, "confirm": True})
    assert status == 409 and answer["error"] == "too_soon" and "start later" in answer["message"]
    past = (datetime.now(timezone.utc) - timedelta(seconds=5)).isoformat()
    status, answer = await call(server, "POST", "/api/start", {"at": past, "confirm": True})
    assert status == 409 and answer["error"] == "too_soon" and "in the past" in answer["message"]
    assert server.hub.show.state == "idle"


async def test_too_few_ready_devices_need_a_confirmation(server: RunningServer) -> None:
    """A device that never reported ready holds the share at 0: start needs confirm."""
    async with Unready(server.ws_url):
        status, answer = await call(server, "POST", "/api/start", {"in_s": 10})
        assert status == 409 and answer["error"] == "not_ready"
        assert "0 of 1 devices are ready" in answer["message"] and "confirm" in answer["message"]
        assert server.hub.show.state == "idle"
        status, snap = await call(server, "POST", "/api/start", {"in_s": 10, "confirm": True})
        assert status == 200 and snap["state"] == "scheduled"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "exactly one of in_s"),
        ({"in_s": 5, "at": "2030-01-01T00:00:00Z"}, "exactly one of in_s"),
        ({"in_s": "5"}, "in_s: expected a number"),
        ({"in_s": True}, "in_s: expected a number"),
        ({"in_s": -1}, "more than 0"),
        ({"in_s": 1e9}, "at most 86400"),
        ({"at": "tomorrow at nine"}, "not an RFC 3339 time"),
        ({"at": "2030-01-01T21:00:00"}, "no timezone offset"),
        ({"in_s": 5, "confirm": "yes"}, "confirm: expected true or false"),
        ({"in_s": 5, "force": True}, "unknown field 'force'"),
        ([1, 2], "expected a JSON object"),
    ],
)
async def test_bad_start_bodies_get_a_clear_error(server: RunningServer, body: Any, needle: str) -> None:
    status, answer = await call(server, "POST", "/api/start", body)
    assert status == 400 and answer["error"] == "bad_request" and needle in answer["message"]
    assert server.hub.show.state == "idle"


async def test_not_json_and_bad_limits_get_a_clear_error(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(server.base_url + "/api/start", data=b"{nope", headers=headers) as resp:
            assert resp.status == 400 and "not JSON" in (await resp.json())["message"]
        async with http.post(server.base_url + "/api/announce", data=b"x" * 10_000, headers=headers) as resp:
            assert resp.status == 400 and "over 4096 bytes" in (await resp.json())["message"]
        for limit in ("0", "1001", "ten", "-1"):
            async with http.get(server.base_url + f"/api/events?limit={limit}", headers=headers) as resp:
                assert resp.status == 400 and "limit" in (await resp.json())["message"]
    for body in ({"text": "x" * 501}, {"text": 42}, {}, {"text": "hi", "to": "all"}):
        status, answer = await call(server, "POST", "/api/announce", body)
        assert status == 400 and answer["error"] == "bad_request"
    status, answer = await call(server, "POST", "/api/announce", {"text": ""})  # clears it
    assert status == 200


async def test_status_and_metrics_count_the_devices(server: RunningServer) -> None:
    devices = [SimDevice(SimClock(0), server.hub.clock.now_ns, name=f"d{i}") for i in range(3)]
    tasks = [asyncio.create_task(d.run(server.ws_url)) for d in devices]
    try:
        await wait_until(lambda: all(d.estimate is not None and d.estimate.bound_us <= 10_000 for d in devices), 10)
        await asyncio.sleep(0.3)  # past the fleet summary's cache
        status, doc = await call(server, "GET", "/api/status")
        assert status == 200 and doc["devices"] == 3 and doc["show"]["state"] == "idle"
        assert sum(g["connected"] for g in doc["groups"].values()) == 3
        assert doc["funnel"]["connected"] == 3 and doc["funnel"]["synced"] == 3
        assert sum(doc["bounds"]["counts"]) + doc["bounds"]["unknown"] == 3
        assert doc["lead_min_ms"] >= 1000 and doc["join_url"] == server.base_url + "/"
        # These simulated phones report neither a wake lock, nor visibility, nor an output latency.
        assert doc["phones"] == {"wake_lock": 0, "hidden": 0, "latency_reported": 0, "latency_mean_ms": None}
        async with aiohttp.ClientSession() as http:
            async with http.get(server.base_url + "/metrics") as resp:
                text = await resp.text()
        assert resp.status == 200 and "unisono_devices_connected 3.0" in text
        assert 'unisono_messages_received_total{type="pong"}' in text
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_organizer_socket_start_too_soon_stays_open(server: RunningServer) -> None:
    """On the websocket a refused start is an error message; the console stays connected."""
    from tests.integration.organizer_client import Organizer

    async with Unready(server.ws_url), Organizer(server.organizer_url, server.token) as organizer:
        overview = await organizer.overview(lambda o: o.devices == 1)
        assert overview.status is not None and overview.status["devices"] == 1
        await organizer.send(Start(lead_ms=5000))
        error = await organizer.error()
        assert error.code == "not_ready"
        await organizer.send(Start(lead_ms=5000, confirm=True))
        await organizer.overview(lambda o: o.state == "scheduled")
