"""Benchmark 3: allocation -> Pod Ready through the prolog hook, versus `kubectl apply` +
`kubectl wait` of the identical objects; plus the hook's own time split.

The hook's figures come from its JSON log (`timings_s`: seconds per stage, starting with
Python start-up and imports measured from the process's start time).

    .venv/bin/python bench/prolog.py [--quick] [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

import yaml
from _harness import ensure_users, env_of, sandbox, slurm, wait_all_ended

from bridge.sandbox import k8s_build
from bridge.settings import load_settings

SCRIPT = """#!/bin/bash
#SBATCH --cpus-per-task=2
#SBATCH --mem=1G
#SBATCH --gres=gpu:a100:1
#SBATCH --time=5
#SBATCH --output=/dev/null
#K8S_IMAGE=registry.lab:5000/skbridge-job:bookworm
#K8S_ENV=SANDBOX_RUN_DURATION=1s
echo bench
sleep 1
"""


def hook_timings(log_text: str, job_id: str) -> dict[str, float] | None:
    for line in log_text.splitlines():
        if '"prolog done"' in line and f'"job_id": "{job_id}"' in line:
            return dict(json.loads(line)["timings_s"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 jobs (CI smoke test)")
    parser.add_argument("--jobs", type=int, default=10)
    args = parser.parse_args()
    count = 2 if args.quick else args.jobs
    layout = sandbox()
    settings = load_settings(layout.bridge_config)
    user = ensure_users()[0]
    home = settings.nas.home_root / user.pw_name
    home.mkdir(parents=True, exist_ok=True)
    script = home / "bench-prolog.sh"
    script.write_text(SCRIPT)
    kubectl = [str(k8s_build.bin_dir() / "kubectl"), "--kubeconfig", layout.env()["KUBECONFIG"]]

    hook_totals, splits, baseline = [], [], []
    for _ in range(count):
        job_id = slurm(layout, "sbatch", "--parsable", f"--chdir={home}", str(script), user=user.pw_name).strip()
        wait_all_ended(layout, [job_id], 120)
        timings = None
        for _attempt in range(40):
            timings = hook_timings(settings.hook_log_path.read_text(errors="replace"), job_id)
            if timings:
                break
            time.sleep(0.1)
        if not timings:
            raise SystemExit(f"no prolog timings for job {job_id} in {settings.hook_log_path}")
        hook_totals.append(sum(timings.values()))
        splits.append(timings)
        # Baseline: the very objects the hook made, applied and awaited with kubectl.
        manifest = (settings.nas.results_root / user.pw_name / job_id / "manifest.yaml").read_text()
        docs = [doc for doc in yaml.safe_load_all(manifest) if doc]
        for doc in docs:
            doc["metadata"]["name"] = doc["metadata"]["name"] + "-kubectl"
            doc["metadata"].get("labels", {}).pop("slurm.job-id", None)
            spec = doc.get("spec") or {}
            # What a kubectl user writes: classic pre-binding by name. The claim's UID and
            # the bind-completed mark exist only once the hook has created the claim.
            if doc["kind"] == "PersistentVolume":
                spec["claimRef"]["name"] += "-kubectl"
                spec["claimRef"].pop("uid", None)
            if doc["kind"] == "PersistentVolumeClaim":
                spec["volumeName"] += "-kubectl"
                doc["metadata"].get("annotations", {}).pop("pv.kubernetes.io/bind-completed", None)
            if doc["kind"] == "Pod":
                for volume in spec.get("volumes") or []:
                    if "persistentVolumeClaim" in volume:
                        volume["persistentVolumeClaim"]["claimName"] += "-kubectl"
                    if "configMap" in volume:
                        volume["configMap"]["name"] += "-kubectl"
                doc["spec"]["serviceAccountName"] = "default"
        text = yaml.safe_dump_all(docs)
        pod = next(d for d in docs if d["kind"] == "Pod")["metadata"]["name"]
        started = time.monotonic()
        subprocess.run([*kubectl, "apply", "-f", "-"], input=text, text=True, capture_output=True, check=True,
                       env=env_of(layout))
        subprocess.run([*kubectl, "wait", "-n", settings.kubernetes.namespace, "--for=condition=Ready", f"pod/{pod}",
                        "--timeout=120s"], capture_output=True, text=True, check=True, env=env_of(layout))
        baseline.append(time.monotonic() - started)
        subprocess.run([*kubectl, "delete", "--wait=true", "--grace-period=0", "-f", "-"], input=text, text=True,
                       capture_output=True, check=False, env=env_of(layout))

    def mean(values: list[float]) -> float:
        return statistics.fmean(values)

    print(f"prolog: allocation -> Pod Ready ({count} jobs, means)")
    print(f"  prolog hook total          : {mean(hook_totals):6.3f} s")
    print(f"  kubectl apply + kubectl wait: {mean(baseline):6.3f} s")
    print(f"  ratio hook/baseline        : {mean(hook_totals) / mean(baseline):.2f}x   (target <= 0.5x)")
    print("  hook time split (mean seconds per stage):")
    for stage in splits[0]:
        print(f"    {stage:<22} {mean([s.get(stage, 0.0) for s in splits]):6.3f}")


if __name__ == "__main__":
    main()
