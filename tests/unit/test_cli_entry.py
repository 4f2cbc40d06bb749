"""The batch step's `skbridge attach` skips the CLI framework; everything else goes through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli.entry import _launcher_config
from bridge.jobfile.launcher import launcher_line

SKBRIDGE = str(Path(sys.executable).parent / "skbridge")


@pytest.mark.parametrize(("argv", "expected"), [
    (["attach"], (True, None)),
    (["attach", "--config", "/etc/x.yaml"], (True, Path("/etc/x.yaml"))),
    (["attach", "-c", "/etc/x.yaml"], (True, Path("/etc/x.yaml"))),
    (["attach", "--config=/etc/x.yaml"], (True, Path("/etc/x.yaml"))),
    (["attach", "--help"], (False, None)),
    (["attach", "--config"], (False, None)),
    (["validate", "job.sh"], (False, None)),
    ([], (False, None)),
])
def test_only_the_launcher_forms_take_the_short_way(argv: list[str], expected: tuple[bool, Path | None]) -> None:
    assert _launcher_config(argv) == expected


def test_the_launcher_line_is_one_of_those_forms() -> None:
    line = launcher_line(Path("/opt/slurm-k8s-bridge/bin/skbridge"), Path("/etc/slurm-k8s-bridge/config.yaml"))
    words = line.split("#", 1)[0].split()
    assert words[:2] == ["exec", "/opt/slurm-k8s-bridge/bin/skbridge"]
    assert _launcher_config(words[2:]) == (True, Path("/etc/slurm-k8s-bridge/config.yaml"))


def test_the_short_way_never_loads_the_cli_framework() -> None:
    probe = ("import sys; sys.argv = ['skbridge', 'attach']\n"
             "from bridge.cli import entry\n"
             "try:\n    entry.main()\nexcept SystemExit as exc:\n    code = exc.code\n"
             "print(code, 'typer' in sys.modules, 'rich' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env={})
    assert out.stdout.split() == ["2", "False", "False"]  # 2: not run by Slurm (no SLURM_JOB_ID)
    assert "batch step" in out.stderr


def test_attach_help_still_comes_from_the_cli() -> None:
    out = subprocess.run([SKBRIDGE, "attach", "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "Pod's exit code" in out.stdout
