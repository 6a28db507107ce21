"""Which group a device belongs to: balanced when it first comes, sticky after."""

from __future__ import annotations

import random
from collections import Counter


class GroupAssigner:
    """Assigns each new device to the group with the fewest devices (ties at random).

    ``rng`` is injected so tests are deterministic. Assignments are kept for
    the life of the process; persistence across restarts comes with the store.
    """

    def __init__(self, groups: tuple[str, ...], rng: random.Random | None = None) -> None:
        if not groups:
            raise ValueError("groups: expected at least one group")
        self.groups = groups
        self._rng = rng or random.Random()
        self._by_device: dict[str, str] = {}
        self._counts: Counter[str] = Counter({g: 0 for g in groups})

    def assign(self, device_id: str) -> str:
        """The device's group: its earlier one if any, else the least populated."""
        group = self._by_device.get(device_id)
        if group is not None and group in self._counts:
            return group
        fewest = min(self._counts[g] for g in self.groups)
        group = self._rng.choice([g for g in self.groups if self._counts[g] == fewest])
        self._by_device[device_id] = group
        self._counts[group] += 1
        return group

    def __len__(self) -> int:
        return len(self._by_device)
