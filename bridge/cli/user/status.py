"""`skbridge status JOBID`: Slurm's state and reason, the Pod, resources, a timeline, output and results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from bridge.cli.user.common import ConfigOption, JsonOption, emit_json, failures, out, settings_or_exit
from bridge.userview.fields import format_duration
from bridge.userview.status import job_status

_COLOURS = {"RUNNING": "green", "COMPLETED": "green", "PENDING": "yellow", "CONFIGURING": "yellow",
            "FAILED": "red", "CANCELLED": "red", "TIMEOUT": "red", "OUT_OF_MEMORY": "red", "NODE_FAIL": "red"}


def status(
    job_id: str = typer.Argument(..., help="Slurm job id."),
    as_json: bool = JsonOption,
    config: Path | None = ConfigOption,
) -> None:
    """Where your job is: Slurm's state (a pending job says why it waits and its place in the
    queue), node, CPUs, memory and GPU indices, the Pod's phase, a timeline, the output file and
    the results folder.
    """
    settings = settings_or_exit("status", config)
    with failures("status"):
        data = job_status(settings, job_id)
    if as_json:
        emit_json(data)
        return
    show(data)


def _resources(data: dict[str, Any]) -> str:
    parts = []
    if data["cpus"]:
        parts.append(f"{data['cpus']} CPU{'s' if data['cpus'] != 1 else ''}")
    if data["memory_mib"]:
        parts.append(f"{data['memory_mib']} MiB")
    gpus = data["gpus"]
    if gpus["count"]:
        text = f"{gpus['count']} GPU{'s' if gpus['count'] != 1 else ''}"
        if gpus["type"]:
            text += f" ({gpus['type']})"
        if gpus["indices"]:
            text += " indices " + ",".join(str(i) for i in gpus["indices"])
        parts.append(text)
    return ", ".join(parts) or "-"


def show(data: dict[str, Any]) -> None:
    state = data["state"]
    head = Text(f"Job {data['job_id']}  ")
    head.append(data["name"] or "", style="bold")
    head.append("  ")
    head.append(state, style=_COLOURS.get(state, "white"))
    out.print(head)
    rows: list[tuple[str, str]] = []
    if data["reason_text"]:
        rows.append(("waiting", data["reason_text"]))
    elif data["reason"]:
        rows.append(("reason", data["reason"]))
    if data["queue_position"]:
        place = data["queue_position"]
        rows.append(("queue", f"{place['place']} of {place['of']} pending in its partition"))
    if data["estimated_start"]:
        rows.append(("estimated start", data["estimated_start"]))
    rows.append(("node", f"{data['node'] or '-'}" + (f"  (partition {data['partition']})" if data["partition"] else "")))
    rows.append(("resources", _resources(data)))
    if data["elapsed_s"] is not None:
        limit = format_duration(data["time_limit_s"]) if data["time_limit_s"] else "unlimited"
        rows.append(("elapsed", f"{format_duration(data['elapsed_s'])} of {limit}"))
    pod = data["pod"]
    if pod["phase"] or pod["source"]:
        rows.append(("pod", f"{pod['name']} {pod['phase'] or '-'}" + (f"  (from {pod['source']})" if pod["source"] else "")))
    if data["bridge"] and data["bridge"]["reason"]:
        rows.append(("bridge", f"{data['bridge']['state']}: {data['bridge']['reason']}"))
    if data["exit_code"] is not None:
        code = str(data["exit_code"]) + (f" (signal {data['signal']})" if data["signal"] else "")
        rows.append(("exit code", code))
    rows.append(("output", (data["output"] or "unknown (Slurm no longer remembers it)") +
                 ("" if data["output_exists"] or not data["output"] else "  (not there yet)")))
    rows.append(("results", data["results_dir"] + ("" if data["results_ready"] else "  (after the job ends)")))
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    for key, value in rows:
        table.add_row(key, Text(value))
    out.print(table)
    if data["timeline"]:
        timeline = Table(title=None, show_edge=False, box=None, padding=(0, 2))
        timeline.add_column("timeline", style="dim")
        timeline.add_column("time (UTC)")
        timeline.add_column("after", justify="right")
        for step in data["timeline"]:
            after = _after(step["after_s"])
            timeline.add_row(step["event"], step["time"], after)
        out.print(timeline)


def _after(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"+{seconds:.1f}s" if seconds < 60 else "+" + format_duration(seconds)
