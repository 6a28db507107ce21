"""The organizer's HTTP API (JSON), as ``server/openapi.py`` describes it.

Every call but the OpenAPI document needs ``Authorization: Bearer <token>``;
wrong tokens go through the same slowdown as the organizer websocket's
(``server.auth.Gate``). Bodies are validated field by field and every refusal
is ``{"error": code, "message": text}`` with a text that says what to do.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

from aiohttp import web

from protocol.messages import MAX_ANNOUNCEMENT_TEXT
from server.hub import CommandRefused, Hub
from server.openapi import MAX_LEAD_S, openapi_document
from server.show import InvalidTransition
from server.status import event_document, snapshot_document

# Request bodies are tiny; anything bigger is refused before parsing.
MAX_BODY_BYTES = 4096
CLIENT_NAME = re.compile(r"[A-Za-z0-9 ._/-]{1,32}")
_STATUS_FOR = {
    "bad_request": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "invalid_state": 409,
    "not_ready": 409,
    "too_soon": 409,
    "too_far": 409,
    "store_failed": 503,
}


class ApiError(Exception):
    """A refused request: its code (the JSON ``error``) and a text for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_response(code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=_STATUS_FOR.get(code, 400))


def _hub(request: web.Request) -> Hub:
    from server.app import HUB

    return request.app[HUB]


def _who(request: web.Request) -> str:
    """Who did it, for the event log: the client's own name (X-Unisono-Client) and address."""
    name = request.headers.get("X-Unisono-Client", "api")
    if CLIENT_NAME.fullmatch(name) is None:
        name = "api"
    return f"{name} {request.remote or '?'}"


async def _authorize(request: web.Request) -> None:
    from server.app import GATE

    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError("unauthorized", "send the organizer token as 'Authorization: Bearer TOKEN' (see `unisono token`)")
    if not await request.app[GATE].admit(request.remote or "", token.strip(), _hub(request).token):
        raise ApiError("unauthorized", "wrong organizer token: run `unisono token` on the server machine to see it")


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError("bad_request", f"the body is over {MAX_BODY_BYTES} bytes")
    return parse_body(await request.content.read(MAX_BODY_BYTES + 1))


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object. Raises only ApiError (bad_request), whatever the bytes."""
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError("bad_request", f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError("bad_request", "the body is not JSON: it is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ApiError("bad_request", f"the body is not JSON: {exc}") from None
    except RecursionError:
        # json's C scanner recurses once per nesting level: 4 KiB of '[' is deeper than the interpreter allows.
        raise ApiError("bad_request", "the body is not JSON the API takes: nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError("bad_request", f"expected a JSON object, found {type(body).__name__}")
    return body


def _unknown_fields(body: dict[str, Any], known: tuple[str, ...]) -> None:
    extra = sorted(set(body) - set(known))
    if extra:
        raise ApiError("bad_request", f"unknown field {extra[0][:32]!r}: expected only {', '.join(known)}")


def start_time_ns(body: dict[str, Any], issued_ns: int) -> int:
    """Server time of the requested start: ``in_s`` after ``issued_ns``, or the absolute ``at``."""
    _unknown_fields(body, ("in_s", "at", "confirm"))
    has_in, has_at = "in_s" in body, "at" in body
    if has_in == has_at:
        raise ApiError("bad_request", "give exactly one of in_s (seconds from now) and at (an RFC 3339 time)")
    if has_in:
        seconds = body["in_s"]
        # An int is checked before math.isfinite: JSON integers have no size limit, floats do (OverflowError).
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or (isinstance(seconds, float) and not math.isfinite(seconds)):
            raise ApiError("bad_request", "in_s: expected a number of seconds")
        if not 0 < seconds <= MAX_LEAD_S:
            found = f"{seconds:g}" if abs(seconds) < 1e15 else "a number out of range"
            raise ApiError("bad_request", f"in_s: expected more than 0 and at most {MAX_LEAD_S} seconds, found {found}")
        return issued_ns + round(seconds * 1e9)
    text = body["at"]
    if not isinstance(text, str) or len(text) > 64:
        raise ApiError("bad_request", "at: expected an RFC 3339 time such as 2026-11-28T21:00:00+01:00")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError("bad_request", f"at: {text!r} is not an RFC 3339 time such as 2026-11-28T21:00:00+01:00") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ApiError("bad_request", f"at: {text!r} has no timezone offset; add one, e.g. +01:00 or Z")
    try:
        micros = round(when.timestamp() * 1e6)
    except (OverflowError, ValueError, OSError):
        raise ApiError("bad_request", f"at: {text!r} is out of range") from None
    start_ns = micros * 1000
    if start_ns - issued_ns > MAX_LEAD_S * 1_000_000_000:
        raise ApiError("too_far", f"at: {text!r} is more than {MAX_LEAD_S // 3600} hours ahead; start at most a day ahead")
    return start_ns


def start_request(body: dict[str, Any], issued_ns: int) -> tuple[int, bool]:
    """A start's or reschedule's body: (server time of the start, confirm). Raises only ApiError."""
    return start_time_ns(body, issued_ns), _confirm(body)


def _confirm(body: dict[str, Any]) -> bool:
    confirm = body.get("confirm", False)
    if not isinstance(confirm, bool):
        raise ApiError("bad_request", "confirm: expected true or false")
    return confirm


def _handler(method: Any, query: tuple[str, ...] = ()) -> Any:
    """Authorize, check the query's keys against ``query``, run, and turn refusals into JSON errors."""

    async def handle(request: web.Request) -> web.Response:
        try:
            await _authorize(request)
            unknown = sorted(set(request.query) - set(query))
            if unknown:
                takes = f"takes only {', '.join(query)}" if query else "takes no query parameters"
                raise ApiError("bad_request", f"unknown query parameter {unknown[0][:32]!r}: {request.path} {takes}")
            result = await method(request)
        except ApiError as exc:
            return error_response(exc.code, exc.message)
        except InvalidTransition as exc:
            return error_response("invalid_state", str(exc))
        except CommandRefused as exc:
            return error_response(exc.code, exc.message)
        return web.json_response(result)

    return handle


