"""Issue 4: the prolog turns a Slurm allocation into a Ready Pod, against the real sandbox."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from bridge.slurm.jobinfo import parse_index_list
from tests.conftest import Sandbox, wait_for
from tests.jobs.conftest import Jobs, job_script

LONG = "SANDBOX_RUN_DURATION=10m"


def test_gpu_job_gets_a_pod_with_exactly_its_allocation(jobs: Jobs, sandbox: Sandbox) -> None:
    job_id = jobs.sbatch("skbalice", job_script("--cpus-per-task=4", "--mem=8G", "--gres=gpu:a100:2", env=(LONG,)))
    pod = jobs.wait_running(job_id)
    container = pod["spec"]["containers"][0]
    wanted = {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "2"}
    assert container["resources"]["requests"] == wanted
    assert container["resources"]["limits"] == wanted
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchFields"][0]["values"] == [sandbox.node_name]
    assert pod["spec"]["nodeName"] == sandbox.node_name
    # The GPU indices Slurm chose reach the Pod (index mode's NVIDIA_VISIBLE_DEVICES is pinned by the golden test).
    detail = sandbox.slurm("scontrol", "show", "job", "-d", job_id).stdout
    idx = detail.split("IDX:")[1].split(")")[0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["SLURM_JOB_GPUS"] == ",".join(map(str, parse_index_list(idx)))
    assert len(parse_index_list(idx)) == 2
    assert pod["metadata"]["annotations"]["slurm.schedmd.com/gpu-indices"] == env["SLURM_JOB_GPUS"]
    assert (env["SLURM_JOB_ID"], env["SLURM_JOB_USER"]) == (job_id, "skbalice")
    security = pod["spec"]["securityContext"]
    alice = pwd.getpwnam("skbalice")
    assert (security["runAsUser"], security["runAsGroup"], security["runAsNonRoot"]) == (alice.pw_uid, alice.pw_gid, True)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["terminationGracePeriodSeconds"] < 30  # the sandbox's KillWait


def test_claims_bind_pairwise_and_users_never_share(jobs: Jobs) -> None:
    alice_job = jobs.sbatch("skbalice", job_script(env=(LONG,)))
    bob_job = jobs.sbatch("skbbob", job_script(env=(LONG,)))
    claims = {}
    for job_id, user in ((alice_job, "skbalice"), (bob_job, "skbbob")):
        pod = jobs.wait_running(job_id)
        names = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
        assert names, "the Pod mounts the owner's NAS folder through a claim"
        for name in names:
            claim_path = f"/api/v1/namespaces/{jobs.namespace}/persistentvolumeclaims/{name}"
            wait_for(lambda path=claim_path: jobs.kube.request("GET", path)["status"].get("phase") == "Bound",  # type: ignore[misc]
                     timeout_s=30, what=f"claim {name} Bound")
            pvc = jobs.kube.request("GET", claim_path)
            pv = jobs.kube.request("GET", f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
            assert pv["status"]["phase"] == "Bound" and pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
            assert pv["spec"]["claimRef"]["name"] == name and pv["spec"]["claimRef"]["namespace"] == jobs.namespace
            claims[(user, name)] = pv["spec"]["hostPath"]["path"]
    alice_paths = {path for (user, _), path in claims.items() if user == "skbalice"}
    bob_paths = {path for (user, _), path in claims.items() if user == "skbbob"}
    assert str(jobs.settings.nas.home_root / "skbalice") in alice_paths
    assert str(jobs.settings.nas.home_root / "skbbob") in bob_paths
    assert not {name for _, name in claims if _ == "skbalice"} & {name for _, name in claims if _ == "skbbob"}
    assert not alice_paths & bob_paths


def test_the_pod_passes_restricted_pod_security_admission(jobs: Jobs, sandbox: Sandbox) -> None:
    labels = sandbox.core.read_namespace(jobs.namespace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    job_id = jobs.sbatch("skbalice", job_script(env=(LONG,)))
    pod = jobs.wait_running(job_id)  # admitted by the API server's PodSecurity admission
    # Control: the same Pod allowed to escalate privileges is refused by that same admission.
    spec = pod["spec"]
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{pod['metadata']['name']}-evil"},
            "spec": {k: v for k, v in spec.items() if k not in {"nodeName"}}}
    with pytest.raises(ApiException) as refused:
        sandbox.core.create_namespaced_pod(jobs.namespace, body, dry_run="All")
    assert refused.value.status == 403 and "PodSecurity" in refused.value.body, refused.value.body


def test_a_pod_without_room_requeues_the_job_and_leaves_nothing(jobs: Jobs, sandbox: Sandbox, gpu_blocker: str) -> None:
    job_id = jobs.sbatch("skbalice", job_script("--gres=gpu:a100:1", env=(LONG,)))
    wait_for(lambda: int(jobs.squeue_job(job_id).get("restart_cnt", 0)) >= 1, timeout_s=90,
             what="Slurm requeued the job")
    wait_for(lambda: not jobs.objects(job_id), timeout_s=30, what="the failed attempt's objects removed")
    state = sandbox.slurm("sinfo", "-h", "-N", "-n", sandbox.node_name, "-o", "%T").stdout.split()[0]
    assert "drain" not in state and "down" not in state, state
    assert "Kubernetes has no room" in (jobs.results("skbalice", job_id) / "bridge-status.json").read_text()


def test_running_the_prolog_twice_keeps_one_set_of_objects(jobs: Jobs, sandbox: Sandbox) -> None:
    job_id = jobs.sbatch("skbalice", job_script(env=(LONG,)))
    first_pod = jobs.wait_running(job_id)
    before = sorted(jobs.objects(job_id))
    again = subprocess.run([os.path.join(os.path.dirname(os.sys.executable), "skbridge"), "hook", "prolog", job_id,
                            "--config", str(sandbox.layout.bridge_config)], capture_output=True, text=True, timeout=120,
                           check=False)
    assert again.returncode == 0, again.stderr
    assert sorted(jobs.objects(job_id)) == before
    pod = jobs.pod(job_id)
    assert pod is not None and pod["metadata"]["uid"] == first_pod["metadata"]["uid"]


def test_a_refused_bridge_credential_keeps_the_job_queued(jobs: Jobs, sandbox: Sandbox, tmp_path: Path) -> None:
    # The API server refuses the bridge's token (expired, revoked): that is the admin's to fix,
    # so the prolog requeues without using up the job's attempts, and never rejects the job.
    job_id = jobs.sbatch("skbalice", job_script(env=(LONG,)))
    jobs.wait_running(job_id)
    config = yaml.safe_load(jobs.settings.kubernetes.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "expired-" + "0" * 32
    bad = tmp_path / "expired.kubeconfig"
    bad.write_text(yaml.safe_dump(config))
    env = {**sandbox.env, "SKBRIDGE_KUBERNETES__KUBECONFIG": str(bad), "SKBRIDGE_KUBERNETES__MAX_PROLOG_ATTEMPTS": "1",
           "SKBRIDGE_SLURM__HOOK_SOCKET_PATH": ""}
    again = subprocess.run([os.path.join(os.path.dirname(os.sys.executable), "skbridge"), "hook", "prolog", job_id],
                           env=env, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 1, "exit 1: slurmctld requeues the job"
    status = json.loads((jobs.results("skbalice", job_id) / "bridge-status.json").read_text())
    assert status["state"] == "requeued", status
    assert "credential" in status["reason"] and "401" in status["reason"], status["reason"]
