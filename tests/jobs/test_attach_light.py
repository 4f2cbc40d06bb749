"""Issue 14: the batch step's `skbridge attach` takes the light path (standard library, the
bundle the prolog writes into the job's kubeconfig) and falls back to the full path for a
job whose kubeconfig an older prolog wrote. Real sbatch, real Pods on the sandbox's node."""

from __future__ import annotations

import base64
import json
import os
import pwd
import subprocess
import uuid
from pathlib import Path

from bridge.kubernetes.kubeconfig import render_kubeconfig
from bridge.kubernetes.lite import ATTACH_EXTENSION, ATTACH_KUBECONFIG
from bridge.sandbox.manager import skbridge_bin
from tests.conftest import wait_for
from tests.jobs.conftest import Jobs, job_script

GATE = 'while [ ! -e "/workspace/go-$SLURM_JOB_ID" ]; do sleep 0.2; done'


def _trace_file(jobs: Jobs, user: str) -> Path:
    """A file the job's user may append to: attach notes there which path it took."""
    return jobs.home(user) / f"attach-trace-{uuid.uuid4().hex[:8]}"


def _release(jobs: Jobs, user: str, job_id: str) -> None:
    gate = jobs.home(user) / f"go-{job_id}"
    gate.touch()
    account = pwd.getpwnam(user)
    os.chown(gate, account.pw_uid, account.pw_gid)


def test_the_batch_step_takes_the_light_path_with_byte_exact_output(jobs: Jobs) -> None:
    trace = _trace_file(jobs, "skbalice")
    body = "\n".join(["printf 'first\\n\\tindented  \\n'", "seq 1 3000", "printf 'caf\\303\\251 '",
                      "printf 'no newline at the end'", "exit 3"])
    job_id = jobs.sbatch("skbalice", job_script(body=body), f"--export=ALL,SKBRIDGE_ATTACH_TRACE={trace}")
    assert jobs.wait_done(job_id) == ("FAILED", "3:0")
    log = ("first\n\tindented  \n" + "".join(f"{n}\n" for n in range(1, 3001)) + "café no newline at the end").encode()
    wait_for(lambda: jobs.output_path("skbalice", job_id).read_bytes().startswith(log), timeout_s=10,
             what="the whole log in the output")
    assert jobs.output_path("skbalice", job_id).read_bytes() == log + (
        f"skbridge attach: Pod skb-{job_id}-r0 ended Failed with exit code 3 (Error)\n").encode()
    assert trace.read_text().split() == [job_id, "light"]


def test_the_prolog_writes_the_bundle_into_the_kubeconfig_as_json(jobs: Jobs) -> None:
    job_id = jobs.sbatch("skbbob", job_script(body=GATE))
    jobs.wait_running(job_id)
    doc = json.loads((jobs.results("skbbob", job_id) / ATTACH_KUBECONFIG).read_bytes())
    bundle = next(item["extension"] for item in doc["extensions"] if item["name"] == ATTACH_EXTENSION)
    kube = jobs.settings.kubernetes
    assert bundle == {"job_id": job_id, "restart_count": 0, "pod": f"skb-{job_id}-r0", "namespace": kube.namespace,
                      "termination_grace_period_s": kube.termination_grace_period_s,
                      "api_timeout_s": kube.api_timeout_s}
    _release(jobs, "skbbob", job_id)
    assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")


def test_a_kubeconfig_from_an_older_prolog_still_attaches_through_the_full_path(jobs: Jobs) -> None:
    """The YAML kubeconfig the prolog wrote before the bundle: attach (run here as the job's
    user, as slurmd runs it) follows the same Pod through the official client."""
    user = "skbalice"
    job_id = jobs.sbatch(user, job_script(body="\n".join(["echo before the gate", GATE, "echo after the gate",
                                                          "exit 4"])))
    jobs.wait_running(job_id)
    path = jobs.results(user, job_id) / ATTACH_KUBECONFIG
    doc = json.loads(path.read_bytes())
    cluster = doc["clusters"][0]["cluster"]
    older = render_kubeconfig(server=cluster["server"], ca_pem=base64.b64decode(cluster["certificate-authority-data"]),
                              user_name=doc["users"][0]["name"], token=doc["users"][0]["user"]["token"],
                              namespace=jobs.namespace)
    path.write_text(older, encoding="utf-8")
    trace = _trace_file(jobs, user)
    attach = subprocess.Popen(
        ["runuser", "-u", user, "--", "env", f"SLURM_JOB_ID={job_id}", f"SLURM_JOB_USER={user}",
         "SLURM_RESTART_COUNT=0", f"SKBRIDGE_ATTACH_TRACE={trace}",
         str(skbridge_bin()), "attach", "--config", str(jobs.sandbox.layout.bridge_config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(trace.exists, timeout_s=30, what="attach started")
    _release(jobs, user, job_id)
    out, err = attach.communicate(timeout=120)
    assert attach.returncode == 4, err
    assert out == (b"before the gate\nafter the gate\n"
                   + f"skbridge attach: Pod skb-{job_id}-r0 ended Failed with exit code 4 (Error)\n".encode())
    assert trace.read_text().split() == [job_id, "full"]
    assert jobs.wait_done(job_id) == ("FAILED", "4:0")  # the batch step itself (light path) agrees
