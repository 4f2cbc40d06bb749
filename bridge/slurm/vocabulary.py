"""Slurm's words, read one way everywhere: job states, durations and timestamps.

Slurm prints durations as `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or `D-HH:MM:SS`
(`UNLIMITED` for none) and timestamps in the controller's local time without a zone.
"""

from __future__ import annotations

from datetime import datetime

# A job in one of these states may still run (or run again): its objects, files and history
# rows are not to be touched. Everything else is final.
LIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
                         "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"})
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                          "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"})
_UNSET = ("", "N/A", "NONE", "UNKNOWN", "(NULL)", "INVALID", "UNLIMITED", "PARTITION_LIMIT")


def base_state(text: str) -> str:
    """`CANCELLED by 1000` (sacct) or `RUNNING+` -> `CANCELLED`, `RUNNING`."""
    return text.strip().split(" ", 1)[0].rstrip("+").upper()


def is_live(state: str) -> bool:
    return base_state(state) in LIVE_STATES


def duration_s(text: str) -> int | None:
    """A Slurm duration in seconds; None for unset or unlimited. A bare number is minutes
    (as `--time=5` is), a pair `MM:SS`, as sbatch reads them."""
    value = text.strip()
    if value.upper() in _UNSET or not value[:1].isdigit():
        return None
    days_text, dash, clock = value.rpartition("-")
    try:
        days = int(days_text) if dash else 0
        parts = [int(part) for part in clock.split(":")]
    except ValueError:
        return None
    if dash:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = [*parts, 0, 0][:3]
    elif len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = parts[:3]
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def duration_minutes(text: str) -> int | None:
    """A time limit in whole minutes, rounded up as Slurm does; None for unlimited."""
    seconds = duration_s(text)
    return None if seconds is None else -(-seconds // 60)


def timestamp_s(text: str) -> float | None:
    """Slurm's local `YYYY-MM-DDTHH:MM:SS` (or an ISO time with a zone) -> seconds since the epoch."""
    value = text.strip()
    if value.upper() in _UNSET:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp()  # a naive time is local, as Slurm prints it
