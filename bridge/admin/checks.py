"""`skbridge test-suite`: checks a live installation, one line per check with a fix hint.

Groups: config, nas, slurm, kubernetes, watcher, e2e. Each check returns PASS, FAIL or SKIP
with a detail and, on failure, what to do about it. A check never raises: an unexpected
error is a FAIL that says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bridge.admin.slurm_conf import check_conf, parse_conf
from bridge.errors import BridgeError
from bridge.ingest.layout import ensure_user_folder, nas_folders
from bridge.settings import Settings, load_settings
from bridge.slurm.vocabulary import is_live
from bridge.waiting import poll

Outcome = Literal["PASS", "FAIL", "SKIP"]
GROUPS = ("config", "nas", "slurm", "kubernetes", "watcher", "e2e")
ETC_SLURM_CONF = Path("/etc/slurm/slurm.conf")


@dataclass
class CheckResult:
    group: str
    name: str
    outcome: Outcome
    detail: str = ""
    hint: str = ""
    seconds: float = 0.0
    timings_s: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Failed(Exception):
    def __init__(self, detail: str, hint: str) -> None:
        super().__init__(detail)
        self.detail, self.hint = detail, hint


class Skipped(Exception):
    pass


@dataclass
class Context:
    config_path: Path | None
    e2e_user: str | None
    e2e_image: str | None
    e2e_timeout_s: float
    settings: Settings | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def s(self) -> Settings:
        if self.settings is None:
            raise Skipped("configuration did not load")
        return self.settings

    def slurm(self, *argv: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        env = self.s.slurm.env()
        return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=timeout_s, check=False)

    def slurm_conf_path(self) -> Path:
        return self.s.slurm.conf_path or Path(os.environ.get("SLURM_CONF") or ETC_SLURM_CONF)


CheckFn = Callable[[Context], str]
CHECKS: list[tuple[str, str, CheckFn]] = []


def check(group: str, name: str) -> Callable[[CheckFn], CheckFn]:
    def register(fn: CheckFn) -> CheckFn:
        CHECKS.append((group, name, fn))
        return fn

    return register


# -- config -----------------------------------------------------------------------------------


@check("config", "configuration loads")
def _config(ctx: Context) -> str:
    try:
        ctx.settings = load_settings(ctx.config_path)
    except BridgeError as exc:
        raise Failed(str(exc), "fix the key named above in the config file (see `skbridge config example`)") from exc
    return str(ctx.config_path or os.environ.get("SKBRIDGE_CONFIG") or "/etc/slurm-k8s-bridge/config.yaml")


# -- nas --------------------------------------------------------------------------------------


@check("nas", "NAS folders exist with the right owner and mode")
def _nas(ctx: Context) -> str:
    problems = []
    for spec in nas_folders(ctx.s.nas):
        try:
            info = spec.path.stat()
        except OSError:
            problems.append(f"{spec.path} missing")
            continue
        if stat.S_IMODE(info.st_mode) != spec.mode or info.st_uid != 0:
            problems.append(f"{spec.path} is {oct(stat.S_IMODE(info.st_mode))} owner uid {info.st_uid}, "
                            f"want {oct(spec.mode)} root")
    if problems:
        raise Failed("; ".join(problems), "run `skbridge install nas-layout` as root")
    return f"{len(nas_folders(ctx.s.nas))} folders under {ctx.s.nas.root}"


# -- slurm ------------------------------------------------------------------------------------


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


# -- kubernetes -------------------------------------------------------------------------------

# What the bridge must be allowed to do, and samples of what it must not.
NEEDED = [("create", "pods", ""), ("delete", "pods", ""), ("watch", "pods", ""), ("get", "pods/log", ""),
          ("get", "pods/exec", ""), ("create", "pods/exec", ""),  # granted on to interactive jobs' Roles (skbridge shell)
          ("create", "configmaps", ""), ("delete", "configmaps", ""), ("create", "persistentvolumeclaims", ""),
          ("patch", "persistentvolumeclaims", ""), ("delete", "persistentvolumeclaims", ""),
          ("create", "persistentvolumes", ""),
          ("delete", "persistentvolumes", ""), ("create", "serviceaccounts", ""), ("create", "serviceaccounts/token", ""),
          ("create", "roles", "rbac.authorization.k8s.io"), ("create", "rolebindings", "rbac.authorization.k8s.io"),
          ("bind", "roles", "rbac.authorization.k8s.io"),
          ("list", "events", ""), ("list", "nodes", "")]
FORBIDDEN = [("get", "secrets", "", True), ("create", "pods", "", False), ("delete", "nodes", "", True),
             ("create", "clusterrolebindings", "rbac.authorization.k8s.io", True),
             ("bind", "clusterroles", "rbac.authorization.k8s.io", True),
             ("escalate", "roles", "rbac.authorization.k8s.io", True)]


def _kube(ctx: Context) -> Any:
    from bridge.kubernetes.client import load_client

    try:
        return load_client(ctx.s.kubernetes.kubeconfig, timeout_s=ctx.s.kubernetes.api_timeout_s)
    except BridgeError as exc:
        raise Failed(str(exc), "rerun `skbridge install kubernetes --admin-kubeconfig FILE`") from exc


def _can(kube: Any, verb: str, resource: str, group: str, namespace: str | None) -> bool:
    sub = ""
    if "/" in resource:
        resource, sub = resource.split("/", 1)
    attributes = {"verb": verb, "resource": resource, "group": group, "subresource": sub}
    if namespace:
        attributes["namespace"] = namespace
    answer = kube.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body={
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes}})
    return bool((answer.get("status") or {}).get("allowed"))


@check("kubernetes", "API answers with the bridge's credentials")
def _kube_api(ctx: Context) -> str:
    kube = _kube(ctx)
    try:
        version = kube.request("GET", "/version")
        kube.request("GET", f"/api/v1/namespaces/{ctx.s.kubernetes.namespace}/pods", query={"limit": "1"})
    except BridgeError as exc:
        raise Failed(str(exc), f"check {ctx.s.kubernetes.kubeconfig} and that the API server is reachable") from exc
    return f"Kubernetes {version.get('gitVersion')} at {kube.api_client.configuration.host}"


@check("kubernetes", "RBAC allows exactly what the bridge needs")
def _rbac(ctx: Context) -> str:
    kube = _kube(ctx)
    ns = ctx.s.kubernetes.namespace
    cluster_scoped = {"persistentvolumes", "nodes"}
    missing = [f"{verb} {res}" for verb, res, group in NEEDED
               if not _can(kube, verb, res, group, None if res in cluster_scoped else ns)]
    extra = [f"{verb} {res}" + (" in namespace default" if not in_ns else "") for verb, res, group, in_ns in FORBIDDEN
             if _can(kube, verb, res, group, (ns if in_ns else "default") if res not in {"nodes"} else None)]
    if missing or extra:
        detail = (f"missing: {', '.join(missing)}" if missing else "") + \
                 ("; " if missing and extra else "") + (f"more than needed: {', '.join(extra)}" if extra else "")
        raise Failed(detail, "re-apply deploy/kubernetes/10-rbac.yaml (skbridge install kubernetes) and remove "
                     "other bindings of the skbridge ServiceAccount")
    return f"{len(NEEDED)} needed verbs allowed, {len(FORBIDDEN)} others denied"


@check("kubernetes", "admission policy confines the bridge's credential")
def _admission(ctx: Context) -> str:
    """Dry runs with the bridge's own credential: a volume outside the NAS root must be refused
    by the policy, one under it accepted (nothing is created either way)."""
    from bridge.kubernetes.client import KubeRejected

    kube = _kube(ctx)
    ns = ctx.s.kubernetes.namespace

    def dry_run_volume(path: str) -> str | None:
        name = "skb-0-r0-test-suite"
        body = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                         "claimRef": {"namespace": ns, "name": name}, "hostPath": {"path": path}}}
        try:
            kube.request("POST", "/api/v1/persistentvolumes", body=body, query={"dryRun": "All"})
        except KubeRejected as exc:
            return str(exc)
        return None

    outside = dry_run_volume("/etc")
    if outside is None or "slurm-k8s-bridge" not in outside:
        raise Failed(f"a hostPath volume on /etc was {'accepted' if outside is None else 'refused, but not by the policy'}",
                     "apply deploy/kubernetes/20-admission.yaml and its parameters (skbridge install kubernetes)")
    inside = dry_run_volume(str(ctx.s.nas.home_root))
    if inside is not None:
        raise Failed(f"a volume under the NAS root was refused: {inside}",
                     "the policy's nasRoot must match nas.root: rerun skbridge install kubernetes")
    return f"volumes outside {ctx.s.nas.root} refused, inside accepted"


@check("kubernetes", "Slurm nodes map to Kubernetes nodes with the same CPUs, memory and GPUs")
def _nodes(ctx: Context) -> str:
    from bridge.kubernetes.nodemap import NODES_PATH, NodeSize, disagreements, kube_node_size, map_nodes

    out = ctx.slurm("sinfo", "-h", "-N", "-o", "%N|%c|%m|%G")
    if out.returncode != 0:
        raise Skipped("sinfo failed: slurmctld does not answer")
    sizes: dict[str, NodeSize] = {}
    for line in sorted(set(out.stdout.split())):
        node, cpus, memory, gres = [*line.split("|"), "", "", ""][:4]
        gpus = sum(int(part.split(":")[-1].split("(")[0]) for part in gres.split(",") if part.startswith("gpu"))
        sizes[node] = NodeSize(cpus=int(cpus or 0), memory_mib=int(memory or 0), gpus=gpus)
    items = {str(item["metadata"]["name"]): item for item in _kube(ctx).request("GET", NODES_PATH).get("items") or []}
    mapping = map_nodes(ctx.s.kubernetes, sizes, items.values())
    problems, seen = [], []
    for node, size in sizes.items():
        name = mapping[node]
        if name is None:
            problems.append(f"Slurm node {node} has no Kubernetes node ({_mapping_rule(ctx, node)})")
            continue
        found = disagreements(size, kube_node_size(items[name], ctx.s.kubernetes.gpu_resource))
        problems += [f"{node} (Kubernetes {name}): {problem}" for problem in found]
        if not found:
            seen.append(f"{node}->{name}({size.cpus} CPUs, {size.gpus} GPUs)")
    # A map entry for a node Slurm does not have is stale or misspelt (and its node gets no job).
    problems += [f"kubernetes.node_map names Slurm node {node}, which Slurm does not have"
                 for node in sorted(set(ctx.s.kubernetes.node_map) - set(sizes))]
    # A Kubernetes node that could take Pods but stands for no Slurm node gets no bridge job:
    # a naming mistake (or a node_map/node_label entry missing). Cordoned or tainted ones are
    # left out (control planes, other workloads).
    mapped = {name for name in mapping.values() if name is not None}
    for name, item in sorted(items.items()):
        spec = item.get("spec") or {}
        if name not in mapped and not spec.get("unschedulable") and not any(
                taint.get("effect") in ("NoSchedule", "NoExecute") for taint in spec.get("taints") or []):
            problems.append(f"Kubernetes node {name} has no Slurm node")
    if problems:
        raise Failed("; ".join(problems), "name Kubernetes nodes like Slurm nodes (or set kubernetes.node_map or "
                     "kubernetes.node_label) and match slurm.conf's CPUs/RealMemory and gres.conf to the kubelet's")
    return ", ".join(seen)


def _mapping_rule(ctx: Context, node: str) -> str:
    settings = ctx.s.kubernetes
    if node in settings.node_map:
        return f"kubernetes.node_map names {settings.node_map[node]}"
    if settings.node_label:
        return f"no single node labelled {settings.node_label}={node}"
    return "no node of the same name"


def _test_image(ctx: Context) -> str:
    return ctx.e2e_image or ctx.s.kubernetes.test_image or f"{ctx.s.policy.allowed_registries[0]}/busybox:1.36"


@check("kubernetes", "nodes run containers and hold the test image")
def _runtime(ctx: Context) -> str:
    out = ctx.slurm("sinfo", "-h", "-N", "-o", "%N")
    if out.returncode != 0:
        raise Skipped("sinfo failed: slurmctld does not answer")
    from bridge.kubernetes.nodemap import NODES_PATH, map_nodes

    kube, image = _kube(ctx), _test_image(ctx)
    kube_nodes = {str(item["metadata"]["name"]): item for item in kube.request("GET", NODES_PATH).get("items") or []}
    mapping = map_nodes(ctx.s.kubernetes, sorted(set(out.stdout.split())), kube_nodes.values())
    problems, seen = [], []
    for node in sorted(set(out.stdout.split())):
        found = kube_nodes.get(mapping.get(node) or "")
        if found is None:
            continue  # the node-mapping check reports it
        status = found.get("status") or {}
        runtime = (status.get("nodeInfo") or {}).get("containerRuntimeVersion") or ""
        if "kwok.x-k8s.io/node" in ((found.get("metadata") or {}).get("annotations") or {}):
            problems.append(f"{node} is simulated by kwok: nothing runs there")
            continue
        if not runtime:
            problems.append(f"{node}: the kubelet reports no container runtime")
            continue
        names = {name for entry in status.get("images") or [] for name in entry.get("names") or []}
        if image not in names and f"docker.io/library/{image}" not in names:
            problems.append(f"{node} ({runtime}) does not hold {image}")
            continue
        seen.append(f"{node} ({runtime})")
    if problems:
        raise Failed("; ".join(problems), f"check containerd and the kubelet on those nodes; pull {image} there, or "
                     "pass --image / set kubernetes.test_image to an image the nodes hold")
    return f"{', '.join(seen)} hold {image}"


# -- watcher ----------------------------------------------------------------------------------


@check("watcher", "the watcher service is running")
def _watcher(ctx: Context) -> str:
    lock = ctx.s.ingest.lock_path
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError as exc:
        raise Failed(f"{lock} does not exist: the watcher never ran here",
                     "systemctl enable --now skbridge-watcher") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return f"holds {lock}"
    finally:
        os.close(fd)
    raise Failed("no watcher holds its lock", "systemctl restart skbridge-watcher; journalctl -u skbridge-watcher")


@check("watcher", "the watcher runs the Slurm hooks warm")
def _hook_socket(ctx: Context) -> str:
    from bridge.hooks.server import ping

    path = ctx.s.slurm.hook_socket_path
    if path is None:
        raise Skipped("slurm.hook_socket_path is null: the hooks run as their own processes (~0.3 s more per job)")
    if not ping(path):
        raise Failed(f"nothing answers on {path}: the hooks fall back to running as processes",
                     "systemctl restart skbridge-watcher; journalctl -u skbridge-watcher")
    return f"answers on {path}"


@check("watcher", "the running watcher uses the config file as it is now")
def _config_fresh(ctx: Context) -> str:
    from bridge.hooks.server import server_info
    from bridge.settings import config_digest, config_file_in_effect

    path = ctx.s.slurm.hook_socket_path
    if path is None:
        raise Skipped("slurm.hook_socket_path is null: the hooks read the config afresh each time")
    info = server_info(path)
    if info is None:
        raise Skipped(f"nothing answers on {path} (see the check above)")
    config = config_file_in_effect(ctx.config_path)
    if config is None:
        raise Skipped("no config file: the bridge runs on its defaults")
    if info.get("config_sha256") != config_digest(config):
        raise Failed(f"{config} changed after the watcher (pid {info.get('pid')}) read "
                     f"{info.get('config_path')}: its hooks still use the old settings",
                     "systemctl reload skbridge-watcher (or kill -HUP the watcher's pid)")
    return f"pid {info.get('pid')} runs with {config} as it is now"


# -- e2e --------------------------------------------------------------------------------------

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
    image = _test_image(ctx)
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
    kube = _kube(ctx)
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


def run_checks(ctx: Context, only: set[str] | None = None) -> Iterator[CheckResult]:
    for group, name, fn in CHECKS:
        if only and group not in only and group != "config":
            continue
        started = time.monotonic()
        ctx.timings_s = {}
        try:
            detail = fn(ctx)
            result = CheckResult(group, name, "PASS", detail)
        except Failed as exc:
            result = CheckResult(group, name, "FAIL", exc.detail, exc.hint)
        except Skipped as exc:
            result = CheckResult(group, name, "SKIP", str(exc))
        except Exception as exc:
            result = CheckResult(group, name, "FAIL", f"unexpected error: {type(exc).__name__}: {exc}",
                                 "run with --verbose and report this")
        result.seconds = round(time.monotonic() - started, 2)
        result.timings_s = dict(ctx.timings_s)
        yield result
