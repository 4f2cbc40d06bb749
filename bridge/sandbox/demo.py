"""`skbridge sandbox demo`: drop a sample job into the sandbox and follow it to its results."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bridge.errors import TemporaryError
from bridge.ingest.layout import ensure_user_folder
from bridge.resources import resource_path
from bridge.sandbox import k8s_build
from bridge.sandbox.layout import SandboxLayout
from bridge.settings import load_settings
from bridge.slurm.vocabulary import is_live
from bridge.waiting import poll

DEMO_USER = "skbdemo"
DEMO_UID = 1600
SAMPLE = "examples/hello-gpu.sh"
ShowFn = Callable[[str, str], None]


def ensure_demo_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(DEMO_USER)
    except KeyError:
        subprocess.run(["useradd", "--uid", str(DEMO_UID), "--create-home", "--shell", "/bin/bash", DEMO_USER],
                       check=True, capture_output=True)
        return pwd.getpwnam(DEMO_USER)


def _wait(check: Callable[[], object], what: str, timeout_s: float) -> object:
    found = poll(check, timeout_s=timeout_s, interval_s=0.3)
    if not found:
        raise TemporaryError(f"timed out after {timeout_s:.0f}s waiting for {what}")
    return found


def run_demo(layout: SandboxLayout, show: ShowFn, progress: Callable[[str], None]) -> int:
    settings = load_settings(layout.bridge_config)
    env = {**os.environ, **layout.env()}
    user = ensure_demo_user()
    home = settings.nas.home_root / DEMO_USER
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, user.pw_uid, user.pw_gid)

    def run(*argv: str) -> str:
        return subprocess.run(list(argv), env=env, capture_output=True, text=True, check=False).stdout

    name = f"hello-{time.strftime('%H%M%S')}.sh"
    ensure_user_folder(settings.nas, user)
    folder = settings.nas.submit_dir / DEMO_USER  # each user drops into their own submit/<user>/
    staging = folder / f".{name}.part"
    staging.write_bytes(resource_path(SAMPLE).read_bytes())
    os.chown(staging, user.pw_uid, user.pw_gid)
    staging.chmod(0o644)
    staging.rename(folder / name)  # what `cp` + `mv` into submit/<user>/ does
    progress(f"dropped {SAMPLE} into {folder}/{name} as {DEMO_USER}")

    def accepted() -> str | None:
        for path in settings.nas.accepted_dir.iterdir():
            if path.name.endswith(f"-{name}"):
                return path.name.split("-", 1)[0]
        if (settings.nas.failed_dir / f"{name}.error").exists():
            raise TemporaryError((settings.nas.failed_dir / f"{name}.error").read_text())
        return None

    job_id = str(_wait(accepted, "the watcher to accept the file", 60))
    progress(f"watcher submitted it as Slurm job {job_id} (accepted/{job_id}-{name})")
    kubectl = [str(k8s_build.bin_dir() / "kubectl"), "--kubeconfig", env["KUBECONFIG"]]
    pod = f"skb-{job_id}-r0"
    _wait(lambda: "Running" in run(*kubectl, "get", "pod", "-n", settings.kubernetes.namespace, pod, "--no-headers"),
          "the job's Pod to run", 90)
    show("squeue", run("squeue", "-j", job_id, "-o", "%i %u %T %b %N"))
    show(f"kubectl get pod {pod}", run(*kubectl, "get", "pod", "-n", settings.kubernetes.namespace, pod, "-o",
                                       "custom-columns=NAME:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase,"
                                       "GPU:.spec.containers[0].resources.limits.nvidia\\.com/gpu,"
                                       "GPU_IDX:.metadata.annotations.slurm\\.schedmd\\.com/gpu-indices"))

    def finished() -> str | None:
        line = run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode").strip()
        state = line.split("|")[0] if line else ""
        return line if state and not is_live(state) else None

    _wait(finished, "the job to finish", 120)
    results = settings.nas.results_root / DEMO_USER / job_id
    _wait((results / "SHA256SUMS").exists, "the epilog's results", 60)
    show("sacct", run("sacct", "-X", "-j", job_id, "-o", "JobID,JobName,User,State,ExitCode,Elapsed"))
    listing = "\n".join(sorted(p.name for p in results.iterdir() if not p.name.startswith(".")))
    show(f"results {results}", listing)
    summary = json.loads((results / "summary.json").read_text())
    show("summary.json", json.dumps({k: summary[k] for k in ("job_id", "user", "image", "node", "cpus", "memory_mib",
                                                            "gpus", "exit_code", "state")}, indent=2))
    output = Path(home / f"slurm-{job_id}.out")
    if output.exists():
        show(f"job output {output}", output.read_text())
    left = run(*kubectl, "get", "pods,pvc,pv,configmaps", "-n", settings.kubernetes.namespace, "-l",
               f"slurm.job-id={job_id}", "--no-headers")
    show("bridge objects left in Kubernetes", left.strip() or "none")
    return 0 if summary.get("exit_code") == 0 else 1
