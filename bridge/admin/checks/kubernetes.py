"""Kubernetes' checks: the API with the bridge's credential, its RBAC, the admission policy,
the node mapping, and nodes that run containers and hold the test image."""

from __future__ import annotations

from typing import Any

from bridge.admin.checks.base import Context, Failed, Skipped, check
from bridge.errors import BridgeError

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


def kube_client(ctx: Context) -> Any:
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
    kube = kube_client(ctx)
    try:
        version = kube.request("GET", "/version")
        kube.request("GET", f"/api/v1/namespaces/{ctx.s.kubernetes.namespace}/pods", query={"limit": "1"})
    except BridgeError as exc:
        raise Failed(str(exc), f"check {ctx.s.kubernetes.kubeconfig} and that the API server is reachable") from exc
    return f"Kubernetes {version.get('gitVersion')} at {kube.api_client.configuration.host}"


@check("kubernetes", "RBAC allows exactly what the bridge needs")
def _rbac(ctx: Context) -> str:
    kube = kube_client(ctx)
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

    kube = kube_client(ctx)
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
    items = {str(item["metadata"]["name"]): item for item in kube_client(ctx).request("GET", NODES_PATH).get("items") or []}
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


def test_image(ctx: Context) -> str:
    return ctx.e2e_image or ctx.s.kubernetes.test_image or f"{ctx.s.policy.allowed_registries[0]}/busybox:1.36"


@check("kubernetes", "nodes run containers and hold the test image")
def _runtime(ctx: Context) -> str:
    out = ctx.slurm("sinfo", "-h", "-N", "-o", "%N")
    if out.returncode != 0:
        raise Skipped("sinfo failed: slurmctld does not answer")
    from bridge.kubernetes.nodemap import NODES_PATH, map_nodes

    kube, image = kube_client(ctx), test_image(ctx)
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
