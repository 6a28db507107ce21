"""The participant websocket (/ws): join, clock sync, readiness, schedules.

Glue only: read a frame, stamp it, decode, hand it to the pure parts (the
device's ``DeviceSession``, the hub), enqueue what goes back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Callable

from aiohttp import web

from clock.estimator import ClockEstimate
from clock.sample import Sample
from clock.session import DeviceSession
from protocol import MAX_PARTICIPANT_MESSAGE, PROTOCOL_VERSION, decode, encode
from protocol.errors import UnexpectedMessage, UnsupportedVersion
from protocol.messages import PARTICIPANT_TO_SERVER, Estimate, Join, Ping, Pong, Ready, Welcome
from server.connection import HEARTBEAT_S, TRANSPORT_MAX_FRAME, close_for, drain, frames
from server.hub import Device, Hub, Outbox
from server.showfile import language_of

log = logging.getLogger("unisono.participants")

def estimate_message(estimate: ClockEstimate) -> Estimate:
    """The wire form of an estimate: device-time anchored, microseconds, bound rounded up."""
    at_device_ns = estimate.at_server_ns - estimate.offset_ns
    return Estimate(
        at_us=round(at_device_ns / 1000),
        offset_us=round(estimate.offset_ns / 1000),
        rate_ppm=estimate.rate_ppm,
        # +1 us covers rounding offset_us and at_us to whole microseconds.
        bound_us=math.ceil(estimate.bound_ns / 1000) + 1,
        bound_growth_ppm=estimate.bound_growth_ppm,
    )


async def participant_ws(request: web.Request) -> web.WebSocketResponse:
    """Serve one participant until it leaves."""
    from server.app import HUB, METRICS

    hub: Hub = request.app[HUB]
    metrics = request.app[METRICS]
    ws = web.WebSocketResponse(max_msg_size=TRANSPORT_MAX_FRAME, heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    device: Device | None = None
    writer: asyncio.Task[None] | None = None
    try:
        async for data, received_ns in frames(ws, hub.clock.now_ns):
            message = decode(data, PARTICIPANT_TO_SERVER, MAX_PARTICIPANT_MESSAGE)
            metrics.count_received(message.TYPE)
            if device is None:
                device = _join(hub, ws, message, metrics.count_sent)
                writer = asyncio.create_task(drain(device.outbox, _pinger(hub, device)))
            elif isinstance(message, Pong):
                _receive_pong(hub, device, message, received_ns)
            elif isinstance(message, Ready):
                device.receive_ready(message)
                hub.changed()
            else:
                raise UnexpectedMessage(f"expected pong or ready, found a second {message.TYPE}")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # every failure ends in a close with a reason, never a crash
        await close_for(ws, exc)
    finally:
        if device is not None:
            hub.remove_device(device)
        if writer is not None:
            writer.cancel()
        if not ws.closed:
            await ws.close()
    return ws


def _join(hub: Hub, ws: web.WebSocketResponse, message: object, on_sent: Callable[[int], None] | None = None) -> Device:
    if not isinstance(message, Join):
        found = getattr(message, "TYPE", "something else")
        raise UnexpectedMessage(f"expected join first, found {found}")
    if message.v != PROTOCOL_VERSION:
        raise UnsupportedVersion(message.v, PROTOCOL_VERSION)
    # 16 random bytes in URL-safe base64: 22 characters of [A-Za-z0-9_-].
    device_id = message.device_id or secrets.token_urlsafe(16)
    group = hub.groups.assign(device_id)
    session = DeviceSession(hub.config.polling, hub.config.estimator)
    device = Device(device_id, group, session, Outbox(ws, hub.config.send_queue_limit, on_sent))
    spec = hub.show_spec
    device.outbox.put(
        encode(
            Welcome(
                v=PROTOCOL_VERSION,
                device_id=device_id,
                group=group,
                track_url=spec.track_url(group),
                title=spec.title,
            )
        )
    )
    device.outbox.put(hub.show_frame(group, language_of(message.lang)))
    device.outbox.put(encode(hub.show.snapshot.to_message()))
    if hub.announcement is not None:
        device.outbox.put(hub.announcement)
    hub.add_device(device)
    log.info("device %s joined group %s (%s)", device_id, group, message.client or "unnamed client")
    return device


# How far (seconds) retries refused by the ping budget are spread: [routine, urgent].
BUDGET_RETRY_SPREAD_S = (2.0, 0.5)


def _pinger(hub: Hub, device: Device):  # type: ignore[no-untyped-def]
    """The writer's idle hook: enqueue a ping when one is due, else say how long to wait."""
    session = device.session

    def ping_now() -> bytes | None:
        now = hub.clock.now_ns()
        due = session.poll(now)
        if due is None:
            return None
        seq, t0_ns = due
        return encode(Ping(seq=seq, t0_us=t0_ns // 1000))

    def idle() -> float:
        now = hub.clock.now_ns()
        wait_ns = session.next_deadline(now) - now
        if wait_ns > 0:
            return wait_ns / 1e9
        urgent = session.urgent(now)
        refused_ns = hub.ping_budget.take(now, urgent)
        if refused_ns:
            # Over budget: retry later, spread out so the refused do not all wake together.
            return refused_ns / 1e9 + hub.rng.uniform(0.0, BUDGET_RETRY_SPREAD_S[urgent])
        device.outbox.put(ping_now)
        return 0.0

    return idle


def _receive_pong(hub: Hub, device: Device, pong: Pong, received_ns: int) -> None:
    session: DeviceSession = device.session
    result = session.receive_pong(pong.seq, pong.t0_us, pong.t1_us * 1000, pong.t2_us * 1000, received_ns)
    if not isinstance(result, Sample):
        log.debug("device %s: sample rejected: %s", device.device_id, result.value)
        return
    estimate = session.estimate(received_ns)
    if estimate is not None:
        device.outbox.put(encode(estimate_message(estimate)))
