"""The end-to-end check: a hello job dropped by a lab user goes through Slurm into a Pod and
leaves its results."""

from __future__ import annotations

import json
import os
import pwd
import time
from collections.abc import Callable
from typing import Any

from bridge.admin.checks.base import Context, Failed, Skipped, check
from bridge.admin.checks.kubernetes import kube_client, test_image
from bridge.ingest.layout import ensure_user_folder
from bridge.slurm.vocabulary import is_live
from bridge.waiting import poll

HELLO = """#!/bin/bash
#SBATCH --job-name=skbridge-test-suite
#SBATCH --cpus-per-task=1
#SBATCH --mem=256M
#SBATCH --time=00:05:00
#SBATCH --output={home}/skbridge-test-suite-%j.out
#K8S_IMAGE={image}
echo "hello from the slurm-k8s-bridge test suite"
sleep 2
"""


def _poll(what: str, timeout_s: float, probe: Callable[[], Any], hint: str) -> Any:
    found = poll(probe, timeout_s=timeout_s, interval_s=0.25)
    if not found:
        raise Failed(f"timed out after {timeout_s:.0f}s waiting for {what}", hint)
    return found


@check("e2e", "a hello job goes drop → Slurm → Pod → results")
def _e2e(ctx: Context) -> str:
    settings = ctx.s
    if not ctx.e2e_user:
        raise Skipped("no --user given: the hello job needs a lab user (not root) to own it")
    try:
        account = pwd.getpwnam(ctx.e2e_user)
    except KeyError as exc:
        raise Failed(f"no user {ctx.e2e_user}", "pass an existing lab account with --user") from exc
    image = test_image(ctx)
    home = settings.nas.home_root / account.pw_name
    if not home.is_dir():
        home.mkdir(parents=True)
        os.chown(home, account.pw_uid, account.pw_gid)
    name = f"skbridge-test-suite-{time.strftime('%Y%m%d%H%M%S')}.sh"
    ensure_user_folder(settings.nas, account)  # each user drops into their own submit/<user>/
    folder = settings.nas.submit_dir / account.pw_name
    staging = folder / f".{name}.part"
    staging.write_text(HELLO.format(home=home, image=image), encoding="utf-8")
    os.chown(staging, account.pw_uid, account.pw_gid)
    staging.chmod(0o644)
    start = time.monotonic()
    staging.rename(folder / name)
    timings = ctx.timings_s

    def mark(stage: str) -> None:
        timings[stage] = round(time.monotonic() - start, 2)

    def accepted() -> str | None:
        if (settings.nas.failed_dir / f"{name}.error").exists():
            raise Failed("the hello job was rejected: " + (settings.nas.failed_dir / f"{name}.error").read_text()[:400],
                         "fix the cause above (registry allow-list: pass --image)")
        for path in settings.nas.accepted_dir.iterdir():
            if path.name.endswith(f"-{name}"):
                return path.name.split("-", 1)[0]
        return None

    timeout = ctx.e2e_timeout_s
    job_id = _poll("the watcher to submit the file", timeout, accepted, "check the watcher: journalctl -u skbridge-watcher")
    mark("submitted")
    kube = kube_client(ctx)
    pod_path = f"/api/v1/namespaces/{settings.kubernetes.namespace}/pods/skb-{job_id}-r0"

    def pod_started() -> bool:
        pod = kube.get_or_none(pod_path) or {}
        return (pod.get("status") or {}).get("phase") in {"Running", "Succeeded", "Failed"}

    try:
        _poll("the job's Pod to start", timeout, pod_started, f"read the prolog's log ({settings.hook_log_path}) and "
              f"`scontrol show job {job_id}`")
    except Failed:
        status = settings.nas.results_root / account.pw_name / job_id / "bridge-status.json"
        if status.exists():
            raise Failed(f"job {job_id}: {json.loads(status.read_text()).get('reason')}",
                         f"see {settings.hook_log_path}") from None
        raise
    mark("pod_running")

    def finished() -> str | None:
        out = ctx.slurm("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode")
        line = out.stdout.strip()
        state = line.split("|")[0] if line else ""
        return line if state and not is_live(state) else None

    final = _poll("the job to finish", timeout, finished, f"`sacct -j {job_id}`")
    mark("job_finished")
    results = settings.nas.results_root / account.pw_name / job_id
    _poll("the epilog's results", timeout, (results / "SHA256SUMS").exists, f"see {settings.hook_log_path}")
    mark("results")
    if final != "COMPLETED|0:0":
        raise Failed(f"job {job_id} ended {final}", f"read {results}/pod.log and {settings.hook_log_path}")
    return f"job {job_id} COMPLETED, results in {results}"
