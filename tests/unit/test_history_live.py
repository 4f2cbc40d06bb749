"""Merging Slurm's live word into the job history (bridge.service.live), with squeue and sacct
replaced by fakes at the one boundary they cross: what is asked, what is written, how often."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bridge.history.store import JobHistory
from bridge.service import live
from bridge.service.live import LiveJob, LiveMerge
from bridge.settings import Settings


def job(job_id: str, state: str, *, uid: int = 1501, exit_code: int | None = None) -> LiveJob:
    return LiveJob(job_id=job_id, uid=uid, user="alice", state=state, node="vm" if state != "PENDING" else None,
                   gpus=1, submit=1000.0, start=None if state == "PENDING" else 1010.0,
                   end=1100.0 if exit_code is not None else None, partition="gpu", exit_code=exit_code, signal=0,
                   name=f"job-{job_id}.sh")


class FakeSlurm:
    def __init__(self) -> None:
        self.queue: list[LiveJob] = []
        self.accounting: list[LiveJob] = []
        self.calls: list[tuple[str, object]] = []

    def squeue(self, settings: Settings, *, user: str | None = None, job_ids: list[str] | None = None) -> list[LiveJob]:
        self.calls.append(("squeue", user if user is not None else tuple(job_ids or ())))
        return [j for j in self.queue if job_ids is None or j.job_id in job_ids]

    def sacct(self, settings: Settings, job_ids: list[str]) -> list[LiveJob]:
        self.calls.append(("sacct", tuple(job_ids)))
        return [j for j in self.accounting if j.job_id in job_ids]


@pytest.fixture
def slurm(monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    fake = FakeSlurm()
    monkeypatch.setattr(live, "squeue_jobs", fake.squeue)
    monkeypatch.setattr(live, "sacct_jobs", fake.sacct)
    return fake


def make(tmp_path: Path, refresh_s: float = 60.0) -> tuple[JobHistory, LiveMerge]:
    settings = Settings(history={"path": tmp_path / "h.sqlite", "live_refresh_s": refresh_s})  # type: ignore[arg-type]
    history = JobHistory(settings.history.path)
    return history, LiveMerge(settings, history)


def test_a_users_queue_updates_unfinished_jobs_and_adds_unknown_ones(tmp_path: Path, slurm: FakeSlurm) -> None:
    history, merge = make(tmp_path)
    history.record("10", state="PENDING", event="submitted", uid=1501, user="alice")
    history.record("11", state="COMPLETED", event="ended", uid=1501, user="alice")
    slurm.queue = [job("10", "RUNNING"), job("11", "COMPLETED", exit_code=0), job("12", "PENDING")]
    merge.refresh(uid=1501, user="alice")
    assert slurm.calls == [("squeue", "alice")]  # no sacct: every unfinished job was in the queue
    assert history.get("10").state == "RUNNING"  # type: ignore[union-attr]
    new = history.get("12")
    assert new is not None and new.uid == 1501 and new.name == "job-12.sh"
    assert [(e.event, e.detail, e.time) for e in history.events("12")] == [("submitted", "sbatch", 1000.0)]
    assert [e.event for e in history.events("11")] == ["ended"]  # a finished job is left as it is


def test_jobs_slurmctld_forgot_are_settled_by_one_sacct(tmp_path: Path, slurm: FakeSlurm) -> None:
    history, merge = make(tmp_path)
    for job_id in ("20", "21", "22"):
        history.record(job_id, state="RUNNING", uid=1501, user="alice")
    slurm.accounting = [job("20", "FAILED", exit_code=3), job("21", "RUNNING")]  # 21: its end never recorded
    merge.refresh(uid=1501, user="alice")
    assert slurm.calls == [("squeue", "alice"), ("sacct", ("20", "21", "22"))]
    settled = {job_id: history.get(job_id) for job_id in ("20", "21", "22")}
    assert (settled["20"].state, settled["20"].exit_code) == ("FAILED", 3)  # type: ignore[union-attr]
    assert settled["21"].state == "UNKNOWN" and settled["22"].state == "UNKNOWN"  # type: ignore[union-attr]
    assert history.unfinished(uid=1501) == []  # never asked about again


def test_an_admin_asks_only_about_unfinished_ids_and_nothing_when_none(tmp_path: Path, slurm: FakeSlurm) -> None:
    history, merge = make(tmp_path, refresh_s=0)
    merge.refresh(uid=None, user=None)
    assert slurm.calls == []
    history.record("30", state="PENDING", uid=1502, user="bob")
    slurm.queue = [job("30", "PENDING", uid=1502)]
    time.sleep(0.01)
    merge._last.clear()  # cold again: refreshed before the answer
    merge.refresh(uid=None, user=None)
    assert slurm.calls == [("squeue", ("30",))]


def test_one_refresh_per_period_and_a_warm_scope_refreshes_behind_the_answer(tmp_path: Path, slurm: FakeSlurm) -> None:
    history, merge = make(tmp_path, refresh_s=0.3)
    history.record("40", state="PENDING", uid=1501, user="alice")
    slurm.queue = [job("40", "PENDING")]
    for _ in range(5):
        merge.refresh(uid=1501, user="alice")
    assert len(slurm.calls) == 1
    slurm.queue = [job("40", "RUNNING")]
    time.sleep(0.35)
    merge.refresh(uid=1501, user="alice")  # warm: answered at once, Slurm asked in the background
    deadline = time.monotonic() + 5
    while history.get("40").state != "RUNNING" and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.02)
    assert history.get("40").state == "RUNNING" and len(slurm.calls) == 2  # type: ignore[union-attr]


def test_slurm_down_leaves_the_history_answering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.errors import TemporaryError

    def down(*args: object, **kwargs: object) -> list[LiveJob]:
        raise TemporaryError("slurmctld not responding")

    monkeypatch.setattr(live, "squeue_jobs", down)
    history, merge = make(tmp_path)
    history.record("50", state="RUNNING", uid=1501, user="alice")
    merge.refresh(uid=1501, user="alice")  # logged, not raised
    assert history.get("50").state == "RUNNING"  # type: ignore[union-attr]
