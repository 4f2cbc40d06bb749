"""The slurm.conf lines the bridge needs: shown to the admin, or applied with a backup."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bridge.settings import Settings

_LINE = re.compile(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*(?:#.*)?$")
MARKER = "# --- slurm-k8s-bridge ---"


@dataclass(frozen=True)
class ConfLine:
    key: str
    value: str
    why: str


@dataclass(frozen=True)
class LineCheck:
    line: ConfLine
    found: str | None  # the value slurm.conf has now, None when missing

    @property
    def ok(self) -> bool:
        return self.found is not None and self.found.lower() == self.line.value.lower()


def required_lines(settings: Settings) -> list[ConfLine]:
    bin_dir = settings.slurm.skbridge_path.parent
    kube = settings.kubernetes
    timeout_s = max(120, int(kube.pod_ready_timeout_s + 60))
    kill_wait_s = max(30, kube.termination_grace_period_s + 10)
    return [
        ConfLine("PrologSlurmctld", str(bin_dir / "skbridge-prolog-slurmctld"), "creates the job's Pod; exit 1 requeues"),
        ConfLine("EpilogSlurmctld", str(bin_dir / "skbridge-epilog-slurmctld"), "collects results, deletes the Pod"),
        ConfLine("PrologEpilogTimeout", str(timeout_s), "above kubernetes.pod_ready_timeout_s"),
        ConfLine("JobSubmitPlugins", "lua", "job_submit.lua routes plain sbatch through the bridge"),
        ConfLine("KillWait", str(kill_wait_s), "above the Pod's terminationGracePeriodSeconds"),
        ConfLine("AccountingStoreFlags", "job_comment", "the watcher finds its jobs again by their --comment tag"),
    ]


def parse_conf(text: str) -> dict[str, str]:
    """key (lower case) -> value of the last assignment; node and partition lines are skipped."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        match = _LINE.match(raw)
        if match and match.group(1).lower() not in {"nodename", "partitionname", "nodeset", "frontendname"}:
            values[match.group(1).lower()] = match.group(2)
    return values


def check_conf(text: str, settings: Settings) -> list[LineCheck]:
    values = parse_conf(text)
    return [LineCheck(line, values.get(line.key.lower())) for line in required_lines(settings)]


def apply_conf(path: Path, settings: Settings) -> Path | None:
    """Set the required lines in place, keeping a timestamped backup; None when nothing changed."""
    text = path.read_text(encoding="utf-8")
    checks = check_conf(text, settings)
    if all(check.ok for check in checks):
        return None
    backup = path.with_name(f"{path.name}.skbridge-backup-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.copy2(path, backup)
    wrong = {check.line.key.lower(): check.line for check in checks if not check.ok}
    out = []
    for raw in text.splitlines():
        match = _LINE.match(raw)
        if match and match.group(1).lower() in wrong:
            out.append(f"# {raw}   # replaced by slurm-k8s-bridge install")
            continue
        out.append(raw)
    out += ["", MARKER, *(f"{line.key}={line.value}   # {line.why}" for line in wrong.values())]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return backup
