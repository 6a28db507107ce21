"""server.groups: balanced by weight, ties at random, sticky per device, store-backed."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from server.groups import GroupAssigner, MemoryStore


def test_equal_weights_balance_exactly() -> None:
    """With equal weights, 100 devices split 50/50."""
    assigner = GroupAssigner(("red", "blue"), random.Random(1))
    counts = Counter(assigner.assign(f"device-{i:04d}") for i in range(100))
    assert counts == {"red": 50, "blue": 50}


def test_weights_set_the_shares() -> None:
    """Weights 2:1:1 give 60:30:30 of 120 devices, and never stray more than one device from the share."""
    assigner = GroupAssigner(("a", "b", "c"), random.Random(2), weights={"a": 2, "b": 1, "c": 1})
    for i in range(120):
        assigner.assign(f"device-{i:04d}")
        counts = assigner.counts()
        n = i + 1
        for group, share in (("a", 0.5), ("b", 0.25), ("c", 0.25)):
            assert abs(counts[group] - share * n) <= 1.5
    assert assigner.counts() == {"a": 60, "b": 30, "c": 30}


def test_fractional_weights() -> None:
    """Weights 0.5 and 1.5 give 1:3."""
    assigner = GroupAssigner(("x", "y"), random.Random(3), weights={"x": 0.5, "y": 1.5})
    for i in range(40):
        assigner.assign(f"device-{i:04d}")
    assert assigner.counts() == {"x": 10, "y": 30}


def test_ties_are_broken_at_random() -> None:
    """The first device of a fresh show lands in either group depending on the rng."""
    firsts = {GroupAssigner(("red", "blue"), random.Random(seed)).assign("device-0001") for seed in range(20)}
    assert firsts == {"red", "blue"}


def test_a_device_keeps_its_group() -> None:
    """The same device id gets the same group every time, and is counted once."""
    assigner = GroupAssigner(("red", "blue"), random.Random(4))
    first = assigner.assign("device-sticky")
    for i in range(10):
        assigner.assign(f"device-{i:04d}")
        assert assigner.assign("device-sticky") == first
    assert len(assigner) == 11


def test_a_store_carries_assignments_over() -> None:
    """A new assigner on the same store keeps old devices in their groups and counts them for balance."""
    store = MemoryStore()
    before = GroupAssigner(("red", "blue"), random.Random(5), store=store)
    groups = {f"device-{i:04d}": before.assign(f"device-{i:04d}") for i in range(9)}
    after = GroupAssigner(("red", "blue"), random.Random(6), store=store)
    assert all(after.assign(d) == g for d, g in groups.items())
    assert after.counts() == before.counts()
    fewer = min(after.counts(), key=lambda g: after.counts()[g])
    assert after.assign("device-new1") == fewer


def test_a_stored_group_the_show_no_longer_has_is_reassigned() -> None:
    """A device stored in a group that is gone is assigned to a current group."""
    store = MemoryStore()
    store.put("device-old1", "green")
    assigner = GroupAssigner(("red", "blue"), random.Random(7), store=store)
    assert assigner.assign("device-old1") in ("red", "blue")
    assert store.get("device-old1") in ("red", "blue")


@pytest.mark.parametrize("weights", [{"red": 0}, {"red": -1}, {"green": 1}])
def test_bad_weights_are_refused(weights: dict[str, float]) -> None:
    """A weight that is not positive, or for a group not in the show, raises ValueError."""
    with pytest.raises(ValueError):
        GroupAssigner(("red", "blue"), weights=weights)
