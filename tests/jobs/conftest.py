"""Fixtures for whole jobs: real sbatch as a lab user, real hooks, real Pods on the sandbox."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.jobfile.spec import parse_job_text
from bridge.kubernetes.client import Kube, load_client
from bridge.kubernetes.objects import KIND_ORDER, collection_path
from bridge.kubernetes.render import LABEL_JOB_ID, LABEL_MANAGED_BY, LABEL_RESTART, MANAGED_BY, RenderedJob, render_job
from bridge.sandbox.images import JOB_IMAGE
from bridge.settings import Settings, load_settings
from bridge.slurm.jobinfo import JobAllocation, NodeAllocation
from tests.conftest import Sandbox, wait_for

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE"}


def job_script(*sbatch: str, env: tuple[str, ...] = (), results: str | None = None,
               body: str = "echo hello from the pod") -> str:
    """A job for the sandbox's real node. `SANDBOX_RUN_DURATION=` and `SANDBOX_EXIT_CODE=` in
    `env` become the script's own `sleep` and `exit` (they also still drive kwok nodes)."""
    lines = ["#!/bin/bash", "#SBATCH --mem=1G", "#SBATCH --time=10", *(f"#SBATCH {opt}" for opt in sbatch),
             f"#K8S_IMAGE={JOB_IMAGE}", *(f"#K8S_ENV={item}" for item in env)]
    if results:
        lines.append(f"#K8S_RESULTS={results}")
    played = dict(item.split("=", 1) for item in env if item.startswith("SANDBOX_"))
    tail = []
    if "SANDBOX_RUN_DURATION" in played:
        tail.append(f"sleep {played['SANDBOX_RUN_DURATION']}")
    if "SANDBOX_EXIT_CODE" in played:
        tail.append(f"exit {played['SANDBOX_EXIT_CODE']}")
    return "\n".join([*lines, body, *tail, ""])


