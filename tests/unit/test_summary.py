"""One summary builder: the same keys whoever collected the job, values from root's record."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.collect.collector import Collected
from bridge.collect.records import JobRecords
from bridge.collect.summary import build_summary
from bridge.slurm.jobinfo import JobAllocation, NodeAllocation

ALLOCATION = JobAllocation(
    job_id="42", name="train", user="alice", uid=1501, gid=1501, groups=(1501,), partition="gpu", restart_count=1,
    time_limit_minutes=10, state="COMPLETED", submit_time=1_700_000_000, start_time=1_700_000_010,
    nodes=(NodeAllocation(node="vm", cpus=4, memory_mib=8192),))


def _pod(code: int) -> Collected:
    pod = {"metadata": {"name": "skb-42-r1"}, "status": {"phase": "Failed" if code else "Succeeded"}}
    return Collected(exit_code=code, pod_phase=pod["status"]["phase"], pod=pod)


@pytest.mark.parametrize(("history", "collected", "state", "reason"), [
    ([("running", "")], _pod(0), "completed", None),
    ([("running", "")], _pod(3), "failed", None),
    ([("requeued", "no room"), ("running", "")], _pod(0), "completed", None),
    ([("rejected", "line 3: bad option")], Collected(), "rejected", "line 3: bad option"),
    ([("running", ""), ("collect-failed", "results not collected: disk full")], _pod(0), "collect-failed",
     "results not collected: disk full"),
    ([], _pod(0), "completed", None),
])
def test_states_and_reasons(tmp_path: Path, history: list[tuple[str, str]], collected: Collected, state: str,
                            reason: str | None) -> None:
    records = JobRecords(tmp_path)
    for attempt, (what, why) in enumerate(history):
        records.append("42", attempt=attempt, state=what, reason=why,
                       **({"pod": f"skb-42-r{attempt}", "node": "vm", "gpus": 2, "gpu_indices": [1, 3]}
                          if what == "running" else {}))
    summary = build_summary(job_id="42", user="alice", collected=collected, records=records, allocation=ALLOCATION,
                            image="img", kube_node_of={"vm": "k8s-vm"}, collected_by="epilog")
    assert (summary["state"], summary["reason"]) == (state, reason)
    if any(what == "running" for what, _ in history):
        assert summary["kubernetes_node"] == "k8s-vm" and summary["gpus"]["indices"] == [1, 3]


def test_epilog_and_reaper_write_the_same_keys(tmp_path: Path) -> None:
    records = JobRecords(tmp_path)
    records.append("42", attempt=0, state="running", reason="", pod="skb-42-r0", node="vm")
    by_epilog = build_summary(job_id="42", user="alice", collected=_pod(0), records=records, allocation=ALLOCATION,
                              image="img", kube_node_of={}, collected_by="epilog")
    by_reaper = build_summary(job_id="42", user="alice", collected=_pod(0), records=records, allocation=None,
                              image=None, kube_node_of={}, collected_by="reaper", reason="job ended 300s ago")
    assert by_epilog.keys() == by_reaper.keys()
    assert (by_reaper["collected_by"], by_reaper["reason"], by_reaper["node"]) == ("reaper", "job ended 300s ago", "vm")
    assert records.attempts("42") and (tmp_path / "42.json").stat().st_mode & 0o077 == 0
