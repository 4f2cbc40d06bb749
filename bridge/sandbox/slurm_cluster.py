"""The sandbox's Slurm: munged, slurmctld and a slurmd per node, with fake GPUs.

The host's own node runs its slurmd here; each extra node's slurmd runs in that node's network
and UTS namespaces (`node_net`), so Slurm sees a cluster of hosts with their own names and
addresses.

The node declares more CPUs and memory than a laptop has (`SlurmdParameters=config_overrides`)
so GPU-sized test jobs can be allocated; the kubelet node of the same name reports the same
numbers (`node_keeper`), and containers' limits are cgroup quotas, so oversubscribing is fine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from bridge.errors import PermanentError
from bridge.sandbox import accounting
from bridge.sandbox.layout import ProgressFn, SandboxLayout, SandboxNode
from bridge.sandbox.node_net import in_node
from bridge.sandbox.procs import Daemons, wait_until

SLURM_PACKAGES = ("slurm-wlm", "slurm-client", "slurmdbd", "munge", "mariadb-server")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
ETC_SLURM_CONF = Path("/etc/slurm/slurm.conf")


def ensure_packages(progress: ProgressFn) -> None:
    missing = [tool for tool in ("slurmctld", "slurmd", "slurmdbd", "sbatch", "munged", "mariadbd") if shutil.which(tool) is None
               and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        apt_install(SLURM_PACKAGES, missing, progress)


def apt_install(packages: tuple[str, ...], missing: list[str], progress: ProgressFn) -> None:
    if os.geteuid() != 0:
        raise PermanentError(f"missing {', '.join(missing)}; install them with: sudo apt-get install {' '.join(packages)}")
    progress(f"installing {' '.join(packages)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise PermanentError(f"{' '.join(argv)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")


def render_slurm_conf(layout: SandboxLayout, *, hooks: dict[str, str] | None = None) -> str:
    node = layout.node
    all_nodes = ",".join(n.name for n in layout.nodes)
    ports = layout.ports
    state = layout.slurm_dir / "state"
    lines = [
        "# Written by `skbridge sandbox up`; edits are overwritten on the next `up`.",
        "ClusterName=skbsandbox",
        f"SlurmctldHost={node.name}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={ports.slurmctld}",
        f"SlurmdPort={ports.slurmd}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"StateSaveLocation={state}/ctld",
        # %n: each node's slurmd keeps its own spool and pid file on this one filesystem.
        f"SlurmdSpoolDir={state}/slurmd-%n",
        f"SlurmctldPidFile={layout.run_dir}/slurmctld.daemon.pid",
        f"SlurmdPidFile={layout.run_dir}/slurmd-%n.daemon.pid",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "SwitchType=switch/none",
        "ReturnToService=2",
        "SlurmdParameters=config_overrides",
        # Scheduling exactly as the lab runs it.
        "SchedulerType=sched/backfill",
        "SchedulerParameters=bf_interval=5,bf_window=10080,bf_continue,bf_resolution=60",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "PriorityType=priority/multifactor",
        "PriorityDecayHalfLife=7-0",
        "PriorityMaxAge=7-0",
        "PriorityWeightAge=1000",
        "PriorityWeightFairshare=10000",
        "PriorityWeightJobSize=1000",
        "PriorityWeightPartition=1000",
        "PriorityWeightTRES=CPU=1000,Mem=1000,GRES/gpu=4000",
        "GresTypes=gpu",
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=localhost",
        f"AccountingStoragePort={ports.slurmdbd}",
        "AccountingStorageTRES=gres/gpu",
        # The watcher finds its jobs again by the tag in --comment, also after they left squeue.
        "AccountingStoreFlags=job_comment",
        "JobCompType=jobcomp/none",
        "JobAcctGatherType=jobacct_gather/none",
        "DefMemPerCPU=1024",
        "MinJobAge=300",
        "KillWait=30",
        "PrologEpilogTimeout=120",
        "MessageTimeout=20",
        "SlurmctldTimeout=60",
        "SlurmdTimeout=120",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
    ]
    for key, value in (hooks or {}).items():
        lines.append(f"{key}={value}")
    lines += [
        f"NodeName={n.name} NodeAddr={n.address} CPUs={n.cpus} RealMemory={n.memory_mib} "
        f"Gres=gpu:{n.gpu_type}:{n.gpus} Weight={n.weight} State=UNKNOWN"
        for n in layout.slurm_nodes
    ]
    lines += [
        f"PartitionName=gpu Nodes={all_nodes} Default=YES MaxTime=7-00:00:00 State=UP",
        # Queues jobs that never start: bulk ingest tests and benchmarks park their jobs here.
        f"PartitionName=parked Nodes={all_nodes} Default=NO MaxTime=7-00:00:00 State=DOWN",
    ]
    if layout.sim_nodes:
        # Scale work only: these nodes' Pods are kwok's, no job really runs there.
        sims = ",".join(n.name for n in layout.sim_nodes)
        lines.append(f"PartitionName=sim Nodes={sims} Default=NO MaxTime=7-00:00:00 State=UP")
    return "\n".join(lines) + "\n"


def gpu_device_dir(layout: SandboxLayout, node: SandboxNode) -> Path:
    return layout.gpu_device_dir if node.on_host else layout.gpu_device_dir / node.name


def render_gres_conf(layout: SandboxLayout) -> str:
    lines = ["# Fake GPUs: placeholder files stand in for /dev/nvidiaN.", "AutoDetect=off"]
    lines += [f"NodeName={n.name} Name=gpu Type={n.gpu_type} File={gpu_device_dir(layout, n)}/nvidia[0-{n.gpus - 1}]"
              for n in layout.slurm_nodes]
    return "\n".join(lines) + "\n"


def slurmd_daemon(node: SandboxNode) -> str:
    return "slurmd" if node.on_host else f"slurmd-{node.name}"


def write_config(layout: SandboxLayout, *, hooks: dict[str, str] | None = None) -> bool:
    """Write slurm.conf and gres.conf; True when either changed."""
    for sub in ("state/ctld", "dev"):
        (layout.slurm_dir / sub).mkdir(parents=True, exist_ok=True)
    for node in layout.slurm_nodes:
        (layout.slurm_dir / "state" / f"slurmd-{node.name}").mkdir(parents=True, exist_ok=True)
        devices = gpu_device_dir(layout, node)
        devices.mkdir(parents=True, exist_ok=True)
        for index in range(node.gpus):
            (devices / f"nvidia{index}").touch()
    changed = False
    for path, text in ((layout.slurm_conf, render_slurm_conf(layout, hooks=hooks)),
                       (layout.slurm_dir / "gres.conf", render_gres_conf(layout))):
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            path.chmod(0o644)
            changed = True
    return changed


def munge_works() -> bool:
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=5, check=False)
        if cred.returncode != 0:
            return False
        back = subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return back.returncode == 0


def slurm_env(layout: SandboxLayout) -> dict[str, str]:
    return dict(os.environ, SLURM_CONF=str(layout.slurm_conf))


def controller_answers(layout: SandboxLayout) -> bool:
    out = subprocess.run(["scontrol", "ping"], env=slurm_env(layout), capture_output=True, text=True, timeout=20,
                         check=False)
    return out.returncode == 0 and " is UP" in out.stdout


def node_state(layout: SandboxLayout, node: SandboxNode | None = None) -> str:
    name = (node or layout.node).name
    out = subprocess.run(["sinfo", "-h", "-N", "-n", name, "-o", "%T"], env=slurm_env(layout),
                         capture_output=True, text=True, timeout=20, check=False)
    # One line per partition the node is in; the node's state is the same on each.
    lines = out.stdout.split() if out.returncode == 0 else []
    return lines[0] if lines else ""


REGISTERED_STATES = {"idle", "mixed", "allocated", "completing"}


def _unregistered(layout: SandboxLayout, nodes: tuple[SandboxNode, ...]) -> list[str]:
    """Which of `nodes` have no slurmd registered with slurmctld yet (one sinfo for all)."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env=slurm_env(layout), capture_output=True, text=True,
                         timeout=30, check=False)
    states = dict(line.split(None, 1) for line in out.stdout.splitlines() if " " in line)
    return [n.name for n in nodes if states.get(n.name, "").rstrip("*") not in REGISTERED_STATES]


