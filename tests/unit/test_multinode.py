"""Multi-node jobs (issue 17): one Pod per allocated node, ranks that start together with a
rendezvous, a batch step that follows rank 0 and fails with any rank, and every rank collected."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from io import BytesIO
from typing import Any

import pytest

from bridge.collect.collector import Collected, rank_pods_of
from bridge.collect.records import JobRecords
from bridge.collect.summary import build_summary
from bridge.errors import TemporaryError
from bridge.hooks.attach import _Signals, follow_pod
from bridge.kubernetes.access import attach_identity
from bridge.kubernetes.objects import PodVerdict, judge_pod
from bridge.kubernetes.render import (
    ANNOTATION_HOSTFILE,
    ANNOTATION_RENDEZVOUS,
    MASTER_PORT,
    ObjectNames,
    render_job_ranks,
)
from bridge.kubernetes.rendezvous import Rank, check_addresses, rendezvous_annotations
from bridge.slurm.jobinfo import NodeAllocation
from tests.unit.test_render import REFERENCE, SCRIPT, Directives, reference_settings

pytestmark = pytest.mark.unit

TWO_NODES = replace(REFERENCE, nodes=(
    NodeAllocation(node="gpu01", cpus=8, memory_mib=32768, gpus=2, gpu_type="a100", gpu_indices=(1, 3)),
    NodeAllocation(node="gpu02", cpus=4, memory_mib=16384, gpus=1, gpu_type="h100", gpu_indices=(0,)),
))


def _env(pod: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in pod["spec"]["containers"][0]["env"]}


def test_a_two_node_job_renders_one_pod_per_node_sharing_the_attempts_volumes() -> None:
    rendered = render_job_ranks(reference_settings(), TWO_NODES, Directives(), SCRIPT, ["k8s-a", "k8s-b"])
    assert rendered.pod_names == ["skb-4242-r0", "skb-4242-r0-rank1"]
    kinds = [(obj["kind"], obj["metadata"]["name"]) for obj in rendered.objects]
    # The volumes once (rank 0 renders them), two Pods.
    assert len(kinds) == len(set(kinds))
    assert sum(1 for kind, _ in kinds if kind == "Pod") == 2
    pods = [obj for obj in rendered.objects if obj["kind"] == "Pod"]
    for rank, (pod, node, kube_node) in enumerate(zip(pods, TWO_NODES.nodes, ["k8s-a", "k8s-b"], strict=True)):
        terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == [kube_node]
        env = _env(pod)
        assert env["NODE_RANK"] == env["SLURM_NODEID"] == env["RANK"] == str(rank)
        assert env["SLURM_NNODES"] == env["WORLD_SIZE"] == "2"
        assert env["MASTER_PORT"] == str(MASTER_PORT)
        assert env["SLURM_JOB_NODELIST"] == "gpu01,gpu02"
        assert env["SLURM_JOB_GPUS"] == ",".join(map(str, node.gpu_indices))
        assert pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] == str(node.cpus)
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                  if "persistentVolumeClaim" in v}
        assert claims == {"skb-4242-r0-home", "skb-4242-r0-vol-datasets"}
        assert pod["spec"]["serviceAccountName"] == "skb-4242-r0-attach"
        # The gate loads the rendezvous before the script starts.
        assert ". /skb/rendezvous" in pod["spec"]["containers"][0]["command"][2]
        items = next(v for v in pod["spec"]["volumes"] if v["name"] == "skb")["downwardAPI"]["items"]
        assert {item["path"] for item in items} >= {"start", "rendezvous", "hostfile"}
    assert "# rank 1" in rendered.manifest_yaml


def test_a_one_node_job_renders_as_before_without_rank_variables() -> None:
    rendered = render_job_ranks(reference_settings(), REFERENCE, Directives(), SCRIPT, ["gpu01"])
    assert rendered.pod_names == ["skb-4242-r0"]
    env = _env(rendered.pod)
    assert "NODE_RANK" not in env and "MASTER_PORT" not in env
    assert "rendezvous" not in rendered.pod["spec"]["containers"][0]["command"][2]


def test_the_attach_role_names_every_rank_and_nothing_else() -> None:
    role = next(obj for obj in attach_identity("ns", TWO_NODES, "skb-4242-r0", ["skb-4242-r0-rank1"])
                if obj["kind"] == "Role")
    assert all(rule["resourceNames"] == ["skb-4242-r0", "skb-4242-r0-rank1"] for rule in role["rules"])


def test_the_rendezvous_names_rank_0_and_lists_every_rank_in_order() -> None:
    ranks = [Rank("skb-1-r0", "10.88.0.4", 8), Rank("skb-1-r0-rank1", "10.88.1.7", 4)]
    annotations = rendezvous_annotations(ranks)
    assert annotations[ANNOTATION_RENDEZVOUS] == "MASTER_ADDR=10.88.0.4\n"
    assert annotations[ANNOTATION_HOSTFILE] == "10.88.0.4 slots=8\n10.88.1.7 slots=4\n"


@pytest.mark.parametrize(("name", "split"), [
    ("skb-7-r0", ("skb-7-r0", 0)), ("skb-7-r0-rank1", ("skb-7-r0", 1)), ("skb-7-r1-rank12", ("skb-7-r1", 12)),
    ("skb-7-r0-rankx", ("skb-7-r0-rankx", 0)), ("skb-7-r0-rank01", ("skb-7-r0-rank01", 0)),
    ("skb-7-r0-rank", ("skb-7-r0-rank", 0)),
])
def test_a_pod_name_says_its_attempt_and_rank_as_admission_reads_it(name: str, split: tuple[str, int]) -> None:
    assert ObjectNames.split_rank(name) == split


def test_a_ready_verdict_carries_the_pods_address() -> None:
    ready = {"status": {"phase": "Running", "podIP": "10.88.1.9", "conditions": [{"type": "Ready", "status": "True"}]}}
    assert judge_pod(ready, unschedulable_for_s=0, unschedulable_grace_s=3) == PodVerdict(True, address="10.88.1.9")


def test_a_multi_node_rank_without_an_address_is_tried_again_and_one_rank_needs_none() -> None:
    check_addresses([Rank("skb-1-r0", None, 1)])
    with pytest.raises(TemporaryError):
        check_addresses([Rank("skb-1-r0", "10.88.0.4", 1), Rank("skb-1-r0-rank1", None, 1)])


def test_rank_pods_are_found_in_rank_order() -> None:
    pods = ["skb-7-r0-rank10", "skb-7-r0", "skb-7-r0-rank2", "skb-7-r1", "skb-7-r0-home", "skb-7-r0-rank1"]
    assert rank_pods_of(pods, "skb-7-r0") == ["skb-7-r0-rank1", "skb-7-r0-rank2", "skb-7-r0-rank10"]


class FakePod:
    """A Pod whose phase the test moves; deletion ends it with 143 (SIGTERM) like a kubelet."""

    def __init__(self, name: str, log: bytes = b"") -> None:
        self.name = name
        self.phase = "Running"
        self.exit_code: int | None = None
        self.log = log
        self.deleted = False
        self.lock = threading.Lock()

    def end(self, code: int) -> None:
        with self.lock:
            self.phase, self.exit_code = ("Succeeded" if code == 0 else "Failed"), code

    @property
    def pod(self) -> str:
        return self.name

    def get(self) -> dict[str, Any] | None:
        with self.lock:
            status: dict[str, Any] = {"phase": self.phase}
            if self.exit_code is not None:
                status["containerStatuses"] = [{"name": "job", "state": {"terminated": {
                    "exitCode": self.exit_code, "reason": "Error" if self.exit_code else "Completed"}}}]
            return {"kind": "Pod", "metadata": {"name": self.name, "resourceVersion": "1"}, "status": status}

    def watch(self, resource_version: str, timeout_s: float) -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + min(timeout_s, 0.3)
        while time.monotonic() < deadline:
            time.sleep(0.02)
            if self.exit_code is not None:
                yield {"type": "MODIFIED", "object": self.get()}
                return

    def follow_log(self) -> Iterator[bytes]:
        while self.exit_code is None:
            time.sleep(0.02)
        yield self.log

    def read_log(self) -> bytes:
        return self.log

    def delete(self, grace_period_s: int) -> None:
        self.deleted = True
        if self.exit_code is None:
            self.end(143)


class FakeJob:
    def __init__(self, ranks: int) -> None:
        self.pods = {f"skb-9-r0{'' if k == 0 else f'-rank{k}'}": FakePod(f"skb-9-r0{'' if k == 0 else f'-rank{k}'}",
                                                                             b"rank 0 says hi\n" if k == 0 else b"")
                     for k in range(ranks)}

    def rank(self, k: int) -> FakePod:
        return list(self.pods.values())[k]

    def access(self, name: str) -> Any:
        job = self

        class Access:
            def __getattr__(self, attr: str) -> Any:
                return getattr(job.pods[name], attr)

            @property
            def pod(self) -> str:
                return name

            def for_pod(self, other: str) -> Any:
                return job.access(other)

        return Access()


def _follow(job: FakeJob, signals: _Signals | None = None) -> tuple[list[int], BytesIO]:
    out = BytesIO()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(follow_pod(
        job.access("skb-9-r0"), "9", 5, out, signals, other_pods=tuple(list(job.pods)[1:]))), daemon=True)
    thread.start()
    return result, out


def _wait(result: list[int], timeout_s: float = 10) -> int:
    deadline = time.monotonic() + timeout_s
    while not result and time.monotonic() < deadline:
        time.sleep(0.02)
    assert result, "attach did not return"
    return result[0]


def test_attach_waits_for_every_rank_and_returns_zero_when_all_succeed() -> None:
    job = FakeJob(3)
    result, out = _follow(job)
    job.rank(0).end(0)
    time.sleep(0.5)
    assert not result, "rank 0 done, ranks 1 and 2 still running: the job is not over"
    job.rank(1).end(0)
    job.rank(2).end(0)
    assert _wait(result) == 0
    assert b"rank 0 says hi" in out.getvalue()


def test_a_rank_failing_while_rank_0_runs_stops_the_job_with_its_exit_code() -> None:
    job = FakeJob(2)
    result, out = _follow(job)
    job.rank(1).end(7)
    assert _wait(result) == 7
    assert job.rank(0).deleted, "rank 0 is stopped when another rank fails"
    assert b"rank 1 (Pod skb-9-r0-rank1) ended with exit code 7" in out.getvalue()


def test_rank_0_succeeding_and_a_rank_failing_after_it_fails_the_job() -> None:
    job = FakeJob(2)
    result, out = _follow(job)
    job.rank(0).end(0)
    time.sleep(0.3)
    job.rank(1).end(3)
    assert _wait(result) == 3
    assert b"rank 1" in out.getvalue()


def test_the_summary_reports_every_rank_and_the_first_failing_one(tmp_path: Any) -> None:
    records = JobRecords(tmp_path)
    records.append("9", attempt=0, state="running", reason="", pod="skb-9-r0", node="gpu01",
                   ranks=[{"rank": 0, "pod": "skb-9-r0", "node": "gpu01"}, {"rank": 1, "pod": "skb-9-r0-rank1",
                                                                             "node": "gpu02"}])
    collected = Collected(exit_code=0, pod={"status": {"phase": "Succeeded"}}, rank_exit_codes={1: 5})
    summary = build_summary(job_id="9", user="alice", collected=collected, records=records, allocation=None,
                            image=None, kube_node_of={}, collected_by="epilog")
    assert summary["exit_code"] == 5
    assert summary["state"] == "failed"
    assert [(r["rank"], r["node"], r["exit_code"]) for r in summary["ranks"]] == [(0, "gpu01", 0), (1, "gpu02", 5)]


SCONTROL_TWO_NODES = """JobId=77 JobName=ddp
   UserId=alice(1501) GroupId=alice(1501) MCS_label=N/A
   JobState=RUNNING Reason=None Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0
   RunTime=00:00:04 TimeLimit=00:10:00 TimeMin=N/A
   SubmitTime=2026-11-23T19:41:02 EligibleTime=2026-11-23T19:41:02
   StartTime=2026-11-23T19:41:02 EndTime=2026-11-23T19:51:04 Deadline=N/A
   Partition=gpu AllocNode:Sid=localhost:23160
   NodeList=skbnode2,vm
   BatchHost=vm
   NumNodes=2 NumCPUs=4 NumTasks=2 CPUs/Task=1 ReqB:S:C:T=0:0:*:*
{lines}
   StdOut=/nas/home/alice/out/77.out
