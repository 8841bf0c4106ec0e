"""OffsetTracker: only a contiguous prefix of completed offsets becomes committable."""

from __future__ import annotations

import pytest

from soma.bus.offsets import OffsetTracker


def test_a_later_completion_waits_for_earlier_ones() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.add(offset)
    assert tracker.complete(2) is False
    assert tracker.complete(1) is False
    assert tracker.committable is None
    assert tracker.complete(0) is True
    assert tracker.committable == 3
    assert tracker.complete(4) is False
    assert tracker.committable == 3
    assert tracker.complete(3) is True
    assert tracker.committable == 5
    assert tracker.in_flight == 0


def test_gaps_between_offsets_do_not_block_commits() -> None:
    tracker = OffsetTracker()
    for offset in (10, 12, 15):
        tracker.add(offset)
    tracker.complete(12)
    assert tracker.committable is None
    tracker.complete(10)
    assert tracker.committable == 13
    tracker.complete(15)
    assert tracker.committable == 16


def test_offsets_must_increase() -> None:
    tracker = OffsetTracker()
    tracker.add(3)
    tracker.complete(3)
    with pytest.raises(ValueError, match="not after 3"):
        tracker.add(3)
    assert tracker.last_added == 3