def _registered(layout: SandboxLayout, node: SandboxNode) -> Callable[[], bool]:
    return lambda: not _unregistered(layout, (node,))


def start(layout: SandboxLayout, daemons: Daemons, progress: ProgressFn) -> None:
    if not munge_works():
        munge_dir = MUNGE_SOCKET.parent
        munge_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(munge_dir, "munge", "munge")
        progress("starting munged")
        daemons.start_and_wait("munged", ["/usr/sbin/munged", "--foreground"], user="munge", ready=munge_works,
                               timeout_s=20)
    accounting.start(layout, daemons, progress)
    env = slurm_env(layout)
    progress("starting slurmctld")
    daemons.start_and_wait("slurmctld", ["/usr/sbin/slurmctld", "-D", "-f", str(layout.slurm_conf)], env=env,
                           ready=lambda: controller_answers(layout), timeout_s=60)
    records = []
    if layout.sim_nodes:
        progress(f"starting the slurmds of {len(layout.sim_nodes)} simulated node(s)")
    for node in layout.slurm_nodes:
        if node in layout.nodes:
            progress(f"starting slurmd ({node.name})")
        argv = in_node(node, ["/usr/sbin/slurmd", "-D", "-f", str(layout.slurm_conf), "-N", node.name], hostname=True)
        records.append((node, daemons.start(slurmd_daemon(node), argv, env=env)))
    for node, record in records[: len(layout.nodes)]:
        daemons.wait_ready(record, _registered(layout, node), timeout_s=60)
    if layout.sim_nodes:
        wait_until(lambda: _unregistered(layout, layout.sim_nodes) == [], what="the simulated nodes' slurmds",
                   timeout_s=60 + len(layout.sim_nodes) / 2)
    _link_default_conf(layout)


