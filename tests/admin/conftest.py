"""Admin tests use the job fixtures too (real sbatch as a lab user)."""

from __future__ import annotations

from tests.jobs.conftest import jobs  # noqa: F401
