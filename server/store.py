"""What outlives the server process: the show's state, group assignments, the event log.

``SqliteStore`` is the embedded default (one file in the data dir, no extra
service). Every change is committed before the server tells anyone about it,
so a server killed at any instant restarts into a state no device has gone
past: a schedule that was sent is a schedule that was stored.

SQLite in WAL mode with ``synchronous=NORMAL`` loses no committed transaction
when the process dies (only a power cut may lose the last ones); a commit is a
few tens of microseconds, so the calls are made on the event loop directly.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from server.groups import AssignmentStore, GroupAssigner, MemoryStore
from server.show import ShowSnapshot

log = logging.getLogger("unisono.store")

SCHEMA_VERSION = 2
# Events kept in memory for the console's live log; the database keeps them all.
RECENT_EVENTS = 200


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the event log: who did what, when (server time, µs)."""

    at_us: int
    who: str
    action: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StoredShow:
    """The show's state as stored: its snapshot and which show it belongs to."""

    snapshot: ShowSnapshot
    show_key: str


class Store(Protocol):
    """Where the server keeps what must survive a restart (and, in a cluster, what nodes share)."""

    assignments: AssignmentStore

    def make_assigner(self, groups: tuple[str, ...], weights: Mapping[str, float]) -> Assigner: ...

    def load_show(self) -> StoredShow | None: ...

    def save_show(self, stored: StoredShow) -> bool:
        """Store the show's state; False if a newer one is stored already (another node won)."""
        ...

    def save_announcement(self, text: str, at_us: int) -> None: ...

    def load_announcement(self) -> tuple[str, int] | None: ...

    def log_event(self, event: Event) -> None: ...

    def recent_events(self, limit: int) -> list[Event]: ...

    def close(self) -> None: ...


class Assigner(Protocol):
    """Gives each device its group (``server.groups.GroupAssigner`` and the cluster's)."""

    def assign(self, device_id: str) -> str: ...

    def counts(self) -> dict[str, int]: ...


class MemoryShowStore:
    """Everything in memory: for tests and throwaway servers; lost when the process ends."""

    def __init__(self) -> None:
        self.assignments: AssignmentStore = MemoryStore()
        self._show: StoredShow | None = None
        self._announcement: tuple[str, int] | None = None
        self._events: deque[Event] = deque(maxlen=RECENT_EVENTS * 10)

    def make_assigner(self, groups: tuple[str, ...], weights: Mapping[str, float]) -> Assigner:
        return GroupAssigner(groups, weights=weights, store=self.assignments)

    def load_show(self) -> StoredShow | None:
        return self._show

    def save_show(self, stored: StoredShow) -> bool:
        self._show = stored
        return True

    def save_announcement(self, text: str, at_us: int) -> None:
        self._announcement = (text, at_us)

    def load_announcement(self) -> tuple[str, int] | None:
        return self._announcement

    def log_event(self, event: Event) -> None:
        self._events.append(event)

    def recent_events(self, limit: int) -> list[Event]:
        return list(self._events)[-limit:] if limit > 0 else []

    def close(self) -> None:
        pass


