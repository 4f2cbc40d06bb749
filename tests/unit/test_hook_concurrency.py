"""Hooks at once: a hook process slurmctld gave up on, two hooks of one job, two notes of one job."""

from __future__ import annotations

import socket

from bridge.hooks.server import _still_connected


def test_a_waiting_client_is_connected_and_a_closed_one_is_not() -> None:
    server_end, client_end = socket.socketpair()
    with server_end:
        assert _still_connected(server_end)
        assert _still_connected(server_end)  # asking twice reads nothing
        client_end.close()
        assert not _still_connected(server_end)


def test_hooks_of_one_job_run_one_at_a_time_and_other_jobs_alongside() -> None:
    import threading
    import time

    from bridge.hooks.server import _JobLocks

    locks = _JobLocks()
    running: dict[str, int] = {"7": 0, "8": 0}
    most: dict[str, int] = {"7": 0, "8": 0}
    guard = threading.Lock()

    def hook(job_id: str) -> None:
        with locks.one_at_a_time(job_id):
            with guard:
                running[job_id] += 1
                most[job_id] = max(most[job_id], running[job_id])
                both = running["7"] and running["8"]
            time.sleep(0.05)
            with guard:
                running[job_id] -= 1
            if both:
                seen_together.set()

    seen_together = threading.Event()
    threads = [threading.Thread(target=hook, args=(job_id,)) for job_id in ("7", "8", "7", "8", "7")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == {"7": 1, "8": 1}
    assert seen_together.is_set(), "two jobs' hooks ran side by side"
    assert not locks._locks, "no lock kept for a job with no hook running"


def test_concurrent_notes_of_one_job_lose_nothing(tmp_path: object) -> None:
    import threading
    from pathlib import Path

    from bridge.collect.records import JobRecords

    assert isinstance(tmp_path, Path)
    records = JobRecords(tmp_path / "jobs")

    def note(writer: int) -> None:
        for n in range(20):
            records.append("42", attempt=0, state="running", reason="", writer=writer, n=n)

    threads = [threading.Thread(target=note, args=(writer,)) for writer in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(records.attempts("42")) == 120
    assert not [p for p in (tmp_path / "jobs").iterdir() if p.name.endswith(".tmp")]
