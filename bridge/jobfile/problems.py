"""A problem found in a job file, phrased for the person who wrote it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Problem(BaseModel):
    """One thing wrong with a job file: the line it is on, what was expected there, how to fix it."""

    model_config = ConfigDict(frozen=True)

    line: int | None
    code: str
    message: str
    expected: str
    fix: str
    severity: Literal["error", "warning"] = "error"
