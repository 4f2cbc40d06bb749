"""`skbridge sandbox up|down|status`: the whole local stack, started and stopped by pid."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bridge.ingest.layout import ensure_nas_layout
from bridge.jobfile.launcher import render_job_submit_lua
from bridge.resources import resource_path
from bridge.sandbox import images, k8s_build, kube_cluster, kube_node, node_net, slurm_cluster
from bridge.sandbox.layout import ProgressFn, SandboxLayout, SandboxNode, extra_node, sim_node
from bridge.sandbox.procs import Daemons, kill_strays
from bridge.settings import load_settings

SANDBOX_REGISTRIES = ["registry.lab:5000", "docker.io/library", "nas-hub.local:5407"]


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    state: str
    detail: str = ""


def skbridge_bin(name: str = "skbridge") -> Path:
    """The sandbox runs the bridge from the virtualenv that runs this command."""
    return Path(sys.executable).parent / name


def _ensure_reachable_by_job_users(path: Path, progress: ProgressFn) -> None:
    """Batch steps run `skbridge attach` as the job's user: every folder above the virtualenv
    must let others through (search permission only, nothing is made readable)."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
            progress(f"let job users reach {path} (o+x on {parent})")


SANDBOX_METRICS_PORT = 9642


def bridge_config(layout: SandboxLayout) -> dict[str, Any]:
    return {
        "nas": {
            "root": str(layout.nas_dir),
            "shared_volumes": {"datasets": {"path": "shared/datasets", "read_only": True}},
        },
        "slurm": {"conf_path": str(layout.slurm_conf), "skbridge_path": str(skbridge_bin()),
                  "attach_config_path": str(layout.bridge_config),
                  "hook_socket_path": str(layout.run_dir / "hooks.sock")},
        "kubernetes": {
            "kubeconfig": str(layout.bridge_kubeconfig),
            "pod_template": str(resource_path("deploy/sandbox/sandbox-pod-template.yaml")),
            "unschedulable_grace_s": 3,
            "pod_ready_timeout_s": 60,
            "test_image": images.JOB_IMAGE,
        },
        "hook_log_path": str(layout.log_dir / "hooks.log"),
        "job_records_dir": str(layout.root / "state" / "jobs"),
        "history": {"path": str(layout.root / "state" / "history.sqlite")},
        "ingest": {
            "journal_path": str(layout.root / "state" / "journal.sqlite"),
            "lock_path": str(layout.run_dir / "watcher.lock"),
            "poll_interval_s": 0.5,
            "settle_s": 0.5,
            # Fast enough for the tests to watch it work; a cluster keeps the safe defaults.
            "reaper_interval_s": 2,
            "reaper_grace_s": 5,
        },
        # One road: a plain script or `sbatch --wrap` runs in the job image too; root's own jobs
        # (the plain-Slurm baselines) stay on the host.
        "policy": {"allowed_registries": SANDBOX_REGISTRIES, "default_image": images.JOB_IMAGE},
        # The watcher's /metrics on loopback, where the tests scrape it (tests/jobs/test_watcher_metrics.py).
        "metrics": {"listen_address": "127.0.0.1", "port": SANDBOX_METRICS_PORT},
    }


def _write_bridge_config(layout: SandboxLayout) -> bool:
    """Write the sandbox's config; True when its content changed (running readers are stale)."""
    text = "# Bridge settings for the sandbox, written by `skbridge sandbox up`.\n" + yaml.safe_dump(
        bridge_config(layout), sort_keys=False)
    before = layout.bridge_config.read_text(encoding="utf-8") if layout.bridge_config.exists() else None
    layout.bridge_config.write_text(text, encoding="utf-8")
    settings = load_settings(layout.bridge_config)
    ensure_nas_layout(settings.nas)
    (layout.nas_dir / "shared" / "datasets").mkdir(parents=True, exist_ok=True)
    (layout.nas_dir / "shared").chmod(0o755)
    return before != text


