"""`skbridge nodes`: CPUs, memory and GPUs by type per node, free and total (one sinfo call)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from bridge.cli.user.common import ConfigOption, JsonOption, emit_json, failures, out, settings_or_exit
from bridge.userview.nodes import add_kubernetes_view, slurm_nodes


def nodes(
    as_json: bool = JsonOption,
    config: Path | None = ConfigOption,
) -> None:
    """Per node: state, CPUs, memory and GPUs by type, free/total. Whether Kubernetes has the node
    too is shown only to root (users cannot query Kubernetes): otherwise it reads "unknown".
    """
    settings = settings_or_exit("nodes", config)
    with failures("nodes"):
        rows = slurm_nodes(settings)
        kube_only = add_kubernetes_view(settings, rows)
    if as_json:
        emit_json({"nodes": [row.as_json() for row in rows], "kubernetes_only": kube_only})
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("NODE", "STATE", "PARTITIONS", "CPU free/total", "MEM free/total (GiB)", "GPU free/total", "KUBERNETES"):
        table.add_column(column)
    free_gpus: dict[str, int] = {}
    total_gpus: dict[str, int] = {}
    for row in rows:
        gpus = ", ".join(f"{row.gpus_free[k]}/{t} {k}" for k, t in sorted(row.gpus_total.items())) or "-"
        for kind, total in row.gpus_total.items():
            total_gpus[kind] = total_gpus.get(kind, 0) + total
            free_gpus[kind] = free_gpus.get(kind, 0) + row.gpus_free[kind]
        kube = row.kubernetes
        style = {"Ready": "green", "missing": "red", "NotReady": "red", "disagrees": "red",
                 "unreachable": "yellow"}.get(kube, "dim")
        if row.kube_node and row.kube_node != row.name:
            kube = f"{kube} ({row.kube_node})"
        table.add_row(row.name, row.state, ",".join(row.partitions),
                      f"{row.cpus_total - row.cpus_alloc}/{row.cpus_total}",
                      f"{(row.memory_mib - row.memory_alloc_mib) / 1024:.0f}/{row.memory_mib / 1024:.0f}",
                      gpus, f"[{style}]{kube}[/]")
    out.print(table)
    if total_gpus:
        out.print("GPUs free: " + ", ".join(f"{free_gpus[k]}/{total_gpus[k]} {k}" for k in sorted(total_gpus)))
    for name in kube_only:
        out.print(f"[red]Kubernetes node {name} has no Slurm node[/red] (jobs never run there)")
    if any(row.kubernetes == "missing" for row in rows):
        out.print("[red]a Slurm node missing in Kubernetes cannot run bridge jobs[/red]")
    for row in rows:
        for problem in row.disagreements:
            out.print(f"[red]{row.name} disagrees: {problem}[/red]")
