"""Slurm's checks: munge, slurmctld and its scheduler, the hooks and the Lua plugin, the timeouts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bridge.admin.checks.base import Context, Failed, Skipped, check
from bridge.admin.slurm_conf import check_conf, parse_conf


@check("slurm", "munge works")
def _munge(ctx: Context) -> str:
    try:
        encoded = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=False)
        decoded = subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Failed(f"cannot run munge: {exc}", "apt-get install munge; systemctl enable --now munge") from exc
    if encoded.returncode != 0 or decoded.returncode != 0:
        message = (encoded.stderr or decoded.stderr).decode(errors="replace").strip()
        raise Failed(f"munge credential round trip failed: {message}", "start munged (systemctl start munge) and check "
                     "that /etc/munge/munge.key is the same on every node")
    return "credential encoded and decoded"


@check("slurm", "slurmctld answers")
def _slurmctld(ctx: Context) -> str:
    out = ctx.slurm("scontrol", "ping")
    if out.returncode != 0 or "UP" not in out.stdout:
        raise Failed((out.stdout + out.stderr).strip() or "no answer", "start slurmctld (systemctl start slurmctld) "
                     "and read its log")
    return out.stdout.strip().splitlines()[0]


def _live_config(ctx: Context) -> dict[str, str]:
    out = ctx.slurm("scontrol", "show", "config")
    if out.returncode != 0:
        raise Skipped("slurmctld does not answer")
    pairs = (line.partition("=") for line in out.stdout.splitlines())
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


@check("slurm", "scheduler: backfill and multifactor priority")
def _scheduler(ctx: Context) -> str:
    live = _live_config(ctx)
    wanted = {"SchedulerType": "sched/backfill", "PriorityType": "priority/multifactor", "SelectType": "select/cons_tres"}
    wrong = {k: live.get(k) for k, v in wanted.items() if live.get(k) != v}
    if wrong:
        raise Failed(f"running with {wrong}", "set " + ", ".join(f"{k}={wanted[k]}" for k in wrong) +
                     " in slurm.conf (see slurm.conf.example) and restart slurmctld")
    return ", ".join(f"{k}={v}" for k, v in wanted.items())


@check("slurm", "bridge hooks and the Lua plugin are configured")
def _hooks(ctx: Context) -> str:
    path = ctx.slurm_conf_path()
    try:
        values = parse_conf(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise Failed(f"cannot read {path}: {exc.strerror}", "set slurm.conf_path in the bridge's config") from exc
    problems = []
    for key, entry in (("prologslurmctld", "skbridge-prolog-slurmctld"), ("epilogslurmctld", "skbridge-epilog-slurmctld")):
        value = values.get(key)
        if not value:
            problems.append(f"{key} missing")
            continue
        hook = Path(value)
        if not os.access(hook, os.X_OK):
            problems.append(f"{key}={value} is not executable")
        elif hook.name != entry and entry not in hook.read_text(errors="replace")[:4096]:
            problems.append(f"{key}={value} does not run {entry}")
    if "lua" not in (values.get("jobsubmitplugins") or ""):
        problems.append("JobSubmitPlugins lacks lua")
    lua = path.parent / "job_submit.lua"
    if not lua.is_file() or "slurm-k8s-bridge" not in lua.read_text(errors="replace"):
        problems.append(f"{lua} is not the bridge's job_submit.lua")
    if problems:
        wanted = "; ".join(f"{c.line.key}={c.line.value}" for c in check_conf("", ctx.s))
        raise Failed("; ".join(problems), f"run `skbridge install slurm-conf --slurm-conf {path}` and add: {wanted}")
    return f"{path}: PrologSlurmctld, EpilogSlurmctld, JobSubmitPlugins=lua"


@check("slurm", "one road: the plugin enforces the policy in force")
def _one_road(ctx: Context) -> str:
    """Reports what happens to a job without #K8S_IMAGE, and that job_submit.lua was rendered
    with this config's policy and launcher (it is where the policy is enforced at submission)."""
    from bridge.jobfile.launcher import launcher_line, render_job_submit_lua
    from bridge.resources import resource_path

    policy = ctx.s.policy
    lua = ctx.slurm_conf_path().parent / "job_submit.lua"
    try:
        text = lua.read_text(encoding="utf-8")
    except OSError as exc:
        raise Failed(f"cannot read {lua}: {exc.strerror}", f"skbridge install job-submit-lua --target {lua}") from exc
    wanted = render_job_submit_lua(resource_path("deploy/slurm/job_submit.lua").read_text(encoding="utf-8"),
                                   ctx.s.slurm.skbridge_path, ctx.s.slurm.attach_config_path, policy)

    def policy_line(source: str) -> str:
        return next((line for line in source.splitlines() if line.startswith("local POLICY = ")), "")

    line = launcher_line(ctx.s.slurm.skbridge_path, ctx.s.slurm.attach_config_path)
    if policy_line(text) != policy_line(wanted) or f'local SKBRIDGE = "{ctx.s.slurm.skbridge_path}"' not in text:
        raise Failed(f"{lua} was rendered for another policy or launcher than this config's ({line!r})",
                     f"skbridge install job-submit-lua --target {lua}")
    no_image = f"run in a Pod with {policy.default_image}" if policy.default_image else "are refused with the reason"
    host = ", ".join([*(f"account {a}" for a in policy.host_accounts), *(f"partition {p}" for p in policy.host_partitions)])
    return (f"jobs without #K8S_IMAGE {no_image}; on the bare host only: {host or 'nobody'} (and root); "
            "interactive allocations: " + ("host accounts/partitions only" if host else "refused"))


@check("slurm", "timeouts leave the hooks room")
def _timeouts(ctx: Context) -> str:
    live = _live_config(ctx)
    kube = ctx.s.kubernetes
    timeout_s = int((live.get("PrologEpilogTimeout") or "0").split()[0] or 0)
    kill_wait_s = int((live.get("KillWait") or "0").split()[0] or 0)
    problems = []
    if timeout_s and timeout_s <= kube.pod_ready_timeout_s:
        problems.append(f"PrologEpilogTimeout={timeout_s}s is not above pod_ready_timeout_s={kube.pod_ready_timeout_s}")
    if kill_wait_s <= kube.termination_grace_period_s:
        problems.append(f"KillWait={kill_wait_s}s is not above termination_grace_period_s={kube.termination_grace_period_s}")
    if problems:
        raise Failed("; ".join(problems), "raise PrologEpilogTimeout / KillWait in slurm.conf, or lower the bridge's")
    return f"PrologEpilogTimeout={timeout_s or 'unlimited'}s, KillWait={kill_wait_s}s"
