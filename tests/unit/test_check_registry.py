"""`skbridge test-suite` runs and prints its checks in the registry's order, which the import
order of bridge/admin/checks/ decides: pin it, and keep each check module small."""

from __future__ import annotations

from pathlib import Path

import pytest

import bridge.admin.checks
from bridge.admin.checks.base import CHECKS, GROUPS

pytestmark = pytest.mark.unit

# The order as it was while every check lived in one module (bridge/admin/checks.py).
EXPECTED = [
    ("config", "configuration loads"),
    ("nas", "NAS folders exist with the right owner and mode"),
    ("slurm", "munge works"),
    ("slurm", "slurmctld answers"),
    ("slurm", "scheduler: backfill and multifactor priority"),
    ("slurm", "bridge hooks and the Lua plugin are configured"),
    ("slurm", "one road: the plugin enforces the policy in force"),
    ("slurm", "timeouts leave the hooks room"),
    ("kubernetes", "API answers with the bridge's credentials"),
    ("kubernetes", "RBAC allows exactly what the bridge needs"),
    ("kubernetes", "admission policy confines the bridge's credential"),
    ("kubernetes", "Slurm nodes map to Kubernetes nodes with the same CPUs, memory and GPUs"),
    ("kubernetes", "nodes run containers and hold the test image"),
    ("watcher", "the watcher service is running"),
    ("watcher", "the watcher runs the Slurm hooks warm"),
    ("watcher", "the running watcher uses the config file as it is now"),
    ("e2e", "a hello job goes drop → Slurm → Pod → results"),
]


def test_the_checks_run_in_the_order_they_always_had() -> None:
    assert [(group, name) for group, name, _ in CHECKS] == EXPECTED
    assert list(dict.fromkeys(group for group, _ in EXPECTED)) == list(GROUPS)


def test_no_check_module_exceeds_400_lines() -> None:
    folder = Path(bridge.admin.checks.__file__).parent
    modules = sorted(folder.glob("*.py"))
    assert len(modules) > 1
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in modules}
    assert all(lines <= 400 for lines in sizes.values()), sizes
