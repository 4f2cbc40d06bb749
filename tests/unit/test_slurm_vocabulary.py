"""One reading of Slurm's durations, timestamps and states for the whole bridge (a table test)."""

from __future__ import annotations

from datetime import datetime

import pytest

from bridge.slurm.vocabulary import base_state, duration_minutes, duration_s, is_live, timestamp_s

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "seconds"), [
    ("5", 300), ("05:30", 330), ("01:02:03", 3723), ("1-00", 86400), ("1-02:30", 95400), ("2-01:00:05", 176405),
    ("0:59", 59), ("UNLIMITED", None), ("Partition_Limit", None), ("N/A", None), ("", None), ("INVALID", None),
    ("1-xx", None),
])
def test_durations(text: str, seconds: int | None) -> None:
    assert duration_s(text) == seconds


@pytest.mark.parametrize(("text", "minutes"), [("5", 5), ("00:05:01", 6), ("00:04:59", 5), ("1-00:00:00", 1440),
                                               ("UNLIMITED", None)])
def test_time_limits_round_up_to_whole_minutes(text: str, minutes: int | None) -> None:
    assert duration_minutes(text) == minutes


def test_timestamps_are_the_controllers_local_time() -> None:
    assert timestamp_s("2026-11-23T12:48:35") == datetime(2026, 11, 23, 12, 48, 35).timestamp()
    assert timestamp_s("2026-11-23T12:48:35Z") == 1795438115.0
    for unset in ("N/A", "Unknown", "None", "", "soon"):
        assert timestamp_s(unset) is None


@pytest.mark.parametrize(("text", "live"), [
    ("RUNNING", True), ("PENDING", True), ("COMPLETING", True), ("REQUEUED", True), ("CONFIGURING", True),
    ("SUSPENDED", True), ("COMPLETED", False), ("CANCELLED by 1001", False), ("FAILED", False), ("TIMEOUT", False),
    ("OUT_OF_MEMORY", False), ("NODE_FAIL", False), ("RUNNING+", True),
])
def test_live_states(text: str, live: bool) -> None:
    assert is_live(text) is live
    assert base_state(text) == text.split(" ", maxsplit=1)[0].rstrip("+")
