"""The organizer's HTTP API, described as an OpenAPI 3.1 document.

This document is the contract: ``server/api.py`` implements it, the CLI and
the console call it, and ``tests/server/test_openapi.py`` checks the running
server against it with schemathesis. The server serves it at
``/api/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from protocol.messages import MAX_ANNOUNCEMENT_TEXT, SHOW_STATES

# The longest lead the API accepts, in seconds: a start at most a day ahead.
MAX_LEAD_S = 86_400

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {
            "type": "string",
            "description": "A stable code: unauthorized, bad_request, not_found, method_not_allowed, invalid_state, "
            "too_soon, too_far, not_ready.",
        },
        "message": {"type": "string", "description": "What went wrong and what to do, for people."},
    },
}

_SNAPSHOT = {
    "type": "object",
    "required": ["epoch", "state", "start_us", "start_time"],
    "properties": {
        "epoch": {"type": "integer", "minimum": 0},
        "state": {"type": "string", "enum": list(SHOW_STATES)},
        "start_us": {"type": ["integer", "null"], "description": "Server time of the show's position 0 (µs since the Unix epoch)."},
        "start_time": {"type": ["string", "null"], "format": "date-time", "description": "start_us as RFC 3339, in the server's timezone."},
    },
}

_GROUP_COUNTS = {
    "type": "object",
    "required": ["connected", "downloaded", "unlocked", "synced", "ready"],
    "properties": {name: {"type": "integer", "minimum": 0} for name in ("connected", "downloaded", "unlocked", "synced", "ready")},
}

_STATUS = {
    "type": "object",
    "required": [
        "title", "show", "server_us", "server_time", "timezone", "devices", "groups", "funnel", "bounds",
        "laggards", "lead_min_ms", "ready_share", "ready_share_min", "clock", "join_url",
    ],
    "properties": {
        "title": {"type": "string"},
        "show": _SNAPSHOT,
        "server_us": {"type": "integer", "description": "The server's reference clock now (µs since the Unix epoch)."},
        "server_time": {"type": "string", "format": "date-time"},
        "timezone": {"type": "string", "description": "The server's timezone name, e.g. Europe/Paris or UTC."},
        "devices": {"type": "integer", "minimum": 0, "description": "Connected participant devices."},
        "groups": {"type": "object", "additionalProperties": _GROUP_COUNTS},
        "funnel": {
            **_GROUP_COUNTS,
            "description": "connected -> downloaded -> audio unlocked -> error bound <= 10 ms, over all groups. "
            "ready = all three at once.",
        },
        "phones": {
            "type": "object",
            "description": "What the phones report of themselves in `ready`: holding a screen wake lock, page hidden, "
            "output latency reported (and its mean, ms).",
            "required": ["wake_lock", "hidden", "latency_reported", "latency_mean_ms"],
            "properties": {
                "wake_lock": {"type": "integer", "minimum": 0},
                "hidden": {"type": "integer", "minimum": 0},
                "latency_reported": {"type": "integer", "minimum": 0},
                "latency_mean_ms": {"type": ["number", "null"]},
            },
        },
        "bounds": {
            "type": "object",
            "required": ["edges_ms", "counts", "unknown"],
            "description": "Histogram of the devices' error bounds: counts[i] devices have a bound <= edges_ms[i] "
            "(and above the edge before); the last count is above the last edge; unknown: no estimate yet.",
            "properties": {
                "edges_ms": {"type": "array", "items": {"type": "number"}},
                "counts": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "unknown": {"type": "integer", "minimum": 0},
            },
        },
        "laggards": {
            "type": "array",
            "description": "The devices holding the show back, worst first (at most 20).",
            "items": {
                "type": "object",
                "required": ["device", "group", "bound_ms", "rtt_ms", "reason"],
                "properties": {
                    "device": {"type": "string", "description": "The device id's first 8 characters."},
                    "group": {"type": "string"},
                    "bound_ms": {"type": ["number", "null"]},
                    "rtt_ms": {"type": ["number", "null"]},
                    "reason": {"type": "string", "description": "e.g. 'bound 35 ms', 'not downloaded', 'audio locked', 'silent 12 s'."},
                },
            },
        },
        "lead_min_ms": {
            "type": "integer",
            "minimum": 0,
            "description": "The shortest safe lead: what the slowest connected device needs to get the schedule.",
        },
        "ready_share": {"type": "number", "minimum": 0, "maximum": 1, "description": "ready / connected (1 with no device)."},
        "ready_share_min": {"type": "number", "description": "Below this share, a start needs confirm: true."},
        "clock": {
            "type": "object",
            "required": ["loop_lag_ms", "upstream_offset_ms", "upstream"],
            "properties": {
                "loop_lag_ms": {"type": "number", "description": "The event loop's recent p99 lag."},
                "upstream_offset_ms": {"type": ["number", "null"], "description": "Measured offset to the upstream NTP server, if any."},
                "upstream": {"type": ["string", "null"]},
            },
        },
        "join_url": {"type": "string", "description": "The URL participants open (and the QR code holds)."},
        "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}, "description": "The event log's latest lines."},
        "nodes": {
            "type": "array",
            "description": "The server nodes serving the show (one without a cluster); devices counts each node's own.",
            "items": {
                "type": "object",
                "required": ["node", "devices", "age_s", "loop_lag_ms", "upstream_offset_ms"],
                "properties": {
                    "node": {"type": "string"},
                    "devices": {"type": "integer", "minimum": 0},
                    "age_s": {"type": "number", "description": "How old this node's last summary is."},
                    "loop_lag_ms": {"type": ["number", "null"]},
                    "upstream_offset_ms": {"type": ["number", "null"]},
                },
            },
        },
    },
}

_START = {
    "type": "object",
    "description": "Exactly one of in_s and at.",
    "oneOf": [{"required": ["in_s"]}, {"required": ["at"]}],
    "properties": {
        "in_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_LEAD_S, "description": "Start this many seconds from now."},
        "at": {"type": "string", "format": "date-time", "description": "Start at this RFC 3339 time (with its offset)."},
        "confirm": {"type": "boolean", "default": False, "description": "Start even if fewer devices are ready than ready_share_min."},
    },
    "additionalProperties": False,
}

_EVENT = {
    "type": "object",
    "required": ["at_us", "time", "who", "action", "detail"],
    "properties": {
        "at_us": {"type": "integer"},
        "time": {"type": "string", "format": "date-time"},
        "who": {"type": "string", "description": "Which client did it and from where, e.g. 'console 192.0.2.7'; 'server' for the show's clock."},
        "action": {"type": "string", "description": "start, reschedule, abort, announce, playing, ended, server_start, ..."},
        "detail": {"type": "string"},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, description)


_AUTH_ERRORS = {"401": _err("No token or a wrong one (repeated wrong tokens are answered more and more slowly).")}
_START_RESPONSES = {
    "200": _json({"$ref": "#/components/schemas/Snapshot"}, "Scheduled."),
    "400": _err("A malformed body (error bad_request)."),
    "409": _err(
        "The show's state does not allow it (invalid_state); the start is sooner than lead_min_ms or in the past "
        "(too_soon) or more than a day ahead (too_far); or too few devices are ready and confirm was not given (not_ready)."
    ),
    **_AUTH_ERRORS,
}


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI 3.1 document."""
    secured: list[dict[str, list[str]]] = [{"token": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Unisono organizer API",
            "version": "1",
            "description": "Run a show: status, start, reschedule, abort, announce, event log. "
            "Send the organizer token as 'Authorization: Bearer TOKEN'. Times are µs since the Unix epoch "
            "on the server's reference clock, or RFC 3339 strings.",
        },
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR, "Snapshot": _SNAPSHOT, "Status": _STATUS, "Start": _START, "Event": _EVENT},
        },
        "security": secured,
        "paths": {
            "/api/status": {
                "get": {
                    "operationId": "status",
                    "summary": "Everything the console shows, now.",
                    "responses": {"200": _json({"$ref": "#/components/schemas/Status"}, "The status."), **_AUTH_ERRORS},
                }
            },
            "/api/start": {
                "post": {
                    "operationId": "start",
                    "summary": "Schedule the show (from idle or ended).",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Start"}}}},
                    "responses": _START_RESPONSES,
                }
            },
            "/api/reschedule": {
                "post": {
                    "operationId": "reschedule",
                    "summary": "Move a scheduled start to another time (before it is reached).",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Start"}}}},
                    "responses": _START_RESPONSES,
                }
            },
            "/api/abort": {
                "post": {
                    "operationId": "abort",
                    "summary": "Stop the show (scheduled or playing) on every device.",
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Snapshot"}, "Back to idle."),
                        "409": _err("Nothing to abort (invalid_state)."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/announce": {
                "post": {
                    "operationId": "announce",
                    "summary": "Show a text prominently on every participant page (and later joiners').",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["text"],
                                    "properties": {
                                        "text": {
                                            "type": "string",
                                            "maxLength": MAX_ANNOUNCEMENT_TEXT,
                                            "description": "An empty text clears the announcement on every page.",
                                        }
                                    },
                                    "additionalProperties": False,
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["at_us", "devices"],
                                "properties": {"at_us": {"type": "integer"}, "devices": {"type": "integer", "minimum": 0}},
                            },
                            "Sent.",
                        ),
                        "400": _err("No text, or too long (bad_request)."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/events": {
                "get": {
                    "operationId": "events",
                    "summary": "The event log, newest last.",
                    "parameters": [
                        {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}
                    ],
                    "responses": {
                        "200": _json(
                            {"type": "object", "required": ["events"], "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}}},
                            "The latest events.",
                        ),
                        "400": _err("A bad limit (bad_request)."),
                        **_AUTH_ERRORS,
                    },
                }
            },
        },
    }