def reconfigure(layout: SandboxLayout) -> None:
    subprocess.run(["scontrol", "reconfigure"], env=slurm_env(layout), capture_output=True, timeout=30, check=False)


def _link_default_conf(layout: SandboxLayout) -> None:
    """Let a plain `sbatch` find the sandbox when the host has no Slurm config of its own."""
    if ETC_SLURM_CONF.exists() or ETC_SLURM_CONF.is_symlink() or os.geteuid() != 0:
        return
    ETC_SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    ETC_SLURM_CONF.symlink_to(layout.slurm_conf)
    (layout.run_dir / "etc-slurm-conf.link").write_text(str(ETC_SLURM_CONF), encoding="utf-8")


def unlink_default_conf(layout: SandboxLayout) -> None:
    marker = layout.run_dir / "etc-slurm-conf.link"
    if marker.exists():
        if ETC_SLURM_CONF.is_symlink() and Path(os.readlink(ETC_SLURM_CONF)) == layout.slurm_conf:
            ETC_SLURM_CONF.unlink()
        marker.unlink()


def stop(layout: SandboxLayout, daemons: Daemons) -> list[str]:
    if daemons.running("slurmctld"):
        # Running jobs die with slurmd; cancel them so a later `up` does not recover ghosts
        # that hold the node's resources. Pending jobs stay queued.
        subprocess.run(["scancel", "--state=RUNNING", "--full"], env=slurm_env(layout), capture_output=True,
                       timeout=30, check=False)
    slurmds = [slurmd_daemon(node) for node in layout.slurm_nodes]
    stopped = [name for name in (*slurmds, "slurmctld") if daemons.stop(name)]
    stopped += accounting.stop(daemons)
    stopped += [name for name in ("munged",) if daemons.stop(name)]
    unlink_default_conf(layout)
    return stopped
