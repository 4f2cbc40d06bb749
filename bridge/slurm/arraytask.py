"""An array task's name, `<arrayjob>_<task>`: its results folder and the form users type.

Apart from `bridge.slurm.jobinfo` (which re-exports it) so that `skbridge attach` can find
an array task's folder without importing the settings model.
"""

from __future__ import annotations


def array_task_name(array_job_id: str, array_task_id: str) -> str:
    """`12345_3` for a single array task; "" when either part is not a plain number."""
    if array_job_id.isascii() and array_job_id.isdigit() and array_task_id.isascii() and array_task_id.isdigit():
        return f"{array_job_id}_{array_task_id}"
    return ""