@dataclass
class Jobs:
    sandbox: Sandbox
    settings: Settings
    kube: Kube
    submitted: list[str]

    @property
    def namespace(self) -> str:
        return self.settings.kubernetes.namespace

    def home(self, user: str) -> Path:
        """The user's NAS folder (a lab creates these; the sandbox test does it here)."""
        home = self.settings.nas.home_root / user
        if not home.is_dir():
            home.mkdir(parents=True)
            account = pwd.getpwnam(user)
            os.chown(home, account.pw_uid, account.pw_gid)
        (home / "out").mkdir(exist_ok=True)
        os.chown(home / "out", pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        return home

    def output_path(self, user: str, job_id: str) -> Path:
        return self.home(user) / "out" / f"{job_id}.out"

    def write_script(self, user: str, name: str, text: str) -> Path:
        path = self.home(user) / name
        path.write_text(text, encoding="utf-8")
        account = pwd.getpwnam(user)
        os.chown(path, account.pw_uid, account.pw_gid)
        return path

    def sbatch(self, user: str, text: str, *args: str, name: str = "job.sh") -> str:
        script = self.write_script(user, name, text)
        out = self.sandbox.slurm("sbatch", "--parsable", f"--output={self.home(user)}/out/%j.out",
                                 f"--chdir={self.home(user)}", *args, str(script), user=user)
        job_id = out.stdout.strip().split(";")[0]
        self.submitted.append(job_id)
        return job_id

    def squeue_job(self, job_id: str) -> dict[str, Any]:
        out = self.sandbox.slurm("squeue", "--json", "--jobs", job_id, check=False)
        jobs = json.loads(out.stdout).get("jobs") or [] if out.returncode == 0 else []
        return next((job for job in jobs if str(job["job_id"]) == job_id), {})

    def sacct(self, job_id: str) -> tuple[str, str]:
        out = self.sandbox.slurm("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode", check=False)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "|"
        state, _, code = line.partition("|")
        return state.split()[0] if state else "", code

    def wait_state(self, job_id: str, states: set[str], timeout_s: float = 120) -> str:
        found = {"state": ""}

        def reached() -> bool:
            found["state"] = self.sacct(job_id)[0]
            return found["state"] in states

        wait_for(reached, timeout_s=timeout_s, what=f"job {job_id} in {states} (last {found['state']})", interval_s=0.3)
        return found["state"]

    def completing(self, job_id: str) -> bool:
        out = self.sandbox.slurm("squeue", "--noheader", "--states=all", "--jobs", job_id, "--format=%T", check=False)
        return "COMPLETING" in out.stdout

    def wait_done(self, job_id: str, timeout_s: float = 120) -> tuple[str, str]:
        """The job's final state, once its EpilogSlurmctld has ended too.

        sacct says COMPLETED as soon as the batch step ends, while squeue still says
        COMPLETING until the epilog has collected the results: reading them in between races.
        """
        self.wait_state(job_id, TERMINAL, timeout_s)
        wait_for(lambda: not self.completing(job_id), timeout_s=timeout_s, what=f"job {job_id}'s epilog done")
        return self.sacct(job_id)

    def objects(self, job_id: str) -> list[str]:
        found = []
        for kind in KIND_ORDER:
            listing = self.kube.request("GET", collection_path(kind, None if kind == "PersistentVolume" else self.namespace),
                                        query={"labelSelector": f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_JOB_ID}={job_id}"})
            found += [f"{kind}/{item['metadata']['name']}" for item in listing.get("items") or []]
        return found

    def wait_no_objects(self, job_id: str, timeout_s: float = 60) -> None:
        wait_for(lambda: not self.objects(job_id), timeout_s=timeout_s, what=f"no objects of job {job_id}")

    def pod(self, job_id: str, restart: int = 0) -> dict[str, Any] | None:
        return self.kube.get_or_none(f"/api/v1/namespaces/{self.namespace}/pods/skb-{job_id}-r{restart}")

    def current_pod(self, job_id: str) -> dict[str, Any] | None:
        """The Pod of the job's latest attempt (a requeued job's is not `-r0`)."""
        listing = self.kube.request("GET", collection_path("Pod", self.namespace),
                                    query={"labelSelector": f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_JOB_ID}={job_id}"})
        pods = [item for item in listing.get("items") or [] if "-rank" not in item["metadata"]["name"]]
        return max(pods, key=lambda p: int(p["metadata"]["labels"].get(LABEL_RESTART, "0")), default=None)

    def wait_running(self, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        self.wait_state(job_id, {"RUNNING"}, timeout_s)
        wait_for(lambda: ((self.current_pod(job_id) or {}).get("status") or {}).get("phase") == "Running",
                 timeout_s=timeout_s, what=f"Pod of job {job_id} Running")
        pod = self.current_pod(job_id)
        assert pod is not None
        return pod

    def results(self, user: str, job_id: str) -> Path:
        return self.settings.nas.results_root / user / job_id

    def render(self, job_id: str, script: str, *, memory_mib: int = 1024) -> RenderedJob:
        """What the prolog would render for skbalice's one-CPU job `job_id` on the sandbox's node
        (for tests that make or probe the objects themselves)."""
        alice = pwd.getpwnam("skbalice")
        allocation = JobAllocation(
            job_id=job_id, name="probe", user="skbalice", uid=alice.pw_uid, gid=alice.pw_gid, groups=(alice.pw_gid,),
            partition="gpu", restart_count=0, time_limit_minutes=10, state="RUNNING", submit_time=0, start_time=0,
            nodes=(NodeAllocation(node=self.sandbox.node_name, cpus=1, memory_mib=memory_mib),))
        spec, problems = parse_job_text(script, self.settings.policy, self.settings.nas, owner="skbalice")
        assert spec is not None, problems
        return render_job(self.settings, allocation, spec, script)

    def hook_log(self) -> str:
        return self.settings.hook_log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def jobs(sandbox: Sandbox, users: dict[str, pwd.struct_passwd]) -> Iterator[Jobs]:
    settings = load_settings(sandbox.layout.bridge_config)
    kube = load_client(settings.kubernetes.kubeconfig, timeout_s=10)
    helper = Jobs(sandbox=sandbox, settings=settings, kube=kube, submitted=[])
    yield helper
    if helper.submitted:
        sandbox.slurm("scancel", *helper.submitted, check=False)


@pytest.fixture
def gpu_blocker(sandbox: Sandbox, test_namespace: str) -> Iterator[str]:
    """A foreign Pod holding every GPU of the node: Slurm does not know, Kubernetes has no room."""
    body = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "gpu-hog", "annotations": {"sandbox.skbridge.io/run-duration": "30m"}},
        "spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                     {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [sandbox.node_name]}]}]}}},
                 "tolerations": [{"operator": "Exists"}],
                 "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "hog", "image": JOB_IMAGE, "command": ["sleep", "1800"],
                                 "resources": {"limits": {"nvidia.com/gpu": "4"}}}]},
    }
    sandbox.core.create_namespaced_pod(test_namespace, body)
    wait_for(lambda: sandbox.core.read_namespaced_pod("gpu-hog", test_namespace).status.phase == "Running",
             timeout_s=60, what="the GPU hog running")
    yield test_namespace
    sandbox.core.delete_namespaced_pod("gpu-hog", test_namespace, grace_period_seconds=0)
    wait_for(lambda: not sandbox.core.list_namespaced_pod(test_namespace).items, timeout_s=60, what="GPU hog gone")


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def now() -> float:
    return time.time()
