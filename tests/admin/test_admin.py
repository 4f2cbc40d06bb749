"""Issue 6: slurm.conf.example really starts slurmctld; the test suite passes on a good install and
fails, with its hint, on each broken part."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.sandbox import manager
from bridge.sandbox.procs import Daemons
from tests.conftest import Sandbox, wait_for

REPO = Path(__file__).resolve().parents[2]
SKBRIDGE = str(Path(sys.executable).parent / "skbridge")


def run_test_suite(sandbox: Sandbox, *args: str, config: Path | None = None,
               env: dict[str, str] | None = None) -> tuple[int, dict[str, dict[str, object]]]:
    out = subprocess.run([SKBRIDGE, "test-suite", "--json", "--config", str(config or sandbox.layout.bridge_config),
                          *args], capture_output=True, text=True, timeout=600, check=False,
                         env={**os.environ, **(env or {})})
    report = json.loads(out.stdout)
    return out.returncode, {r["name"]: r for r in report["results"]}


def _example_conf(sandbox: Sandbox, tmp_path: Path, *, drop: tuple[str, ...] = ()) -> Path:
    """slurm.conf.example with only host-specific lines swapped for this host (and `drop` keys left out)."""
    example = (REPO / "slurm.conf.example").read_text()
    sandbox_conf = sandbox.layout.slurm_conf.read_text()
    node_lines = [line for line in sandbox_conf.splitlines() if line.startswith(("NodeName=", "PartitionName="))]
    overrides = {
        "ClusterName": "exampletest", "SlurmctldHost": sandbox.node_name, "SlurmctldPort": "16917",
        "StateSaveLocation": str(tmp_path / "state"), "SlurmctldPidFile": str(tmp_path / "slurmctld.pid"),
        "SlurmctldLogFile": str(tmp_path / "slurmctld.log"), "MailProg": "/bin/true",
        # The sandbox's slurmdbd: GRES/gpu TRES weights need accounting.
        "AccountingStorageHost": "localhost", "AccountingStoragePort": str(sandbox.layout.ports.slurmdbd),
        "ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none", "JobAcctGatherType": "jobacct_gather/none",
        "SlurmdPort": "16918", "SlurmdSpoolDir": str(tmp_path / "spool"),
    }
    lines = []
    for line in example.splitlines():
        key = line.split("=", 1)[0].strip()
        if key in {"NodeName", "PartitionName"} or key in overrides or key in drop:
            continue
        lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items()] + node_lines
    (tmp_path / "state").mkdir()
    conf = tmp_path / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    shutil.copy(sandbox.layout.slurm_dir / "gres.conf", tmp_path / "gres.conf")
    shutil.copy(REPO / "deploy/slurm/job_submit.lua", tmp_path / "job_submit.lua")
    return conf


def _live_config(conf: Path) -> dict[str, str]:
    """Start slurmctld on `conf`, and return what `scontrol show config` says it runs with."""
    env = {**os.environ, "SLURM_CONF": str(conf)}
    proc = subprocess.Popen(["/usr/sbin/slurmctld", "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log_file = conf.parent / "slurmctld.log"
    try:
        try:
            wait_for(lambda: proc.poll() is not None or subprocess.run(
                ["scontrol", "ping"], env=env, capture_output=True, text=True, check=False).returncode == 0,
                timeout_s=60, what="slurmctld from the example")
        except AssertionError:
            proc.poll()
        log = log_file.read_text(errors="replace") if log_file.exists() else ""
        assert proc.returncode is None, f"slurmctld exited {proc.returncode}:\n{log[-3000:]}"
        shown = subprocess.run(["scontrol", "show", "config"], env=env, capture_output=True, text=True, check=True).stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in shown.splitlines()) if _}


def test_apply_slurm_conf_writes_the_lines_keeps_a_backup_and_slurmctld_runs_them(sandbox: Sandbox,
                                                                                   tmp_path: Path) -> None:
    # A site's slurm.conf without the bridge: no hooks, no Lua, Slurm's default KillWait.
    conf = _example_conf(sandbox, tmp_path, drop=("PrologSlurmctld", "EpilogSlurmctld", "JobSubmitPlugins", "KillWait",
                                                  "PrologEpilogTimeout"))
    original = conf.read_text()
    done = subprocess.run([SKBRIDGE, "install", "slurm-conf", "--slurm-conf", str(conf), "--apply", "--config",
                           str(sandbox.layout.bridge_config)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    backups = list(tmp_path.glob("slurm.conf.skbridge-backup-*"))
    assert len(backups) == 1 and backups[0].read_text() == original
    live = _live_config(conf)
    bridge_bin = Path(sys.executable).parent
    assert live["PrologSlurmctld"] == str(bridge_bin / "skbridge-prolog-slurmctld")
    assert live["EpilogSlurmctld"] == str(bridge_bin / "skbridge-epilog-slurmctld")
    assert live["JobSubmitPlugins"] == "lua"
    assert int(live["KillWait"].split()[0]) >= 30 and int(live["PrologEpilogTimeout"].split()[0]) >= 120
    again = subprocess.run([SKBRIDGE, "install", "slurm-conf", "--slurm-conf", str(conf), "--apply", "--config",
                            str(sandbox.layout.bridge_config)], capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0 and len(list(tmp_path.glob("slurm.conf.skbridge-backup-*"))) == 1, "idempotent"


def test_slurm_conf_example_starts_slurmctld(sandbox: Sandbox, tmp_path: Path) -> None:
    """The example, with only host-specific lines swapped for this host, runs and says what it says."""
    live = _live_config(_example_conf(sandbox, tmp_path))
    assert live["SchedulerType"] == "sched/backfill"
    assert live["PriorityType"] == "priority/multifactor"
    assert live["SelectType"] == "select/cons_tres"
    assert live["GresTypes"] == "gpu"
    assert live["JobSubmitPlugins"] == "lua"
    assert live["PrologSlurmctld"] == "/opt/slurm-k8s-bridge/bin/skbridge-prolog-slurmctld"
    assert live["EpilogSlurmctld"] == "/opt/slurm-k8s-bridge/bin/skbridge-epilog-slurmctld"
    assert int(live["KillWait"].split()[0]) > 20  # the Pod's default terminationGracePeriodSeconds
    assert int(live["PrologEpilogTimeout"].split()[0]) > 90  # the default pod_ready_timeout_s
    bf_window_min = int(re.search(r"bf_window=(\d+)", live["SchedulerParameters"]).group(1))  # type: ignore[union-attr]
    assert bf_window_min >= 7 * 24 * 60, "bf_window covers the longest MaxTime (7 days)"
    assert int(live["PriorityWeightFairShare"]) > 0 and int(live["PriorityWeightAge"]) > 0
    assert int(live["PriorityWeightJobSize"]) > 0


def test_the_test_suite_passes_on_the_sandbox(sandbox: Sandbox, users: object) -> None:
    code, results = run_test_suite(sandbox, "--user", "skbalice")
    assert code == 0, {k: v for k, v in results.items() if v["outcome"] != "PASS"}
    assert all(r["outcome"] == "PASS" for r in results.values())
    e2e = results["a hello job goes drop → Slurm → Pod → results"]
    assert set(e2e["timings_s"]) == {"submitted", "pod_running", "job_finished", "results"}


@pytest.fixture
def restore_sandbox(sandbox: Sandbox) -> Iterator[None]:
    yield
    manager.up(sandbox.layout, lambda _m: None)


def test_each_check_fails_with_its_hint_when_its_part_is_broken(sandbox: Sandbox, restore_sandbox: None,
                                                                  tmp_path: Path) -> None:
    # A hook line removed from slurm.conf.
    conf = tmp_path / "slurm.conf"
    conf.write_text("".join(line for line in sandbox.layout.slurm_conf.read_text().splitlines(True)
                            if not line.startswith("PrologSlurmctld")))
    shutil.copy(sandbox.layout.slurm_dir / "job_submit.lua", tmp_path / "job_submit.lua")
    code, results = run_test_suite(sandbox, "--only", "slurm", env={"SKBRIDGE_SLURM__CONF_PATH": str(conf)})
    hooks = results["bridge hooks and the Lua plugin are configured"]
    assert code == 1 and hooks["outcome"] == "FAIL" and "prologslurmctld missing" in hooks["detail"]
    assert "skbridge install slurm-conf" in hooks["hint"]

    # An RBAC verb revoked.
    kubectl = [sandbox.kubectl, "--kubeconfig", sandbox.layout.env()["KUBECONFIG"], "-n", "slurm-bridge"]
    role = json.loads(subprocess.run([*kubectl, "get", "role", "skbridge", "-o", "json"], capture_output=True,
                                     text=True, check=True).stdout)
    role["rules"][0]["verbs"] = [v for v in role["rules"][0]["verbs"] if v != "delete"]
    subprocess.run([*kubectl, "replace", "-f", "-"], input=json.dumps(role), text=True, capture_output=True, check=True)
    try:
        code, results = run_test_suite(sandbox, "--only", "kubernetes")
        rbac = results["RBAC allows exactly what the bridge needs"]
        assert code == 1 and rbac["outcome"] == "FAIL" and "delete pods" in rbac["detail"]
        assert "10-rbac.yaml" in rbac["hint"]
    finally:
        manager.up(sandbox.layout, lambda _m: None)  # re-applies deploy/kubernetes

    # The watcher stopped.
    Daemons(sandbox.layout).stop("watcher")
    code, results = run_test_suite(sandbox, "--only", "watcher")
    watcher = results["the watcher service is running"]
    assert code == 1 and watcher["outcome"] == "FAIL" and "systemctl" in watcher["hint"]
    hooks = results["the watcher runs the Slurm hooks warm"]
    assert hooks["outcome"] == "FAIL" and "fall back" in hooks["detail"] and "systemctl" in hooks["hint"]

    # munged stopped (last: Slurm needs it for everything).
    Daemons(sandbox.layout).stop("munged")
    time.sleep(0.5)
    code, results = run_test_suite(sandbox, "--only", "slurm")
    munge = results["munge works"]
    assert code == 1 and munge["outcome"] == "FAIL" and "munged" in munge["hint"]


def test_install_twice_then_test_suite_then_uninstall(sandbox: Sandbox, restore_sandbox: None,
                                                      users: object) -> None:
    before = _snapshot()
    args = ["bash", str(REPO / "install.sh"), "--no-systemd", "--config", str(sandbox.layout.bridge_config),
            "--kubeconfig", sandbox.layout.env()["KUBECONFIG"]]
    env = {**os.environ, "SLURM_CONF": str(sandbox.layout.slurm_conf)}
    for _ in range(2):
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    installed = Path("/opt/slurm-k8s-bridge/bin/skbridge")
    assert installed.is_file() and Path("/etc/slurm-k8s-bridge/kubeconfig").stat().st_mode & 0o777 == 0o600
    out = subprocess.run([str(installed), "test-suite", "--json", "--user", "skbalice"], capture_output=True, text=True,
                         timeout=600, check=False, env=env)
    report = json.loads(out.stdout)
    assert out.returncode == 0, [r for r in report["results"] if r["outcome"] != "PASS"]
    done = subprocess.run([*args[:2], "--uninstall"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _snapshot() == before, "uninstall leaves nothing it installed"


def _snapshot() -> dict[str, bool]:
    paths = ["/opt/slurm-k8s-bridge", "/etc/slurm-k8s-bridge", "/usr/local/bin/skbridge", "/var/lib/slurm-k8s-bridge",
             "/var/log/slurm-k8s-bridge"]
    return {path: os.path.lexists(path) for path in paths}
