"""Parsing Slurm's small value notations: TRES lists, GRES strings, durations, times, output paths."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from bridge.slurm.vocabulary import duration_s as slurm_duration_s
from bridge.slurm.vocabulary import timestamp_s

# One field separator Slurm's texts never hold (ASCII unit separator): free-text fields
# (job name, paths) go last in a record, so a stray separator there only lengthens them.
SEP = "\x1f"

_GRES_ITEM = re.compile(r"^gpu(?::(?P<type>[^:(,]+))?:(?P<count>\d+)(?:\((?P<extra>[^)]*)\))?$")


def split_record(line: str, fields: int) -> list[str]:
    """`fields` values from a SEP-joined line; the last value keeps any extra separators."""
    parts = line.split(SEP, fields - 1)
    if len(parts) < fields:
        parts += [""] * (fields - len(parts))
    parts[-1] = parts[-1].rstrip(SEP).rstrip("\n")
    return parts


_JOB_ID = re.compile(r"^\d+(?:[_+][\d\[\]\-,%]+)?(?:\.\w+)?$")


def job_records(text: str, fields: int) -> list[list[str]]:
    """Records of `fields` SEP-joined values, one per line, the first a job id and the last free
    text that may itself hold newlines (a job name can): a line that does not start a record
    continues the previous one's last value."""
    records: list[list[str]] = []
    for line in text.split("\n"):
        parts = line.split(SEP, fields - 1)
        if len(parts) == fields and _JOB_ID.match(parts[0].strip()):
            records.append(parts)
        elif records:
            records[-1][-1] += "\n" + line
    for record in records:
        record[-1] = record[-1].rstrip("\n").rstrip(SEP)
    return records


def none_if_unset(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "N/A", "(null)", "None", "Unknown", "n/a") else value


def tres_gpus(tres: str) -> int:
    """`cpu=2,mem=8G,gres/gpu=2,gres/gpu:a100=2` -> 2 (the untyped total wins)."""
    total = typed = 0
    for item in tres.split(","):
        key, _, value = item.partition("=")
        if key == "gres/gpu":
            total = _int(value)
        elif key.startswith("gres/gpu:"):
            typed += _int(value)
    return total or typed


def tres_value(tres: str, key: str) -> str | None:
    for item in tres.split(","):
        name, _, value = item.partition("=")
        if name == key:
            return value
    return None


def parse_gres(text: str) -> dict[str, int]:
    """`gpu:a100:4(S:0-1),gpu:v100:2` -> {"a100": 4, "v100": 2}; untyped GPUs count as "gpu"."""
    found: dict[str, int] = {}
    value = none_if_unset(text)
    if value is None:
        return found
    # Commas separate items but also appear inside (IDX:0,2): split only at depth 0.
    depth, item, items = 0, "", []
    for char in value:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            items.append(item)
            item = ""
        else:
            item += char
    items.append(item)
    for raw in items:
        match = _GRES_ITEM.match(raw.strip())
        if match is None:
            continue
        kind = match.group("type") or "gpu"
        found[kind] = found.get(kind, 0) + int(match.group("count"))
    return found


def duration_s(text: str) -> int | None:
    """Slurm durations -> seconds (None: unset or unlimited); one reading for the whole bridge."""
    return slurm_duration_s(text)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{text}" if days else text


def parse_time(text: str) -> datetime | None:
    """Slurm's local `YYYY-MM-DDTHH:MM:SS` (or an ISO time with zone) -> aware datetime (UTC)."""
    seconds = timestamp_s(text)
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def memory_mib(text: str) -> int | None:
    """`1G`, `512M`, `1024` (MiB), `2T` -> MiB."""
    value = none_if_unset(text)
    if value is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTP]?)[a-zA-Z]*", value)
    if match is None:
        return None
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}[match.group(2)]
    return int(float(match.group(1)) * scale)


def expand_output_path(pattern: str, *, job_id: str, user: str, name: str, node: str | None,
                       array_job: str | None = None, array_task: str | None = None) -> str:
    """Slurm's filename patterns (%j, %x, %u, %N, %A, %a, %%, zero padding like %4j)."""
    def one(match: re.Match[str]) -> str:
        width, letter = match.group(1), match.group(2)
        values = {"j": job_id, "J": job_id, "x": name, "u": user, "N": node or "", "n": "0", "t": "0", "s": "batch",
                  "A": array_job or job_id, "a": array_task or "4294967294", "%": "%"}
        value = values.get(letter)
        if value is None:
            return match.group(0)
        if width and value.isdigit():
            return value.zfill(int(width))
        return value

    if "\\" in pattern:  # a backslash anywhere turns off pattern expansion
        return pattern.replace("\\", "")
    return re.sub(r"%(\d*)([jJxuNntsAa%])", one, pattern)


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return 0
