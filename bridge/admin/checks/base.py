"""What every check shares: the result and context types, the registry that `@check` fills in
the order the check modules are imported, and `run_checks`, which runs it in that order."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bridge.settings import Settings

Outcome = Literal["PASS", "FAIL", "SKIP"]
GROUPS = ("config", "nas", "slurm", "kubernetes", "watcher", "e2e")
ETC_SLURM_CONF = Path("/etc/slurm/slurm.conf")


@dataclass
class CheckResult:
    group: str
    name: str
    outcome: Outcome
    detail: str = ""
    hint: str = ""
    seconds: float = 0.0
    timings_s: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Failed(Exception):
    def __init__(self, detail: str, hint: str) -> None:
        super().__init__(detail)
        self.detail, self.hint = detail, hint


class Skipped(Exception):
    pass


@dataclass
class Context:
    config_path: Path | None
    e2e_user: str | None
    e2e_image: str | None
    e2e_timeout_s: float
    settings: Settings | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def s(self) -> Settings:
        if self.settings is None:
            raise Skipped("configuration did not load")
        return self.settings

    def slurm(self, *argv: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        env = self.s.slurm.env()
        return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=timeout_s, check=False)

    def slurm_conf_path(self) -> Path:
        return self.s.slurm.conf_path or Path(os.environ.get("SLURM_CONF") or ETC_SLURM_CONF)


CheckFn = Callable[[Context], str]
CHECKS: list[tuple[str, str, CheckFn]] = []


def check(group: str, name: str) -> Callable[[CheckFn], CheckFn]:
    def register(fn: CheckFn) -> CheckFn:
        CHECKS.append((group, name, fn))
        return fn

    return register


def run_checks(ctx: Context, only: set[str] | None = None) -> Iterator[CheckResult]:
    for group, name, fn in CHECKS:
        if only and group not in only and group != "config":
            continue
        started = time.monotonic()
        ctx.timings_s = {}
        try:
            detail = fn(ctx)
            result = CheckResult(group, name, "PASS", detail)
        except Failed as exc:
            result = CheckResult(group, name, "FAIL", exc.detail, exc.hint)
        except Skipped as exc:
            result = CheckResult(group, name, "SKIP", str(exc))
        except Exception as exc:
            result = CheckResult(group, name, "FAIL", f"unexpected error: {type(exc).__name__}: {exc}",
                                 "run with --verbose and report this")
        result.seconds = round(time.monotonic() - started, 2)
        result.timings_s = dict(ctx.timings_s)
        yield result
