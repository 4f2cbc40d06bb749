"""CPU of one `skbridge attach` (the batch step every bridge job runs): light path vs full path.

For each of N jobs on the sandbox's node, two extra attaches follow the same running Pod as
the job's user, as slurmd starts the batch step: one from the kubeconfig the prolog wrote
(JSON with the attach bundle: the light path), then one from the same credential rewritten
as an older prolog wrote it (YAML, no bundle: the full path with pydantic and the official
client). Both run until the Pod ends; the figure is each process's own user+system CPU.

    .venv/bin/python bench/attach_cpu.py [--jobs N]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pwd
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _harness import ensure_users, job_text, sandbox, slurm

from bridge.kubernetes.kubeconfig import render_kubeconfig
from bridge.kubernetes.lite import ATTACH_KUBECONFIG
from bridge.sandbox.manager import skbridge_bin
from bridge.settings import load_settings


def _start(owner: pwd.struct_passwd, job_id: str, config: Path, trace: Path) -> subprocess.Popen[bytes]:
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": job_id, "SLURM_JOB_USER": owner.pw_name,
           "SLURM_RESTART_COUNT": "0", "SKBRIDGE_ATTACH_TRACE": str(trace)}
    return subprocess.Popen([str(skbridge_bin()), "attach", "--config", str(config)], env=env,
                            user=owner.pw_uid, group=owner.pw_gid, extra_groups=[],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _cpu_s(process: subprocess.Popen[bytes]) -> float:
    _pid, _status, usage = os.wait4(process.pid, 0)
    return usage.ru_utime + usage.ru_stime


def _older_kubeconfig(path: Path) -> str:
    doc = json.loads(path.read_bytes())
    cluster = doc["clusters"][0]["cluster"]
    return render_kubeconfig(server=cluster["server"], ca_pem=base64.b64decode(cluster["certificate-authority-data"]),
                             user_name=doc["users"][0]["name"], token=doc["users"][0]["user"]["token"],
                             namespace=doc["contexts"][0]["context"]["namespace"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    layout = sandbox()
    settings = load_settings(layout.bridge_config)
    owner = ensure_users()[0]
    light_s: list[float] = []
    full_s: list[float] = []
    home = settings.nas.home_root / owner.pw_name  # the job's working folder, as the tests use
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, owner.pw_uid, owner.pw_gid)
    with tempfile.TemporaryDirectory(dir=home) as scratch:
        folder = Path(scratch)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        trace = folder / "trace"
        script = folder / "job.sh"
        script.write_text(job_text("attach-cpu", body="sleep 12; echo done"), encoding="utf-8")
        for _ in range(args.jobs):
            job_id = slurm(layout, "sbatch", "--parsable", "--output=/dev/null", f"--chdir={folder}", str(script),
                           user=owner.pw_name).strip().split(";")[0]
            credential = settings.nas.results_root / owner.pw_name / job_id / ATTACH_KUBECONFIG
            deadline = time.monotonic() + 120
            while not credential.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)  # the Pod Ready, the batch step itself started
            light = _start(owner, job_id, layout.bridge_config, trace)
            time.sleep(1.0)  # it has read its bundle
            credential.write_text(_older_kubeconfig(credential), encoding="utf-8")
            full = _start(owner, job_id, layout.bridge_config, trace)
            light_s.append(_cpu_s(light))
            full_s.append(_cpu_s(full))
        paths = trace.read_text().split()[1::2] if trace.exists() else []
    print(f"skbridge attach, CPU per job (user+system, median of {args.jobs}; paths taken: "
          f"{paths.count('light')} light, {paths.count('full')} full)")
    print(f"  full path (pydantic + kubernetes client): {statistics.median(full_s):.3f} s")
    print(f"  light path (stdlib client)              : {statistics.median(light_s):.3f} s")
    print(f"  ratio light/full                        : {statistics.median(light_s) / statistics.median(full_s):.2f}x")


if __name__ == "__main__":
    main()
