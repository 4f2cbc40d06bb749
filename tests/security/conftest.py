"""Attacks as tests: a normal lab user trying to act as another, bypass a policy, or steer
what root does. Every test here runs against the real sandbox (Slurm, API server, NAS)."""

from __future__ import annotations

# The job fixtures (real sbatch as a lab user, the bridge's own client) and the drop-folder
# watcher fixtures, shared with tests/jobs and tests/ingest.
from tests.ingest.conftest import watcher  # noqa: F401
from tests.jobs.conftest import gpu_blocker, jobs  # noqa: F401
