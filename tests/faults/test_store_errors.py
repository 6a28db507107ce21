"""The failure paths behind the fault tests, in process: store errors, refused commands, wall-clock steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from clock.reference import ReferenceClock
from server import timebase
from server.config import ServerConfig
from server.hub import CommandRefused, Hub
from server.store import Event, MemoryShowStore, SqliteStore, StoredShow, StoreError
from server.timebase import ServerClock
from tests.conftest import small_show


def full_store(path: Path) -> SqliteStore:
    """A SqliteStore whose file may not grow by a page more (SQLite's own SQLITE_FULL)."""
    store = SqliteStore(path)
    store._db.execute("PRAGMA max_page_count = %d" % store._db.execute("PRAGMA page_count").fetchone()[0])
    return store


def test_a_full_database_raises_store_error_naming_the_file_and_the_cause(tmp_path: Path) -> None:
    """Writing events into a database at its page limit: StoreError with the path and 'full', not a sqlite3 error."""
    store = full_store(tmp_path / "state.sqlite3")
    with pytest.raises(StoreError, match=r"state\.sqlite3: cannot store an event: database or disk is full"):
        for i in range(10_000):
            store.log_event(Event(i, "test", "fill", "x" * 200))


def test_assignments_are_kept_in_memory_while_the_file_is_full_and_stored_after(tmp_path: Path) -> None:
    """Devices assigned while the file is full keep their group (get, items); once it has room they are all written."""
    store = full_store(tmp_path / "state.sqlite3")
    assignments = store.assignments
    rows = lambda: dict(store._db.execute("SELECT device_id, grp FROM assignments").fetchall())  # noqa: E731
    for i in range(2000):  # until the table needs a page more than it may have
        assignments.put(f"dev-{i:04d}", "red")
        if len(rows()) <= i:
            break
    else:
        raise AssertionError("the full file kept taking assignments")
    unsaved = f"dev-{i:04d}"
    assert assignments.get(unsaved) == "red" and (unsaved, "red") in list(assignments.items())
    store._db.execute("PRAGMA max_page_count = 100000")
    assignments.put("dev-late", "blue")
    assert rows()[unsaved] == "red" and rows()["dev-late"] == "blue"


class FailingStore(MemoryShowStore):
    def save_show(self, stored: StoredShow) -> bool:
        raise StoreError("state file: cannot store the show's state: database or disk is full")


def test_a_command_the_store_refuses_leaves_the_show_as_it_was(tmp_path: Path) -> None:
    """start_show with a failing store: CommandRefused store_failed, the machine still idle at its epoch."""
    hub = Hub(ServerConfig(data_dir=tmp_path), small_show(tmp_path), "token-0123456789abcdef", store=FailingStore())
    before = hub.show.snapshot
    with pytest.raises(CommandRefused) as refused:
        hub.start_show(hub.clock.now_ns() + 60_000_000_000)
    assert refused.value.code == "store_failed" and "disk is full" in refused.value.message
    assert hub.show.snapshot == before


def test_a_wall_clock_step_is_seen_once_and_server_time_does_not_move(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wall +1 h between two checks: check_wall reports it once, counts it; server time stays on the monotonic clock."""
    wall = [1_800_000_000_000_000_000]
    mono = [5_000_000_000]
    monkeypatch.setattr(timebase.time, "time_ns", lambda: wall[0])
    monkeypatch.setattr(timebase.time, "monotonic_ns", lambda: mono[0])
    clock = ServerClock(ReferenceClock(wall[0], mono[0]))
    assert clock.check_wall() is None
    mono[0] += 1_000_000_000
    wall[0] += 1_000_000_000 + 3_600_000_000_000
    assert clock.now_ns() == 1_800_000_001_000_000_000
    assert clock.check_wall() == 3_600_000_000_000
    assert clock.check_wall() is None
    assert clock.wall_health() == {"wall_drift_ms": 3_600_000.0, "wall_steps": 1}
