"""The SQLite store: the show state, assignments and the event log survive a reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.groups import GroupAssigner
from server.show import ShowSnapshot
from server.store import Event, MemoryShowStore, SqliteStore, StoredShow, StoreError, show_key

KEY = show_key("Show", ("red", "blue"), 10_000_000_000)


def test_show_state_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SqliteStore(path)
    assert store.load_show() is None
    stored = StoredShow(ShowSnapshot(epoch=3, state="scheduled", start_ns=1_700_000_000_123_456_789), KEY)
    store.save_show(stored)
    store.save_show(StoredShow(ShowSnapshot(epoch=4, state="scheduled", start_ns=1_700_000_001_000_000_000), KEY))
    store.close()
    again = SqliteStore(path)
    assert again.load_show() == StoredShow(ShowSnapshot(epoch=4, state="scheduled", start_ns=1_700_000_001_000_000_000), KEY)
    again.close()


def test_assignments_survive_and_keep_the_balance(tmp_path: Path) -> None:
    """A device keeps its group after a reopen, and new devices still balance against the stored ones."""
    path = tmp_path / "state.sqlite3"
    store = SqliteStore(path)
    assigner = GroupAssigner(("red", "blue"), store=store.assignments)
    first = {f"device-{i:04d}": assigner.assign(f"device-{i:04d}") for i in range(10)}
    store.close()
    store = SqliteStore(path)
    assigner = GroupAssigner(("red", "blue"), store=store.assignments)
    assert {device: assigner.assign(device) for device in first} == first
    assert assigner.counts() == {"red": 5, "blue": 5}
    assigner.assign("device-new-0001")
    assigner.assign("device-new-0002")
    assert assigner.counts() == {"red": 6, "blue": 6}
    store.close()


@pytest.mark.parametrize("make", [lambda p: SqliteStore(p / "s.sqlite3"), lambda p: MemoryShowStore()], ids=["sqlite", "memory"])
def test_event_log_keeps_order_and_limit(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    store = make(tmp_path)
    for i in range(5):
        store.log_event(Event(at_us=i, who="console 127.0.0.1", action="announce", detail=f"text {i}"))
    assert [e.detail for e in store.recent_events(3)] == ["text 2", "text 3", "text 4"]
    assert store.recent_events(0) == []
    assert len(store.recent_events(100)) == 5
    store.close()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not sqlite, just some bytes " * 100)
    with pytest.raises(StoreError, match="cannot use the state file"):
        SqliteStore(path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer Unisono"):
        SqliteStore(path)


def test_fleet_summaries_merge_across_nodes() -> None:
    """A cluster's view adds the nodes' counts, keeps the worst laggards and the longest safe lead."""
    from server.fleet import Fleet, GroupCounts, Laggard, PhoneCounts, merge

    def node(connected: int, ready: int, lead: int, lag: float) -> Fleet:
        return Fleet(
            groups={"red": GroupCounts(connected=connected, ready=ready)},
            funnel=GroupCounts(connected=connected, ready=ready),
            bound_counts=[connected, 0, 0, 0, 0, 0, 0, 0],
            bound_unknown=0,
            laggards=[Laggard("abcdefgh", "red", 30.0, 90.0, "bound 30.0 ms", lag)],
            lead_min_ms=lead,
            phones=PhoneCounts(wake_lock=connected, latency_reported=1, latency_sum_us=40_000),
        )

    one, two = node(3, 2, 1000, 30.0), node(5, 5, 2500, 80.0)
    merged = merge([one, Fleet.from_dict(two.to_dict())])
    assert merged.devices == 8 and merged.funnel.ready == 7 and merged.groups["red"].connected == 8
    assert merged.bound_counts[0] == 8 and merged.lead_min_ms == 2500
    assert [lag.badness for lag in merged.laggards] == [80.0, 30.0]
    assert merged.phones.as_dict() == {"wake_lock": 8, "hidden": 0, "latency_reported": 2, "latency_mean_ms": 40.0}