async def _status(request: web.Request) -> dict[str, Any]:
    return _hub(request).status(_join_url(request))


def _scheduling(event: str) -> Any:
    """POST /api/start or /api/reschedule: the body's start time, through Hub.start_show or reschedule_show."""

    async def schedule(request: web.Request) -> dict[str, Any]:
        hub = _hub(request)
        issued_ns = hub.clock.now_ns()
        start_ns, confirm = start_request(await _json_body(request), issued_ns)
        command = hub.start_show if event == "start" else hub.reschedule_show
        snapshot = command(start_ns, _who(request), confirm=confirm, issued_ns=issued_ns)
        return snapshot_document(snapshot)

    return schedule


async def _abort(request: web.Request) -> dict[str, Any]:
    return snapshot_document(_hub(request).abort_show(_who(request)))


def announce_text(body: dict[str, Any]) -> str:
    """An announce body's text. Raises only ApiError."""
    _unknown_fields(body, ("text",))
    text = body.get("text")
    if not isinstance(text, str):
        raise ApiError("bad_request", "text: expected the words to show on every page (an empty text clears the announcement)")
    if len(text) > MAX_ANNOUNCEMENT_TEXT:
        raise ApiError("bad_request", f"text: at most {MAX_ANNOUNCEMENT_TEXT} characters, found {len(text)}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON's "\ud800" escapes decode to lone surrogates, which no UTF-8 frame can carry
        raise ApiError("bad_request", "text: expected Unicode text, found a lone surrogate escape (\\ud800-\\udfff)") from None
    return text


async def _announce(request: web.Request) -> dict[str, Any]:
    text = announce_text(await _json_body(request))
    hub = _hub(request)
    message = hub.announce(text, _who(request))
    return {"at_us": message.at_us, "devices": len(hub.devices)}


async def _events(request: web.Request) -> dict[str, Any]:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise ApiError("bad_request", f"limit: expected an integer from 1 to 1000, found {raw[:16]!r}")
    events = _hub(request).store.recent_events(int(raw))
    return {"events": [event_document(event) for event in events]}


def _join_url(request: web.Request) -> str:
    hub = _hub(request)
    return hub.join_url or f"{request.scheme}://{request.host}/"


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def _not_allowed(allowed: str) -> Any:
    async def handle(request: web.Request) -> web.Response:
        response = error_response("method_not_allowed", f"{request.path} takes {allowed} only")
        response.headers["Allow"] = allowed
        return response

    return handle


async def _no_such_call(request: web.Request) -> web.Response:
    return error_response("not_found", f"no API call {request.path[:64]!r}: see /api/openapi.json")


# path -> (method, call, query parameters it takes)
ROUTES: dict[str, tuple[str, Any, tuple[str, ...]]] = {
    "/api/status": ("GET", _status, ()),
    "/api/start": ("POST", _scheduling("start"), ()),
    "/api/reschedule": ("POST", _scheduling("reschedule"), ()),
    "/api/abort": ("POST", _abort, ()),
    "/api/announce": ("POST", _announce, ()),
    "/api/events": ("GET", _events, ("limit",)),
}


def add_routes(app: web.Application) -> None:
    """The API's routes: /api/openapi.json (public) and the authorized calls.

    Another method on an API path gets a JSON 405 naming the one it takes
    (not the static files' GET that would otherwise be advertised), and any
    other /api/ path a JSON 404.
    """
    app.router.add_get("/api/openapi.json", _openapi, allow_head=False)
    app.router.add_route("*", "/api/openapi.json", _not_allowed("GET"))
    for path, (method, call, query) in ROUTES.items():
        app.router.add_route(method, path, _handler(call, query))
        app.router.add_route("*", path, _not_allowed(method))
    app.router.add_route("*", "/api/{tail:.*}", _no_such_call)
