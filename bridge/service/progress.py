"""Training progress from a job's output: the last `epoch 3/10`, `step 1200/5000`, tqdm bar or `NN%`."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Most specific first; within one kind, the last match in the text wins.
_FRACTION = re.compile(r"\b(?P<kind>epoch|step|iter(?:ation)?|batch)\s*[:=#]?\s*\[?\s*(?P<done>\d+)\s*/\s*(?P<total>\d+)",
                       re.IGNORECASE)
_TQDM = re.compile(r"(?P<pct>\d{1,3})%\|")
_PERCENT = re.compile(r"(?<![\d.])(?P<pct>\d{1,3}(?:\.\d+)?)\s?%")


@dataclass(frozen=True)
class Progress:
    percent: float
    source: str  # "epoch 3/10", "tqdm 45%", "45%"
    eta_s: int | None

    def as_json(self) -> dict[str, object]:
        return {"percent": self.percent, "source": self.source, "eta_s": self.eta_s}


def _last_line_match(lines: list[str], pattern: re.Pattern[str]) -> re.Match[str] | None:
    for line in reversed(lines):
        found = list(pattern.finditer(line))
        if found:
            return found[-1]
    return None


def parse_progress(text: str, elapsed_s: float | None = None) -> Progress | None:
    """The progress the newest line that shows any says; ETA = elapsed * (100 - p) / p when elapsed is known.

    tqdm redraws with carriage returns, so each `\\r` starts a line too.
    """
    lines = [part for line in text.splitlines() for part in line.split("\r") if part.strip()]
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        fraction = [m for m in _FRACTION.finditer(line) if 0 <= int(m.group("done")) <= int(m.group("total")) > 0]
        if fraction:
            # An epoch counter beside a step counter on the same line: the epoch says more of the whole.
            chosen = ([m for m in fraction if m.group("kind").lower() == "epoch"] or fraction)[-1]
            done, total = int(chosen.group("done")), int(chosen.group("total"))
            return _make(100.0 * done / total, f"{chosen.group('kind').lower()} {done}/{total}", elapsed_s)
        tqdm = list(_TQDM.finditer(line))
        if tqdm:
            pct = float(tqdm[-1].group("pct"))
            if pct <= 100:
                return _make(pct, f"tqdm {int(pct)}%", elapsed_s)
        percent = list(_PERCENT.finditer(line))
        if percent:
            pct = float(percent[-1].group("pct"))
            if pct <= 100:
                return _make(pct, f"{percent[-1].group('pct')}%", elapsed_s)
    return None


def _make(percent: float, source: str, elapsed_s: float | None) -> Progress:
    percent = round(min(100.0, max(0.0, percent)), 1)
    eta: int | None = None
    if elapsed_s is not None and elapsed_s > 0 and percent > 0:
        eta = round(elapsed_s * (100.0 - percent) / percent)
    return Progress(percent=percent, source=source, eta_s=eta)
