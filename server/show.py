"""The show's state machine. Pure: time is passed in, nothing is sent from here.

Every transition lives in ``TRANSITIONS`` below (like h11's ``_state.py``):
the organizer's ``start`` and ``abort``, and the clock's ``reach_start`` and
``reach_end``. Every transition increases ``epoch``, which devices use to drop
stale schedules.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.messages import Schedule, ShowState

# (state, event) -> next state. Anything not listed is refused.
TRANSITIONS: dict[tuple[ShowState, str], ShowState] = {
    ("idle", "start"): "scheduled",
    ("ended", "start"): "scheduled",
    ("scheduled", "reschedule"): "scheduled",
    ("scheduled", "abort"): "idle",
    ("playing", "abort"): "idle",
    ("scheduled", "reach_start"): "playing",
    ("playing", "reach_end"): "ended",
}


class InvalidTransition(Exception):
    """An organizer command that the show's current state does not allow."""

    def __init__(self, event: str, state: ShowState) -> None:
        if event == "reschedule":
            hint = "; only a scheduled start can be moved" + ("" if state == "playing" else ", use start")
        else:
            hint = {"scheduled": "; abort first, or reschedule", "playing": "; abort first"}.get(state, "")
        super().__init__(f"cannot {event}: the show is {state}{hint}")
        self.event = event
        self.state = state


@dataclass(frozen=True, slots=True)
class ShowSnapshot:
    """The show's state at one epoch. ``start_ns``: server time of position 0."""

    epoch: int
    state: ShowState
    start_ns: int | None

    def to_message(self) -> Schedule:
        """The ``schedule`` message that tells devices about this state."""
        start_us = None if self.start_ns is None else self.start_ns // 1000
        return Schedule(epoch=self.epoch, state=self.state, start_us=start_us)


class ShowMachine:
    """idle -> scheduled(T) -> playing -> ended; abort back to idle.

    ``duration_ns`` is the length of the longest track: the show ends when it
    has played out.
    """

    def __init__(self, duration_ns: int, snapshot: ShowSnapshot | None = None) -> None:
        if duration_ns <= 0:
            raise ValueError(f"duration_ns: expected a positive duration, found {duration_ns}")
        self.duration_ns = duration_ns
        self.snapshot = snapshot or ShowSnapshot(epoch=0, state="idle", start_ns=None)

    @property
    def state(self) -> ShowState:
        return self.snapshot.state

    def start(self, start_ns: int) -> ShowSnapshot:
        """Schedule position 0 at server time ``start_ns``. Raises InvalidTransition."""
        return self._apply("start", start_ns)

    def reschedule(self, start_ns: int) -> ShowSnapshot:
        """Move a scheduled start to server time ``start_ns``. Raises InvalidTransition unless scheduled."""
        return self._apply("reschedule", start_ns)

    def abort(self) -> ShowSnapshot:
        """Back to idle. Raises InvalidTransition unless scheduled or playing."""
        return self._apply("abort", None)

    def advance(self, now_ns: int) -> list[ShowSnapshot]:
        """The clock-driven transitions due by server time ``now_ns``, applied in order."""
        changes: list[ShowSnapshot] = []
        start = self.snapshot.start_ns
        if self.state == "scheduled" and start is not None and now_ns >= start:
            changes.append(self._apply("reach_start", start))
        start = self.snapshot.start_ns
        if self.state == "playing" and start is not None and now_ns >= start + self.duration_ns:
            changes.append(self._apply("reach_end", start))
        return changes

    def next_deadline(self) -> int | None:
        """Server time of the next clock-driven transition, or None if there is none."""
        start = self.snapshot.start_ns
        if start is None:
            return None
        if self.state == "scheduled":
            return start
        if self.state == "playing":
            return start + self.duration_ns
        return None

    def _apply(self, event: str, start_ns: int | None) -> ShowSnapshot:
        state = self.snapshot.state
        target = TRANSITIONS.get((state, event))
        if target is None:
            raise InvalidTransition(event, state)
        self.snapshot = ShowSnapshot(
            epoch=self.snapshot.epoch + 1,
            state=target,
            start_ns=None if target == "idle" else start_ns,
        )
        return self.snapshot