def _write_hook_wrappers(layout: SandboxLayout) -> dict[str, str]:
    """slurmctld runs hooks with neither arguments nor our environment: wrappers pin the config."""
    libexec = layout.root / "libexec"
    libexec.mkdir(exist_ok=True)
    hooks: dict[str, str] = {}
    for key, entry in (("PrologSlurmctld", "skbridge-prolog-slurmctld"), ("EpilogSlurmctld", "skbridge-epilog-slurmctld")):
        wrapper = libexec / entry
        wrapper.write_text(f"#!/bin/sh\nSKBRIDGE_CONFIG={shlex.quote(str(layout.bridge_config))} "
                           f"exec {shlex.quote(str(skbridge_bin(entry)))}\n", encoding="utf-8")
        wrapper.chmod(0o755)
        hooks[key] = str(wrapper)
    lua = render_job_submit_lua(resource_path("deploy/slurm/job_submit.lua").read_text(encoding="utf-8"),
                                skbridge_bin(), layout.bridge_config)
    (layout.slurm_dir / "job_submit.lua").write_text(lua, encoding="utf-8")
    hooks["JobSubmitPlugins"] = "lua"
    return hooks


@contextlib.contextmanager
def _exclusive(layout: SandboxLayout, progress: ProgressFn) -> Iterator[None]:
    """One `up` or `down` at a time: test sessions that find the sandbox stopped all call `up`,
    and two racing starts record one daemon's pid over the other's (an orphan holding the port)."""
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    with (layout.run_dir / "sandbox.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("another `skbridge sandbox up/down` is at work: waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def up(layout: SandboxLayout, progress: ProgressFn) -> float:
    with _exclusive(layout, progress):
        return _up(layout, progress)


def _up(layout: SandboxLayout, progress: ProgressFn) -> float:
    started = time.monotonic()
    for directory in (layout.root, layout.run_dir, layout.log_dir, layout.root / "state"):
        directory.mkdir(parents=True, exist_ok=True)
    layout.root.chmod(0o755)
    daemons = Daemons(layout)
    _stop_removed_nodes(layout, daemons, progress)
    layout.save_node_count()
    slurm_cluster.ensure_packages(progress)
    kube_node.ensure_packages(progress)
    bin_dir = k8s_build.ensure_built(progress)
    images.ensure_images(progress)
    _ensure_reachable_by_job_users(skbridge_bin(), progress)
    if _write_bridge_config(layout):
        # The watcher (and the hooks it serves) and the service read the config at start.
        for reader in ("watcher", "serve"):
            if daemons.stop(reader):
                progress(f"bridge config changed: restarting {reader}")
    layout.slurm_dir.mkdir(parents=True, exist_ok=True)
    if slurm_cluster.write_config(layout, hooks=_write_hook_wrappers(layout)) and daemons.running("slurmctld"):
        progress("slurm.conf changed: restarting slurmctld and the slurmds")
        for node in layout.slurm_nodes:
            daemons.stop(slurm_cluster.slurmd_daemon(node))
        daemons.stop("slurmctld")
    node_net.ensure_network(layout, progress)
    node_net.start_loopback_relay(layout, daemons)
    node_net.remember_forwarding(layout)
    node_net.route_pod_subnets(layout)
    slurm_cluster.start(layout, daemons, progress)
    kube_cluster.start(layout, daemons, bin_dir, progress)
    api = kube_cluster.admin_api(layout)
    for node in layout.sim_nodes:
        kube_cluster.ensure_simulated_node(api, layout, node.name, node)
    for node in layout.nodes:
        kube_node.start(layout, daemons, bin_dir, api, kube_cluster.apiserver_url(layout), progress, node)
    for node in layout.nodes:
        kube_node.wait_ready(layout, daemons, api, node)
    daemons.start("watcher", [str(skbridge_bin()), "watch"], env={**os.environ, "SKBRIDGE_CONFIG": str(layout.bridge_config)})
    # The REST API on loopback (service.bind_host/port of the bridge config): optional, like in production.
    daemons.start("serve", [str(skbridge_bin()), "serve"], env={**os.environ, "SKBRIDGE_CONFIG": str(layout.bridge_config)})
    elapsed = time.monotonic() - started
    progress(f"sandbox up in {elapsed:.1f}s")
    return elapsed


def down(layout: SandboxLayout, progress: ProgressFn, *, purge: bool = False) -> None:
    with _exclusive(layout, progress):
        _down(layout, progress, purge=purge)


def _down(layout: SandboxLayout, progress: ProgressFn, *, purge: bool) -> None:
    daemons = Daemons(layout)
    stopped = [name for name in ("serve", "watcher") if daemons.stop(name)]
    api = kube_cluster.admin_api(layout) if daemons.running("kube-apiserver") else None
    for node in reversed(layout.nodes):
        stopped += kube_node.stop(layout, daemons, api, progress, node)
    stopped += kube_cluster.stop(daemons) + slurm_cluster.stop(layout, daemons)
    stopped += node_net.stop_loopback_relay(layout, daemons)
    for node in layout.namespaced_nodes:
        node_net.remove_node_netns(node)
    node_net.remove_bridge()
    node_net.restore_forwarding(layout)
    strays = kill_strays(layout)
    progress(f"stopped {', '.join(stopped) or 'nothing'}" + (f"; killed {len(strays)} stray process(es)" if strays else ""))
    if purge and layout.root.exists():
        shutil.rmtree(layout.root)
        progress(f"removed {layout.root}")


def _removed_nodes(layout: SandboxLayout) -> list[SandboxNode]:
    """Extra and simulated nodes an earlier `up` started that this layout no longer has."""
    kept = {node.name for node in layout.slurm_nodes}
    found: dict[str, SandboxNode] = {}
    for pid_file in layout.run_dir.glob("slurmd-skb*.pid"):
        name = pid_file.stem.removeprefix("slurmd-")
        for prefix, make in (("skbnode", extra_node), ("skbsim", sim_node)):
            digits = name.removeprefix(prefix)
            if name.startswith(prefix) and digits.isdigit() and name not in kept:
                with contextlib.suppress(ValueError):
                    found[name] = make(int(digits))
    return sorted(found.values(), key=lambda node: node.name)


def _stop_removed_nodes(layout: SandboxLayout, daemons: Daemons, progress: ProgressFn) -> None:
    removed = _removed_nodes(layout)
    if removed:
        progress(f"stopping {len(removed)} node(s) this sandbox no longer has")
    api = kube_cluster.admin_api(layout) if removed and daemons.running("kube-apiserver") else None
    for node in removed:
        if node.pod_subnet:  # a real node: its kubelet, containerd and Pods
            kube_node.stop(layout, daemons, api, progress, node)
        daemons.stop(slurm_cluster.slurmd_daemon(node))
        node_net.remove_node_netns(node)
        if api is not None:
            with contextlib.suppress(Exception):
                kube_cluster.delete_node(api, node.name)


def status(layout: SandboxLayout) -> list[ComponentStatus]:
    daemons = Daemons(layout)
    rows: list[ComponentStatus] = []
    per_node = [name for node in layout.nodes for name in (
        slurm_cluster.slurmd_daemon(node), *(kube_node.daemon_name(c, node) for c in kube_node.COMPONENTS))]
    relay = [node_net.RELAY] if layout.namespaced_nodes else []
    names = ("munged", "mariadb", "slurmdbd", "slurmctld", *kube_cluster.COMPONENTS, *per_node, *relay,
             "watcher", "serve")
    for name in names:
        rec = daemons.running(name)
        if name == "munged" and rec is None and slurm_cluster.munge_works():
            rows.append(ComponentStatus(name, None, "running", "started outside the sandbox"))
            continue
        rows.append(ComponentStatus(name, rec.pid if rec else None, "running" if rec else "stopped"))
    for node in layout.nodes:
        if daemons.running("slurmctld"):
            state = slurm_cluster.node_state(layout, node) or "unknown"
            rows.append(ComponentStatus("slurm node", None, state, node.name))
        if daemons.running("kube-apiserver"):
            try:
                ready = kube_cluster.node_ready(kube_cluster.admin_api(layout), node.name)
                rows.append(ComponentStatus("kubernetes node", None, "Ready" if ready else "NotReady", node.name))
            except Exception as exc:
                rows.append(ComponentStatus("kubernetes node", None, "error", str(exc)[:80]))
    if layout.sim_nodes:
        alive = sum(1 for node in layout.sim_nodes if daemons.running(slurm_cluster.slurmd_daemon(node)))
        rows.append(ComponentStatus("simulated nodes", None, f"{alive}/{len(layout.sim_nodes)} slurmd running",
                                    f"{layout.sim_nodes[0].name}..{layout.sim_nodes[-1].name}, partition sim"))
    return rows