"""


@pytest.mark.parametrize("lines", [
    "     Nodes=skbnode2 CPU_IDs=0-1 Mem=1024 GRES=gpu:h100:1(IDX:1)\n     Nodes=vm CPU_IDs=0-1 Mem=1024 GRES=gpu:a100:1(IDX:2)",
    "     Nodes=skbnode2,vm CPU_IDs=0-1 Mem=1024 GRES=",
])
def test_an_allocation_on_two_nodes_puts_the_batch_host_first(lines: str) -> None:
    from bridge.slurm.jobinfo import parse_scontrol_job

    allocation = parse_scontrol_job(SCONTROL_TWO_NODES.format(lines=lines))
    assert [node.node for node in allocation.nodes] == ["vm", "skbnode2"]
    assert [node.cpus for node in allocation.nodes] == [2, 2]
    assert all(node.memory_mib == 1024 for node in allocation.nodes)
    if "IDX" in lines:
        assert [(n.gpu_type, n.gpu_indices) for n in allocation.nodes] == [("a100", (2,)), ("h100", (1,))]


def test_the_summary_takes_slurms_exit_code_when_rank_0_was_stopped(tmp_path: Any) -> None:
    """Rank 1 failed with 3; attach stopped rank 0 (137) and exited 3, which Slurm records."""
    records = JobRecords(tmp_path)
    records.append("9", attempt=0, state="running", reason="", pod="skb-9-r0",
                   ranks=[{"rank": 0, "pod": "skb-9-r0"}, {"rank": 1, "pod": "skb-9-r0-rank1"}])
    collected = Collected(exit_code=None, pod=None, rank_exit_codes={1: 3})
    summary = build_summary(job_id="9", user="alice", collected=collected, records=records,
                            allocation=replace(TWO_NODES, exit_code="3:0"), image=None, kube_node_of={},
                            collected_by="epilog")
    assert (summary["exit_code"], summary["state"]) == (3, "failed")


def test_stopping_the_ranks_keeps_the_pod_of_one_that_ended() -> None:
    job = FakeJob(3)
    result, _out = _follow(job)
    job.rank(2).end(5)
    assert _wait(result) == 5
    assert job.rank(0).deleted and job.rank(1).deleted
    assert not job.rank(2).deleted, "the failed rank's Pod stays: its log is the job's reason"
