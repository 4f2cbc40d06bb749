"""The job history store (SQLite WAL): a job's life, the listing's filters and paging, retention,
and writers that never fail the stage that calls them."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from bridge.history.record import history_of, record_job, record_note
from bridge.history.store import JobHistory, JobQuery, Update
from bridge.settings import Settings


def test_a_jobs_life_in_one_row_and_its_timeline(tmp_path: Path) -> None:
    history = JobHistory(tmp_path / "history.sqlite")
    history.record("42", state="PENDING", event="submitted", detail="api", uid=1501, user="alice", name="a.sh",
                   partition="gpu", submit_time=100.0, at=100.0)
    history.record("42", state="RUNNING", event="allocated", start_time=110.0, node="vm", gpus=2, at=110.0)
    history.record("42", state="RUNNING", event="pod ready", detail="skb-42-r0", at=112.0)
    history.record("42", state="COMPLETING", event="ended", end_time=150.0, exit_code=3, signal=0, at=150.0)
    history.record("42", state="FAILED", force_state=True, at=160.0)
    job = history.get("42")
    assert job is not None
    assert (job.state, job.uid, job.user, job.name, job.node, job.gpus, job.exit_code) == \
        ("FAILED", 1501, "alice", "a.sh", "vm", 2, 3)
    assert (job.submit_time, job.start_time, job.end_time) == (100.0, 110.0, 150.0)
    assert job.finished
    assert [(e.event, e.time, e.uid) for e in history.events("42")] == [
        ("submitted", 100.0, 1501), ("allocated", 110.0, 1501), ("pod ready", 112.0, 1501), ("ended", 150.0, 1501)]
    # WAL: readers go on while a writer commits.
    with sqlite3.connect(tmp_path / "history.sqlite") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_state_only_moves_forward_unless_forced(tmp_path: Path) -> None:
    history = JobHistory(tmp_path / "h.sqlite")
    history.record("7", state="RUNNING", event="allocated", uid=1)
    history.record("7", state="PENDING", event="submitted")  # the service's late word after the prolog's
    assert history.get("7").state == "RUNNING"  # type: ignore[union-attr]
    history.record("7", state="PENDING", force_state=True, event="requeued")
    assert history.get("7").state == "PENDING"  # type: ignore[union-attr]
    history.record("7", state="COMPLETED", event="ended")
    history.record("7", state="RUNNING")
    assert history.get("7").state == "COMPLETED"  # type: ignore[union-attr]
    assert [job.job_id for job in history.unfinished()] == []
    with pytest.raises(ValueError, match="not a history field"):
        history.record("7", colour="red")


def test_an_event_for_new_jobs_only(tmp_path: Path) -> None:
    history = JobHistory(tmp_path / "h.sqlite")
    history.record_many([Update("9", state="PENDING", event="submitted", event_if_new=True, values={"uid": 5})])
    history.record_many([Update("9", state="RUNNING", event="submitted", event_if_new=True)])
    assert [e.event for e in history.events("9")] == ["submitted"]
    assert history.get("9").state == "RUNNING"  # type: ignore[union-attr]


def test_query_scopes_filters_and_pages_newest_first(tmp_path: Path) -> None:
    history = JobHistory(tmp_path / "h.sqlite")
    now = 1_000_000.0
    updates = []
    for number in range(1, 31):
        uid = 1501 if number % 2 else 1502
        state = "RUNNING" if number > 27 else ("COMPLETED" if number % 3 else "FAILED")
        updates.append(Update(str(number), state=state, values={
            "uid": uid, "user": {1501: "alice", 1502: "bob"}[uid], "submit_time": now - (31 - number) * 3600,
            "end_time": None if state == "RUNNING" else now - (31 - number) * 3600 + 60}))
    history.record_many(updates)
    history.record("100_3", state="PENDING", uid=1501, user="alice", submit_time=now)  # an array task

    total, rows = history.query(JobQuery(uid=1501, limit=5))
    assert total == 16 and [r.job_id for r in rows] == ["100_3", "29", "27", "25", "23"]
    total, rows = history.query(JobQuery(uid=1501, limit=5, before_num=23))
    assert [r.job_id for r in rows] == ["21", "19", "17", "15", "13"]
    total, rows = history.query(JobQuery(uid=1501, limit=3, offset=2))
    assert [r.job_id for r in rows] == ["27", "25", "23"]
    total, rows = history.query(JobQuery(user="bob", states=frozenset({"FAILED"}), limit=100))
    assert {r.job_id for r in rows} == {"6", "12", "18", "24"} and total == 4
    # since: submitted then or later, or not finished then (a long job still running counts).
    total, rows = history.query(JobQuery(uid=1502, since=now - 5 * 3600, limit=100))
    assert [r.job_id for r in rows] == ["30", "28", "26"]
    assert {r.job_id for r in history.unfinished(uid=1502)} == {"28", "30"}
    assert {r.job_id for r in history.unfinished()} == {"28", "29", "30", "100_3"}


def test_prune_forgets_old_finished_jobs_never_unfinished_ones(tmp_path: Path) -> None:
    history = JobHistory(tmp_path / "h.sqlite")
    now = time.time()
    history.record("1", state="COMPLETED", event="ended", end_time=now - 40 * 86400, uid=1)
    history.record("2", state="RUNNING", event="allocated", start_time=now - 40 * 86400, uid=1, at=now - 40 * 86400)
    history.record("3", state="COMPLETED", event="ended", end_time=now - 86400, uid=1)
    history.note("file rejected", uid=1, detail="old.sh: no-image", at=now - 40 * 86400)
    assert history.prune(30 * 86400) == 1
    assert history.get("1") is None and history.events("1") == []
    assert history.get("2") is not None and history.get("3") is not None
    assert [e.event for e in history.events("2")] == ["allocated"]


def test_threads_share_the_file_each_with_its_own_connection(tmp_path: Path) -> None:
    history = JobHistory(tmp_path / "h.sqlite")
    errors: list[BaseException] = []

    def write(base: int) -> None:
        try:
            for n in range(50):
                history.record(str(base + n), state="PENDING", event="submitted", uid=base)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(1000 * (i + 1),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and history.count() == 200


def test_writers_log_and_swallow_every_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the history's folder should be")
    settings = Settings(history={"path": blocker / "history.sqlite", "busy_timeout_s": 0.1})  # type: ignore[arg-type]
    assert record_job(settings, "5", state="PENDING", event="submitted", uid=1) is False
    assert record_note(settings, "file rejected", uid=1, detail="x.sh") is False
    assert "job history not written" in capsys.readouterr().out


def test_a_locked_history_costs_a_writer_only_its_busy_timeout(tmp_path: Path) -> None:
    settings = Settings(history={"path": tmp_path / "h.sqlite", "busy_timeout_s": 0.1})  # type: ignore[arg-type]
    assert record_job(settings, "1", state="PENDING", uid=1)
    holder = sqlite3.connect(tmp_path / "h.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        assert record_job(settings, "2", state="PENDING", uid=1) is False  # gave up, did not raise
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert record_job(settings, "2", state="PENDING", uid=1)
    assert history_of(settings).get("2") is not None


def test_the_file_is_roots_alone(tmp_path: Path) -> None:
    history = JobHistory(tmp_path / "h.sqlite")
    history.record("1", state="PENDING", uid=1)
    assert (tmp_path / "h.sqlite").stat().st_mode & 0o077 == 0