class _SqliteAssignments:
    """Device id -> group, in the ``assignments`` table.

    When the file cannot be written (a full disk), an assignment is kept in
    memory instead, so devices still join and keep their group while this
    process runs; the next successful write stores those too.
    """

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path
        self._unsaved: dict[str, str] = {}

    def get(self, device_id: str) -> str | None:
        unsaved = self._unsaved.get(device_id)
        if unsaved is not None:
            return unsaved
        row = self._db.execute("SELECT grp FROM assignments WHERE device_id = ?", (device_id,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, device_id: str, group: str) -> None:
        self._unsaved[device_id] = group
        try:
            with store_errors(self._path, "store a group assignment"):
                self._db.executemany(
                    "INSERT INTO assignments (device_id, grp) VALUES (?, ?) "
                    "ON CONFLICT (device_id) DO UPDATE SET grp = excluded.grp",
                    list(self._unsaved.items()),
                )
        except StoreError as exc:
            if len(self._unsaved) == 1:  # the first assignment that could not be stored: say it once
                log.error("%s; keeping assignments in memory until it can", exc)
            return
        self._unsaved.clear()

    def items(self) -> Iterator[tuple[str, str]]:
        stored = {str(d): str(g) for d, g in self._db.execute("SELECT device_id, grp FROM assignments")}
        stored.update(self._unsaved)
        return iter(list(stored.items()))


class StoreError(RuntimeError):
    """The state cannot be read or written (a full disk, an unwritable file, an unreachable Redis); the text says which and why."""


@contextmanager
def store_errors(
    where: object, action: str, errors: tuple[type[Exception], ...] = (sqlite3.Error, OSError)
) -> Iterator[None]:
    """Turn ``errors`` raised while doing ``action`` into a StoreError naming ``where`` (a file, a Redis) and the cause.

    The default: SQLite's and the OS's errors, for the state file.
    """
    try:
        yield
    except errors as exc:
        raise StoreError(f"{where}: cannot {action}: {exc}") from exc


class SqliteStore:
    """The embedded store: one SQLite file (``<data_dir>/unisono.sqlite3`` by default)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with store_errors(path, "use the state file"):
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: each statement is its own transaction, committed when it returns.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        self.assignments: AssignmentStore = _SqliteAssignments(self._db, path)

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: written by a newer Unisono (schema {version}, this one knows {SCHEMA_VERSION})")
        if version == SCHEMA_VERSION:
            return
        if version < 1:
            self._create_v1()
        self._db.executescript(
            """
            BEGIN;
            CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
            PRAGMA user_version = 2;
            COMMIT;
            """
        )

    def _create_v1(self) -> None:
        self._db.executescript(
            """
            BEGIN;
            CREATE TABLE IF NOT EXISTS show_state (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                epoch INTEGER NOT NULL,
                state TEXT NOT NULL,
                start_ns INTEGER,
                show_key TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS assignments (device_id TEXT PRIMARY KEY, grp TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at_us INTEGER NOT NULL,
                who TEXT NOT NULL,
                action TEXT NOT NULL,
                detail TEXT NOT NULL
            );
            PRAGMA user_version = 1;
            COMMIT;
            """
        )

    def load_show(self) -> StoredShow | None:
        row = self._db.execute("SELECT epoch, state, start_ns, show_key FROM show_state WHERE id = 1").fetchone()
        if row is None:
            return None
        epoch, state, start_ns, show_key = row
        if state not in ("idle", "scheduled", "playing", "ended"):
            raise StoreError(f"{self.path}: unknown show state {state!r}")
        return StoredShow(ShowSnapshot(epoch=int(epoch), state=state, start_ns=start_ns), str(show_key))

    def make_assigner(self, groups: tuple[str, ...], weights: Mapping[str, float]) -> Assigner:
        return GroupAssigner(groups, weights=weights, store=self.assignments)

    def save_announcement(self, text: str, at_us: int) -> None:
        with store_errors(self.path, "store the announcement"):
            self._db.execute(
                "INSERT INTO kv (key, value) VALUES ('announcement', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (json.dumps({"text": text, "at_us": at_us}),),
            )

    def load_announcement(self) -> tuple[str, int] | None:
        row = self._db.execute("SELECT value FROM kv WHERE key = 'announcement'").fetchone()
        if row is None:
            return None
        item = json.loads(row[0])
        return str(item["text"]), int(item["at_us"])

    def save_show(self, stored: StoredShow) -> bool:
        snap = stored.snapshot
        with store_errors(self.path, "store the show's state"):
            self._db.execute(
                "INSERT INTO show_state (id, epoch, state, start_ns, show_key) VALUES (1, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch, state = excluded.state, "
                "start_ns = excluded.start_ns, show_key = excluded.show_key",
                (snap.epoch, snap.state, snap.start_ns, stored.show_key),
            )
        return True

    def log_event(self, event: Event) -> None:
        with store_errors(self.path, "store an event"):
            self._db.execute(
                "INSERT INTO events (at_us, who, action, detail) VALUES (?, ?, ?, ?)",
                (event.at_us, event.who, event.action, event.detail),
            )

    def recent_events(self, limit: int) -> list[Event]:
        rows = self._db.execute(
            "SELECT at_us, who, action, detail FROM events ORDER BY id DESC LIMIT ?", (max(0, limit),)
        ).fetchall()
        return [Event(int(a), str(w), str(act), str(d)) for a, w, act, d in reversed(rows)]

    def close(self) -> None:
        self._db.close()


def show_key(title: str, groups: tuple[str, ...], duration_ns: int) -> str:
    """What identifies a show across restarts: a stored schedule only resumes for the same show."""
    return json.dumps({"title": title, "groups": list(groups), "duration_ns": duration_ns}, sort_keys=True)
