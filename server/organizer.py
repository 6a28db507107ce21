"""The organizer websocket (/ws/organizer): token, then start, abort and announce."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from protocol import MAX_ORGANIZER_MESSAGE, PROTOCOL_VERSION, decode, encode
from protocol.errors import NotAuthorized, UnexpectedMessage, UnsupportedVersion
from protocol.messages import ORGANIZER_TO_SERVER, Abort, Announce, Error, Hello, Start
from server.auth import Gate
from server.connection import HEARTBEAT_S, TRANSPORT_MAX_FRAME, close_for, frames
from server.hub import CommandRefused, Hub, Outbox
from server.security import RateLimited, close_flooder, websocket_admission
from server.show import InvalidTransition

log = logging.getLogger("unisono.organizer")


async def organizer_ws(request: web.Request) -> web.WebSocketResponse:
    """Serve one organizer console until it leaves (after the origin and connection-cap checks)."""
    from server.app import LIMITS, ORIGINS

    with websocket_admission(request, request.app[LIMITS], request.app[ORIGINS]):
        return await _serve(request)


async def _serve(request: web.Request) -> web.WebSocketResponse:
    from server.app import GATE, HUB, METRICS, RATE

    hub: Hub = request.app[HUB]
    rate = request.app[RATE]
    who = f"organizer socket {request.remote}"
    ws = web.WebSocketResponse(max_msg_size=TRANSPORT_MAX_FRAME, heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    outbox: Outbox | None = None
    try:
        bucket = rate.bucket(hub.clock.now_ns())
        async for data, received_ns in frames(ws, hub.clock.now_ns):
            rate.check(bucket, received_ns)
            message = decode(data, ORGANIZER_TO_SERVER, MAX_ORGANIZER_MESSAGE)
            request.app[METRICS].count_received(message.TYPE)
            if outbox is None:
                await _authenticate(hub, request.app[GATE], request.remote or "", message)
                if not hub.join_url:
                    hub.join_url = f"{request.scheme}://{request.host}/"
                outbox = Outbox(ws, hub.config.send_queue_limit, request.app[METRICS].count_sent)
                outbox.put(encode(hub.overview()))
                hub.organizers.add(outbox)
                log.info("organizer connected from %s", request.remote)
                continue
            try:
                if isinstance(message, Start):
                    start_ns = received_ns + message.lead_ms * 1_000_000
                    hub.start_show(start_ns, who, confirm=message.confirm, issued_ns=received_ns)
                elif isinstance(message, Abort):
                    hub.abort_show(who)
                elif isinstance(message, Announce):
                    hub.announce(message.text, who)
                else:
                    raise UnexpectedMessage(f"expected start, abort or announce, found a second {message.TYPE}")
            except InvalidTransition as exc:
                outbox.put(encode(Error(code="invalid_state", message=str(exc))))
            except CommandRefused as exc:
                outbox.put(encode(Error(code=exc.code, message=exc.message[:500])))
    except asyncio.CancelledError:
        raise
    except RateLimited as exc:
        await close_flooder(ws, request.transport, exc)
    except Exception as exc:
        await close_for(ws, exc)
    finally:
        if outbox is not None:
            hub.organizers.discard(outbox)
            outbox.stop()
        if not ws.closed:
            await ws.close()
    return ws


async def _authenticate(hub: Hub, gate: Gate, address: str, message: object) -> None:
    if not isinstance(message, Hello):
        found = getattr(message, "TYPE", "something else")
        raise UnexpectedMessage(f"expected hello first, found {found}")
    if message.v != PROTOCOL_VERSION:
        raise UnsupportedVersion(message.v, PROTOCOL_VERSION)
    if not await gate.admit(address, message.token, hub.token):
        log.warning("organizer connection refused: invalid token")
        raise NotAuthorized("invalid organizer token")
