"""What the organizer sees of the connected devices, summarized. Pure: time is passed in.

One pass over the devices gives the per-group counts, the readiness funnel
(connected -> downloaded -> audio unlocked -> bound <= 10 ms), the histogram of
error bounds, the laggards, and the safe lead time: the console, the HTTP API,
the ``overview`` message and /metrics all read this one summary.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol

from clock.session import DeviceSession

# Histogram buckets of error bounds, in ms (upper edges, inclusive); the last
# bucket counts every bound above the last edge.
BOUND_EDGES_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100)

# The schedule reaches a device in about half a round trip; a start must leave
# room for a few lost or delayed frames (TCP retransmits take about one more
# round trip each) plus the page's own work.
LEAD_RTT_FACTOR = 4
LEAD_MARGIN_MS = 500
LEAD_FLOOR_MS = 1000
# A device that answered no ping for this long is silent: a laggard, and not
# waited for (it catches up as a late joiner when it comes back).
SILENT_AFTER_NS = 10_000_000_000
MAX_LAGGARDS = 20


class DeviceView(Protocol):
    """What the summary reads of a connected device (``server.hub.Device``)."""

    device_id: str
    group: str
    session: DeviceSession
    loaded: bool
    unlocked: bool
    downloaded: float | None
    wake_lock: bool | None
    visible: bool | None
    output_latency_us: int | None


@dataclass
class PhoneCounts:
    """What the phones report of themselves (``ready``): track loaded, screen kept on, page hidden, output latency."""

    loaded: int = 0
    wake_lock: int = 0
    hidden: int = 0
    latency_reported: int = 0
    # Sum of the reported latencies (us), for the mean.
    latency_sum_us: int = 0

    def as_dict(self) -> dict[str, int | float | None]:
        mean = None if not self.latency_reported else round(self.latency_sum_us / self.latency_reported / 1000, 1)
        return {"wake_lock": self.wake_lock, "hidden": self.hidden, "latency_reported": self.latency_reported, "latency_mean_ms": mean}

    def add(self, other: PhoneCounts) -> None:
        _add(self, other)


@dataclass
class GroupCounts:
    connected: int = 0
    downloaded: int = 0
    unlocked: int = 0
    synced: int = 0
    ready: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Laggard:
    device: str
    group: str
    bound_ms: float | None
    rtt_ms: float | None
    reason: str
    # Sort key: larger is worse.
    badness: float

    def as_dict(self) -> dict[str, object]:
        return {"device": self.device, "group": self.group, "bound_ms": self.bound_ms, "rtt_ms": self.rtt_ms, "reason": self.reason}


@dataclass
class Fleet:
    """The summary of every connected device at one instant."""

    groups: dict[str, GroupCounts]
    funnel: GroupCounts
    bound_counts: list[int]
    bound_unknown: int
    laggards: list[Laggard]
    lead_min_ms: int
    bounds_ms: list[float] = field(default_factory=list)
    phones: PhoneCounts = field(default_factory=PhoneCounts)

    @property
    def devices(self) -> int:
        return self.funnel.connected

    def to_dict(self) -> dict[str, object]:
        """JSON-compatible, for sharing with the other nodes of a cluster (bounds_ms left out)."""
        return {
            "groups": {name: counts.as_dict() for name, counts in self.groups.items()},
            "funnel": self.funnel.as_dict(),
            "bound_counts": list(self.bound_counts),
            "bound_unknown": self.bound_unknown,
            "laggards": [{**lag.as_dict(), "badness": lag.badness} for lag in self.laggards],
            "lead_min_ms": self.lead_min_ms,
            "phones": dataclasses.asdict(self.phones),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fleet:
        return cls(
            groups={str(name): GroupCounts(**counts) for name, counts in data["groups"].items()},
            funnel=GroupCounts(**data["funnel"]),
            bound_counts=[int(c) for c in data["bound_counts"]],
            bound_unknown=int(data["bound_unknown"]),
            laggards=[Laggard(**lag) for lag in data["laggards"]],
            lead_min_ms=int(data["lead_min_ms"]),
            phones=PhoneCounts(**data.get("phones", {})),
        )

    @property
    def ready_share(self) -> float:
        return 1.0 if self.funnel.connected == 0 else self.funnel.ready / self.funnel.connected


def merge(fleets: Sequence[Fleet]) -> Fleet:
    """The summary of several nodes' devices as one: counts added, worst laggards and lead kept."""
    groups: dict[str, GroupCounts] = {}
    funnel = GroupCounts()
    bound_counts = [0] * (len(BOUND_EDGES_MS) + 1)
    laggards: list[Laggard] = []
    phones = PhoneCounts()
    for fleet in fleets:
        phones.add(fleet.phones)
        for name, counts in fleet.groups.items():
            _add(groups.setdefault(name, GroupCounts()), counts)
        _add(funnel, fleet.funnel)
        bound_counts = [a + b for a, b in zip(bound_counts, fleet.bound_counts)]
        laggards.extend(fleet.laggards)
    laggards.sort(key=lambda lag: -lag.badness)
    return Fleet(
        groups=groups,
        funnel=funnel,
        bound_counts=bound_counts,
        bound_unknown=sum(f.bound_unknown for f in fleets),
        laggards=laggards[:MAX_LAGGARDS],
        lead_min_ms=max((f.lead_min_ms for f in fleets), default=LEAD_FLOOR_MS),
        bounds_ms=[b for f in fleets for b in f.bounds_ms],
        phones=phones,
    )


