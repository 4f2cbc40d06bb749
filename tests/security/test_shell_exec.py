"""Issue 17, interactive: a job's credential may exec into that job's own Pod, and only when the
job is an interactive one (`skbridge shell`). Real jobs, real tokens, real exec through the
API server to the kubelet; every refusal is the API server's 403."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest
from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from bridge.kubernetes.access import INTERACTIVE_JOB_NAME
from bridge.kubernetes.client import load_client
from bridge.kubernetes.lite import ATTACH_KUBECONFIG
from tests.jobs.conftest import Jobs, job_script

SHELL_JOB = job_script(f"--job-name={INTERACTIVE_JOB_NAME}", body="sleep 300")
PLAIN_JOB = job_script(body="sleep 300")


def _exec(kubeconfig: Path, namespace: str, pod: str, command: list[str]) -> str:
    """Run `command` in the Pod's job container with that credential; its output."""
    api = load_client(kubeconfig, timeout_s=10).api_client
    return str(stream(kube_client.CoreV1Api(api).connect_get_namespaced_pod_exec, pod, namespace, container="job",
                      command=command, stdin=False, stdout=True, stderr=True, tty=False))


def _assert_forbidden(kubeconfig: Path, namespace: str, pod: str) -> None:
    with pytest.raises(ApiException) as refused:
        _exec(kubeconfig, namespace, pod, ["id", "-u"])
    assert "403" in str(refused.value) and "pods/exec" in str(refused.value), str(refused.value)[:400]


def _start(jobs: Jobs, user: str, text: str, name: str) -> tuple[str, Path]:
    job_id = jobs.sbatch(user, text, name=name)
    pod = jobs.wait_running(job_id, timeout_s=90)
    assert pod["metadata"]["name"] == f"skb-{job_id}-r0"
    return pod["metadata"]["name"], jobs.results(user, job_id) / ATTACH_KUBECONFIG


def test_exec_reaches_only_the_jobs_own_interactive_pod(jobs: Jobs) -> None:
    ns = jobs.namespace
    alice_pod, alice_cred = _start(jobs, "skbalice", SHELL_JOB, "shell-a.sh")
    alice2_pod, alice2_cred = _start(jobs, "skbalice", SHELL_JOB, "shell-b.sh")
    bob_pod, bob_cred = _start(jobs, "skbbob", SHELL_JOB, "shell-bob.sh")
    plain_pod, plain_cred = _start(jobs, "skbalice", PLAIN_JOB, "plain.sh")

    # Its own interactive Pod: the shell runs as the job's user, never root.
    assert _exec(alice_cred, ns, alice_pod, ["id", "-u"]).strip() == str(pwd.getpwnam("skbalice").pw_uid)
    assert _exec(bob_cred, ns, bob_pod, ["id", "-u"]).strip() == str(pwd.getpwnam("skbbob").pw_uid)
    # bob's own job credential against alice's interactive Pod.
    _assert_forbidden(bob_cred, ns, alice_pod)
    # One of alice's jobs against another of her Pods, interactive or not.
    _assert_forbidden(alice_cred, ns, alice2_pod)
    _assert_forbidden(alice2_cred, ns, plain_pod)
    # A batch job's credential gets no exec, not even into its own Pod.
    _assert_forbidden(plain_cred, ns, plain_pod)
