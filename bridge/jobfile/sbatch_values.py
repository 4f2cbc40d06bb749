"""Slurm 22.05's readings of option values, for the forms the bridge accepts.

Each parser is total (None instead of raising) and accepts a strict subset of what Slurm
accepts, computing the same number Slurm does for it; anything else is refused, so an
accepted value can never mean more to Slurm than it meant to the site maxima.
References: src/common/proc_args.c `str_to_mbytes`, src/common/parse_time.c
`time_str2mins`, src/slurmctld/job_mgr.c `_valid_array_inx`.
"""

from __future__ import annotations

import re

UNLIMITED = 10**12  # minutes; longer than any site maximum
_MBYTES = re.compile(r"^([0-9]+)([KkMmGgTt][Bb]?)?$")
_FACTOR = {"M": 1, "G": 1024, "T": 1024 * 1024}
_TIME = re.compile(r"^(?:([0-9]+)-)?([0-9]+)(?::([0-9]+))?(?::([0-9]+))?$")
_COUNT = re.compile(r"^[0-9]+$")
_GPU_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_ARRAY_PART = re.compile(r"^([0-9]+)(?:-([0-9]+)(?::([0-9]+))?)?$")
_ARRAY_SET_CAP = 1_000_000


def count(value: str) -> int | None:
    return int(value) if _COUNT.match(value) else None


def mbytes(value: str) -> int | None:
    """`--mem` and friends in MiB, as `str_to_mbytes`: M by default, K rounds up, 0 is 0."""
    match = _MBYTES.match(value)
    if match is None:
        return None
    number, unit = int(match.group(1)), (match.group(2) or "M")[0].upper()
    if unit == "K":
        return (number + 1023) // 1024
    return number * _FACTOR[unit]


def time_minutes(value: str) -> int | None:
    """`time_str2mins`: minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S; seconds round up.

    UNLIMITED, INFINITE and -1 mean no limit, and so does 0 ("A time limit of zero requests
    that no time limit be imposed", sbatch(1)): all come back as UNLIMITED.
    """
    if value.upper() in {"UNLIMITED", "INFINITE", "-1"}:
        return UNLIMITED
    match = _TIME.match(value)
    if match is None:
        return None
    days_text, first, second, third = match.groups()
    if days_text is not None:
        # D-H[:M[:S]]: sscanf("%d-%d:%d:%d")
        seconds = int(days_text) * 86400 + int(first) * 3600 + int(second or 0) * 60 + int(third or 0)
    elif third is not None:
        seconds = int(first) * 3600 + int(second) * 60 + int(third)
    else:
        seconds = int(first) * 60 + int(second or 0)
    if seconds >= 2**31 - 1:
        return UNLIMITED  # Slurm's int would overflow: treat as longer than anything allowed
    minutes = (seconds + 59) // 60
    return UNLIMITED if minutes == 0 else minutes


def array_tasks(value: str) -> int | None:
    """How many distinct task ids `--array` makes (slurmctld keeps them in a bitmap)."""
    spec, throttle_sep, throttle = value.partition("%")
    if throttle_sep and not _COUNT.match(throttle):
        return None
    ids: set[int] = set()
    naive = 0
    for part in spec.split(","):
        match = _ARRAY_PART.match(part)
        if match is None:
            return None
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        step = int(match.group(3)) if match.group(3) is not None else 1
        if step < 1 or high < low:
            return None
        naive += (high - low) // step + 1
        if naive <= _ARRAY_SET_CAP:
            ids.update(range(low, high + 1, step))
    return len(ids) if naive <= _ARRAY_SET_CAP else naive  # beyond the cap: an upper bound, refused anyway


def typed_count(value: str) -> tuple[int, str | None] | None:
    """`--gpus`/`--gpus-per-node`/`--gpus-per-task`: N or TYPE:N, N >= 1."""
    kind, sep, number = value.rpartition(":")
    if not _COUNT.match(number) or int(number) < 1 or (sep and not _GPU_TYPE.match(kind)):
        return None
    return int(number), (kind or None)


def gres_gpus(value: str) -> tuple[int, str | None] | None:
    """`--gres` naming GPUs only, one item: gpu, gpu:N, gpu:TYPE or gpu:TYPE:N."""
    parts = value.split(":")
    if parts[0] != "gpu" or len(parts) > 3:
        return None
    if len(parts) == 1:
        return 1, None
    if len(parts) == 2:
        if _COUNT.match(parts[1]):
            return int(parts[1]), None
        return (1, parts[1]) if _GPU_TYPE.match(parts[1]) else None
    if not _GPU_TYPE.match(parts[1]) or not _COUNT.match(parts[2]):
        return None
    return int(parts[2]), parts[1]


def node_range_max(value: str) -> int | None:
    """`--nodes`: N or MIN-MAX; the most nodes the job may get."""
    low, dash, high = value.partition("-")
    if count(low) is None or (dash and count(high) is None):
        return None
    top = int(high) if dash else int(low)
    return top if top >= int(low) else None
