"""Issue 14: a job's script starts only after its prolog has succeeded (the start gate).

The Pod's container waits for the annotation skbridge.io/start, which the prolog sets as its
last act; a requeued attempt (no room, API trouble, slurmctld giving up on the prolog) has
its Pod removed without a line of the script having run. Proven here in a real container.
"""

from __future__ import annotations

import pwd
import time

from bridge.kubernetes.objects import Made, create_objects, delete_objects, open_start_gate, wait_gone, wait_pod_ready
from bridge.kubernetes.render import ANNOTATION_SCRIPT, SCRIPT_ANNOTATION_MAX_BYTES
from tests.conftest import wait_for
from tests.jobs.conftest import Jobs, job_script


def _phase(jobs: Jobs, name: str) -> str:
    pod = jobs.kube.get_or_none(f"/api/v1/namespaces/{jobs.namespace}/pods/{name}") or {}
    return str((pod.get("status") or {}).get("phase") or "")


def test_the_script_waits_in_its_ready_pod_until_the_gate_opens(jobs: Jobs) -> None:
    alice = pwd.getpwnam("skbalice")
    # A held job lends its id: the reaper removes objects of jobs Slurm does not know.
    job_id = jobs.sandbox.slurm("sbatch", "--parsable", "--hold", "--wrap", "true", user="skbalice").stdout.strip()
    jobs.submitted.append(job_id)
    marker = jobs.home("skbalice") / f"gate-{job_id}"
    marker.unlink(missing_ok=True)
    rendered = jobs.render(job_id, job_script(body=f"date +%s.%N > /workspace/gate-{job_id}"), memory_mib=256)
    rendered.pod["spec"]["serviceAccountName"] = "default"  # the per-attempt account is the prolog's to make
    made: list[Made] = []
    try:
        create_objects(jobs.kube, rendered, jobs.namespace, made)
        verdict = wait_pod_ready(jobs.kube, jobs.namespace, rendered.names.pod, timeout_s=90, unschedulable_grace_s=30)
        assert verdict.ready, verdict.reason
        time.sleep(3)  # long enough for a script that did not wait to have written its line many times over
        assert not marker.exists(), "the script ran before the gate opened"
        assert _phase(jobs, rendered.names.pod) == "Running"
        opened_at = time.time()
        open_start_gate(jobs.kube, jobs.namespace, rendered.names.pod)
        wait_for(lambda: _phase(jobs, rendered.names.pod) == "Succeeded", timeout_s=60, what="the gated script ran")
        started_at = float(marker.read_text())
        assert started_at >= opened_at - 0.5  # clocks are the same machine's
        assert marker.stat().st_uid == alice.pw_uid
    finally:
        delete_objects(jobs.kube, [m.ref for m in made], grace_period_s=0)
        assert not wait_gone(jobs.kube, [m.ref for m in made], timeout_s=60)
        marker.unlink(missing_ok=True)


def test_a_script_too_large_for_an_annotation_runs_from_its_configmap(jobs: Jobs) -> None:
    padding = "\n".join(f"# padding line {n:06d} " + "x" * 80 for n in range(SCRIPT_ANNOTATION_MAX_BYTES // 90 + 50))
    script = job_script(body=f"{padding}\necho large script ran")
    assert len(script.encode()) > SCRIPT_ANNOTATION_MAX_BYTES
    job_id = jobs.sbatch("skbalice", script, name="large.sh")
    assert jobs.wait_done(job_id, timeout_s=180) == ("COMPLETED", "0:0")
    assert "large script ran" in (jobs.results("skbalice", job_id) / "pod.log").read_text()
    manifest = (jobs.results("skbalice", job_id) / "manifest.yaml").read_text()
    assert "kind: ConfigMap" in manifest and ANNOTATION_SCRIPT not in manifest
    jobs.wait_no_objects(job_id)


def test_a_usual_script_travels_in_its_pod_and_needs_no_configmap(jobs: Jobs) -> None:
    job_id = jobs.sbatch("skbalice", job_script(body="echo small script ran"), name="small.sh")
    assert jobs.wait_done(job_id, timeout_s=180) == ("COMPLETED", "0:0")
    assert "small script ran" in (jobs.results("skbalice", job_id) / "pod.log").read_text()
    manifest = (jobs.results("skbalice", job_id) / "manifest.yaml").read_text()
    assert "kind: ConfigMap" not in manifest and ANNOTATION_SCRIPT in manifest
