"""`skbridge test-suite`: checks a live installation, one line per check with a fix hint.

Groups: config, nas, slurm, kubernetes, watcher, e2e. Each check returns PASS, FAIL or SKIP
with a detail and, on failure, what to do about it. A check never raises: an unexpected
error is a FAIL that says so.

Each check module registers its checks when imported, so the imports below, in the order of
GROUPS, are the order the checks run and print in: the config check comes first because it
loads the settings every later check reads (tests/unit/test_check_registry.py pins the order).
"""

from __future__ import annotations

from bridge.admin.checks.base import GROUPS, Context, run_checks

# isort: off
from bridge.admin.checks import site  # noqa: F401  (config, nas)
from bridge.admin.checks import slurm  # noqa: F401
from bridge.admin.checks import kubernetes  # noqa: F401
from bridge.admin.checks import watcher  # noqa: F401
from bridge.admin.checks import e2e  # noqa: F401
# isort: on

__all__ = ["GROUPS", "Context", "run_checks"]
