"""The organizer's status document: what ``GET /api/status`` returns and the console shows.

Its shape is the ``Status`` schema of ``server/openapi.py``; the organizer
websocket sends the same document in every ``overview`` (``status`` field).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from server.fleet import BOUND_EDGES_MS, Fleet
from server.show import ShowSnapshot
from server.store import Event

if TYPE_CHECKING:
    from server.hub import Hub

# Event-log lines the status carries (the API's /api/events has them all).
STATUS_EVENTS = 20


def local_time(server_ns: int) -> str:
    """Server time as an RFC 3339 string in the server's timezone, to the millisecond."""
    return datetime.fromtimestamp(server_ns / 1e9, tz=timezone.utc).astimezone().isoformat(timespec="milliseconds")


def timezone_name() -> str:
    """The server's timezone as people read it, e.g. 'CET (UTC+01:00)'."""
    now = datetime.now().astimezone()
    offset = now.strftime("%z")
    return f"{now.tzname()} (UTC{offset[:3]}:{offset[3:]})"


def snapshot_document(snapshot: ShowSnapshot) -> dict[str, Any]:
    """The API's ``Snapshot``: the show's state at one epoch."""
    start = snapshot.start_ns
    return {
        "epoch": snapshot.epoch,
        "state": snapshot.state,
        "start_us": None if start is None else start // 1000,
        "start_time": None if start is None else local_time(start),
    }


def event_document(event: Event) -> dict[str, Any]:
    """The API's ``Event``: one line of the event log."""
    return {
        "at_us": event.at_us,
        "time": local_time(event.at_us * 1000),
        "who": event.who,
        "action": event.action,
        "detail": event.detail,
    }


def nodes_document(hub: Hub, fleet_devices: int, now_ns: int) -> list[dict[str, Any]]:
    """The server nodes serving the show: this one, and in a cluster the others alive."""
    clock = hub.clock_health()
    name = hub.cluster.node if hub.cluster is not None else "this server"
    nodes = [{"node": name, "devices": fleet_devices, "age_s": 0.0, "loop_lag_ms": clock.get("loop_lag_ms"), "upstream_offset_ms": clock.get("upstream_offset_ms")}]
    if hub.cluster is not None:
        for peer in sorted(hub.cluster.peers.values(), key=lambda p: p.node):
            nodes.append(
                {
                    "node": peer.node,
                    "devices": peer.fleet.devices,
                    "age_s": round(max(0.0, now_ns / 1e9 - peer.at_s), 1),
                    "loop_lag_ms": peer.clock.get("loop_lag_ms"),
                    "upstream_offset_ms": peer.clock.get("upstream_offset_ms"),
                }
            )
    return nodes


def status_document(hub: Hub, fleet: Fleet, now_ns: int, join_url: str) -> dict[str, Any]:
    """Everything the console shows, as one JSON-compatible map (the API's ``Status``)."""
    events = list(hub.events)[-STATUS_EVENTS:]
    return {
        "title": hub.show_spec.title,
        "show": snapshot_document(hub.show.snapshot),
        "server_us": now_ns // 1000,
        "server_time": local_time(now_ns),
        "timezone": timezone_name(),
        "devices": fleet.devices,
        "groups": {name: counts.as_dict() for name, counts in fleet.groups.items()},
        "funnel": fleet.funnel.as_dict(),
        "phones": fleet.phones.as_dict(),
        "bounds": {"edges_ms": list(BOUND_EDGES_MS), "counts": fleet.bound_counts, "unknown": fleet.bound_unknown},
        "laggards": [laggard.as_dict() for laggard in fleet.laggards],
        "lead_min_ms": fleet.lead_min_ms,
        "ready_share": round(fleet.ready_share, 4),
        "ready_share_min": hub.config.ready_share_min,
        "clock": hub.clock_health(),
        "join_url": join_url,
        "nodes": nodes_document(hub, fleet_devices=hub.local_fleet().devices, now_ns=now_ns),
        "events": [event_document(event) for event in events],
    }
