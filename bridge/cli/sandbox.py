"""`skbridge sandbox`: a local Slurm + Kubernetes stack, with a real compute node, for development and tests."""

from __future__ import annotations

import os
import shlex
import subprocess
import time

import typer
from rich.console import Console
from rich.table import Table

from bridge.errors import BridgeError
from bridge.sandbox import k8s_build, manager
from bridge.sandbox.layout import MAX_SIM_NODES, SandboxLayout

app = typer.Typer(
    help="Run a local sandbox: real Slurm (slurmctld + slurmd, fake GPUs) and a real Kubernetes control plane "
    "(etcd, kube-apiserver, controller-manager, scheduler) with real kubelet + containerd nodes named like the "
    "Slurm nodes (node 1 is this host, the others live in network namespaces), where jobs run in containers "
    "(kwok is there for extra simulated nodes). "
    "Its directory is $SKBRIDGE_SANDBOX_DIR (default /var/tmp/skbridge-sandbox).",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


def _progress(message: str) -> None:
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


@app.command()
def up(
    show: bool = typer.Option(True, help="Show sinfo and the Kubernetes nodes at the end."),
    nodes: int | None = typer.Option(
        None, min=1, max=8, help="How many compute nodes (default: as many as the last `up`, else 2). Node 1 is "
        "this host (4 a100 GPUs); node N runs in its own network namespace as skbnodeN (even N: 2 h100 GPUs, "
        "8 CPUs; odd N: like node 1), each with its own slurmd, containerd and kubelet."),
    sim_nodes: int | None = typer.Option(
        None, "--sim-nodes", min=0, max=MAX_SIM_NODES, help="How many simulated nodes for scale work (default: as "
        "many as the last `up`, else 0): each a real slurmd in its own namespaces (about 8 MB) mirrored by a kwok "
        "node, in partition `sim`. Their Pods are simulated: no job really runs there."),
) -> None:
    """Build what is missing (first run: Kubernetes from source, cached), then start everything. Safe to repeat."""
    layout = SandboxLayout.default(nodes, sim_nodes)
    try:
        manager.up(layout, _progress)
    except BridgeError as exc:
        err.print(f"[red]sandbox up failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    if show:
        env = layout.env()
        for argv in (["sinfo", "-N", "-o", "%N %T %c %m %G"],
                     [str(k8s_build.bin_dir() / "kubectl"), "--kubeconfig", env["KUBECONFIG"], "get", "nodes",
                      "-o", "custom-columns=NAME:.metadata.name,READY:.status.conditions[?(@.type=='Ready')].status,"
                      "CPU:.status.capacity.cpu,MEMORY:.status.capacity.memory,GPU:.status.capacity.nvidia\\.com/gpu"]):
            console.rule(" ".join(argv[:1] if argv[0] == "sinfo" else ["kubectl get nodes"]))
            subprocess.run(argv, env={**os.environ, **env}, check=False)
        console.print("\nUse it from a shell: [bold]eval \"$(skbridge sandbox env)\"[/bold]")


@app.command()
def demo() -> None:
    """Drop examples/hello-gpu.sh into the sandbox's submit folder as a lab user and follow it:
    Slurm job, Pod on the allocated node, exit code in sacct, results folder on the NAS."""
    from bridge.sandbox.demo import run_demo

    def show(title: str, text: str) -> None:
        console.rule(title)
        console.print(text.rstrip(), markup=False, highlight=False)

    try:
        code = run_demo(SandboxLayout.default(), show, _progress)
    except BridgeError as exc:
        err.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


@app.command()
def down(purge: bool = typer.Option(False, help="Also delete the sandbox directory (state, logs, NAS).")) -> None:
    """Stop exactly the processes `up` started, and any process they left behind."""
    manager.down(SandboxLayout.default(), _progress, purge=purge)


@app.command()
def status() -> None:
    """Show each component and its state; exits 1 when something is not running."""
    layout = SandboxLayout.default()
    table = Table(title=f"sandbox {layout.root}")
    for column in ("component", "pid", "state", "detail"):
        table.add_column(column)
    rows = manager.status(layout)
    for row in rows:
        colour = "green" if row.state in {"running", "Ready", "idle", "mixed", "allocated"} else "red"
        table.add_row(row.name, str(row.pid or ""), f"[{colour}]{row.state}[/{colour}]", row.detail)
    console.print(table)
    if any(row.state in {"stopped", "error", "NotReady"} for row in rows):
        raise typer.Exit(1)


@app.command()
def env() -> None:
    """Print `export` lines for SLURM_CONF, KUBECONFIG and SKBRIDGE_CONFIG: eval "$(skbridge sandbox env)"."""
    layout = SandboxLayout.default()
    for key, value in layout.env().items():
        typer.echo(f"export {key}={shlex.quote(value)}")
    typer.echo(f"export PATH={shlex.quote(str(k8s_build.bin_dir()))}:\"$PATH\"")
