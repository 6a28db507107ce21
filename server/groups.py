"""Which group a device belongs to: balanced by weight when it first comes, sticky after."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Protocol


class AssignmentStore(Protocol):
    """Where assignments are kept: device id -> group name.

    ``MemoryStore`` keeps them for the life of the process; a persistent store
    (same three methods) keeps devices in their groups across restarts.
    """

    def get(self, device_id: str) -> str | None: ...

    def put(self, device_id: str, group: str) -> None: ...

    def items(self) -> Iterator[tuple[str, str]]: ...


class MemoryStore:
    """Assignments in a dict: lost when the server stops."""

    def __init__(self) -> None:
        self._groups: dict[str, str] = {}

    def get(self, device_id: str) -> str | None:
        return self._groups.get(device_id)

    def put(self, device_id: str, group: str) -> None:
        self._groups[device_id] = group

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._groups.items()))


class GroupAssigner:
    """Assigns each new device to the group with the fewest devices relative to its weight.

    A group of weight 2 gets twice the devices of a group of weight 1: a new
    device goes where ``count / weight`` is least, ties broken at random.
    A device keeps its group for as long as the store keeps it (a device whose
    stored group is no longer in the show is assigned afresh). ``rng`` is
    injected so tests are deterministic.
    """

    def __init__(
        self,
        groups: tuple[str, ...],
        rng: random.Random | None = None,
        weights: Mapping[str, float] | None = None,
        store: AssignmentStore | None = None,
    ) -> None:
        if not groups:
            raise ValueError("groups: expected at least one group")
        weights = dict(weights or {})
        for group, weight in weights.items():
            if group not in groups or not weight > 0:
                raise ValueError(f"weights: expected a positive weight for a group of the show, found {group!r}: {weight!r}")
        self.groups = groups
        self.weights = {g: float(weights.get(g, 1.0)) for g in groups}
        self._rng = rng or random.Random()
        self._store: AssignmentStore = store if store is not None else MemoryStore()
        self._counts: Counter[str] = Counter({g: 0 for g in groups})
        for _, group in self._store.items():
            if group in self._counts:
                self._counts[group] += 1

    def assign(self, device_id: str) -> str:
        """The device's group: its earlier one if any, else the least populated for its weight."""
        group = self._store.get(device_id)
        if group is not None and group in self._counts:
            return group
        # Compare count_a / weight_a with count_b / weight_b exactly: cross-multiplied, no float ties lost.
        best: list[str] = []
        for candidate in self.groups:
            if not best:
                best = [candidate]
                continue
            lhs = self._counts[candidate] * self.weights[best[0]]
            rhs = self._counts[best[0]] * self.weights[candidate]
            if lhs < rhs:
                best = [candidate]
            elif lhs == rhs:
                best.append(candidate)
        group = self._rng.choice(best)
        self._store.put(device_id, group)
        self._counts[group] += 1
        return group

    def counts(self) -> dict[str, int]:
        """Devices ever assigned to each group (connected or not)."""
        return dict(self._counts)

    def __len__(self) -> int:
        return sum(self._counts.values())