def _add(target: GroupCounts | PhoneCounts, counts: GroupCounts | PhoneCounts) -> None:
    """Add ``counts`` into ``target``, field by field (two counters of the same class)."""
    for spec in dataclasses.fields(target):
        setattr(target, spec.name, getattr(target, spec.name) + getattr(counts, spec.name))


def lead_for_rtt_ms(rtt_ms: float) -> int:
    """The shortest safe lead for a device whose recent round trips take up to ``rtt_ms``."""
    return max(LEAD_FLOOR_MS, int(LEAD_RTT_FACTOR * rtt_ms + LEAD_MARGIN_MS + 0.999))


def summarize(
    devices: Iterable[DeviceView],
    now_ns: int,
    group_names: Sequence[str],
    synced_bound_ns: int,
    keep_bounds: bool = False,
) -> Fleet:
    """One pass over ``devices`` at server time ``now_ns``.

    ``synced_bound_ns``: a bound at or under this counts as synced.
    ``keep_bounds``: also keep every known bound (ms) for a histogram with other buckets (/metrics).
    """
    groups = {name: GroupCounts() for name in group_names}
    funnel = GroupCounts()
    bound_counts = [0] * (len(BOUND_EDGES_MS) + 1)
    unknown = 0
    laggards: list[Laggard] = []
    bounds_ms: list[float] = []
    phones = PhoneCounts()
    worst_rtt_ns = 0
    for device in devices:
        if device.loaded:
            phones.loaded += 1
        if device.wake_lock:
            phones.wake_lock += 1
        if device.visible is False:
            phones.hidden += 1
        if device.output_latency_us is not None:
            phones.latency_reported += 1
            phones.latency_sum_us += device.output_latency_us
        counts = groups.get(device.group)
        if counts is None:
            counts = groups[device.group] = GroupCounts()
        session = device.session
        bound_ns = session.bound_upper_ns(now_ns)
        rtt_ns = session.recent_rtt_ns()
        last = session.last_answer_ns
        silent_ns = None if last is None else now_ns - last
        downloaded = device.downloaded >= 1.0 if device.downloaded is not None else device.loaded
        synced = bound_ns is not None and bound_ns <= synced_bound_ns
        ready = downloaded and device.unlocked and synced
        for target in (counts, funnel):
            target.connected += 1
            target.downloaded += downloaded
            target.unlocked += device.unlocked
            target.synced += synced
            target.ready += ready
        if bound_ns is None:
            unknown += 1
        else:
            bound_ms = bound_ns / 1e6
            bound_counts[bisect.bisect_left(BOUND_EDGES_MS, bound_ms)] += 1
            if keep_bounds:
                bounds_ms.append(bound_ms)
        is_silent = silent_ns is not None and silent_ns > SILENT_AFTER_NS
        if rtt_ns is not None and not is_silent:
            worst_rtt_ns = max(worst_rtt_ns, rtt_ns)
        if not ready or is_silent:
            laggards.append(_laggard(device, bound_ns, rtt_ns, silent_ns, synced, downloaded))
    laggards.sort(key=lambda lag: -lag.badness)
    return Fleet(
        groups=groups,
        funnel=funnel,
        bound_counts=bound_counts,
        bound_unknown=unknown,
        laggards=laggards[:MAX_LAGGARDS],
        lead_min_ms=lead_for_rtt_ms(worst_rtt_ns / 1e6),
        bounds_ms=bounds_ms,
        phones=phones,
    )


def _laggard(
    device: DeviceView, bound_ns: float | None, rtt_ns: int | None, silent_ns: int | None, synced: bool, downloaded: bool
) -> Laggard:
    """Why ``device`` is not ready, worst reasons first, and how bad that is (for sorting)."""
    bound_ms = None if bound_ns is None else round(bound_ns / 1e6, 2)
    rtt_ms = None if rtt_ns is None else round(rtt_ns / 1e6, 1)
    reasons = []
    badness = 0.0
    if silent_ns is not None and silent_ns > SILENT_AFTER_NS:
        reasons.append(f"silent {silent_ns / 1e9:.0f} s")
        badness += 1e6 + silent_ns / 1e9
    if bound_ms is None:
        reasons.append("no clock estimate yet")
        badness += 1e4
    else:
        badness += bound_ms
        if not synced:
            reasons.append(f"bound {bound_ms:.1f} ms")
    if not downloaded:
        reasons.append("not downloaded")
        badness += 100
    if not device.unlocked:
        reasons.append("audio locked")
        badness += 10
    return Laggard(
        device=device.device_id[:8],
        group=device.group,
        bound_ms=bound_ms,
        rtt_ms=rtt_ms,
        reason=", ".join(reasons) or "not ready",
        badness=badness,
    )
