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
from clock.sample import Rejection, Sample
from clock.session import DeviceSession
from protocol import MAX_PARTICIPANT_MESSAGE, PROTOCOL_VERSION, decode, encode
from protocol.errors import UnexpectedMessage, UnsupportedVersion
from protocol.messages import PARTICIPANT_TO_SERVER, Estimate, Join, Pong, Ready, Welcome
from server.connection import HEARTBEAT_S, Arrivals, TRANSPORT_MAX_FRAME, close_for, first_message, frame_data, shed_http_state
from server.hub import Device, Hub, Outbox
from server.identity import NONCE_BYTES, DeviceIds
from server.security import RateLimited, admit_websocket, close_flooder
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
    """Serve one participant until it leaves (after the origin and connection-cap checks).

    One coroutine for the whole connection, reading frames with
    ``connection.first_message`` and ``frame_data`` rather than through the
    ``connection.frames`` generator: a handler, an inner handler, an admission
    context and an async generator, each alive as long as the phone, cost
    ~1 KB a connection.
    """
    from server.app import DEVICE_IDS, HUB, LIMITS, METRICS, ORIGINS, RATE

    limits = request.app[LIMITS]
    address = admit_websocket(request, limits, request.app[ORIGINS])
    try:
        hub: Hub = request.app[HUB]
        metrics = request.app[METRICS]
        rate = request.app[RATE]
        # No permessage-deflate: frames of a few dozen bytes gain nothing, and the
        # per-connection zlib state cost ~150 KB and half the CPU per message.
        ws = web.WebSocketResponse(max_msg_size=TRANSPORT_MAX_FRAME, heartbeat=HEARTBEAT_S, compress=False)
        await ws.prepare(request)
        shed_http_state(request)
        transport = request.transport
        device: Device | None = None
        try:
            arrivals = Arrivals(transport, hub.clock.now_ns)
            bucket = rate.bucket(hub.clock.now_ns())
            msg = await first_message(ws)
            while (data := frame_data(msg)) is not None:
                received_ns = arrivals.receipt_ns()
                rate.check(bucket, received_ns)  # before decoding: a flood costs as little as possible
                message = decode(data, PARTICIPANT_TO_SERVER, MAX_PARTICIPANT_MESSAGE)
                metrics.count_received(message.TYPE)
                if device is None:
                    device = _join(hub, request.app[DEVICE_IDS], ws, message, metrics.count_sent)
                    device.stamp_source = arrivals.source
                elif isinstance(message, Pong):
                    _receive_pong(hub, device, message, received_ns)
                elif isinstance(message, Ready):
                    device.receive_ready(message)
                    hub.changed()
                else:
                    raise UnexpectedMessage(f"expected pong or ready, found a second {message.TYPE}")
                msg = await ws.receive()
        except asyncio.CancelledError:
            raise
        except RateLimited as exc:
            await close_flooder(ws, transport, exc)
        except Exception as exc:  # every failure ends in a close with a reason, never a crash
            await close_for(ws, exc)
        finally:
            if device is not None:
                hub.remove_device(device)
                device.outbox.stop()
            if not ws.closed:
                await ws.close()
        return ws
    finally:
        limits.release(address)


def _join(
    hub: Hub, ids: DeviceIds, ws: web.WebSocketResponse, message: object, on_sent: Callable[[int], None] | None = None
) -> Device:
    if not isinstance(message, Join):
        found = getattr(message, "TYPE", "something else")
        raise UnexpectedMessage(f"expected join first, found {found}")
    if message.v != PROTOCOL_VERSION:
        raise UnsupportedVersion(message.v, PROTOCOL_VERSION)
    # Only an id this server issued keeps its group: any other (forged,
    # another server's, an old unsigned one) is a new device with a new group.
    device_id, known = ids.admit(message.device_id, secrets.token_bytes(NONCE_BYTES))
    if message.device_id is not None and not known:
        log.debug("join with an id this server did not issue: new id %s", device_id)
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
    # Debug: at a join storm's 1,000+ joins a second, a log line each was a write each.
    log.debug("device %s joined group %s (%s)", device_id, group, message.client or "unnamed client")
    return device


# A device hears an estimate at least this often while it answers pings.
ESTIMATE_REFRESH_NS = 10_000_000_000


def _receive_pong(hub: Hub, device: Device, pong: Pong, received_ns: int) -> None:
    session: DeviceSession = device.session
    result = session.receive_pong(pong.seq, pong.t0_us, pong.t1_us * 1000, pong.t2_us * 1000, received_ns)
    if result is Rejection.UNKNOWN_PING:
        return  # unsolicited (or a duplicate): nothing changed, so nothing more to do
    hub.pinger.reschedule(device)  # an answer may bring the next ping forward
    if not isinstance(result, Sample):
        log.debug("device %s: sample rejected: %s", device.device_id, result.value)
        return
    # An estimate goes out when the sample changed the fit (PROTOCOL.md: after
    # each pong that improved the server's knowledge), and at least every
    # ESTIMATE_REFRESH_NS so the device's bound stays fresh.
    fits = session.estimator.fits
    if fits == device.sent_fits and received_ns - device.sent_estimate_ns < ESTIMATE_REFRESH_NS:
        return
    estimate = session.estimate(received_ns)
    if estimate is not None:
        device.sent_fits, device.sent_estimate_ns = fits, received_ns
        device.outbox.put(encode(estimate_message(estimate)))
