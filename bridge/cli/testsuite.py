"""`skbridge test-suite`: the command admins run after installing."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from bridge.admin.checks import GROUPS, Context, run_checks


def test_suite(
    only: list[str] = typer.Option([], "--only", help=f"Run one group (repeatable): {', '.join(GROUPS)}."),
    user: str | None = typer.Option(None, "--user", help="Lab user who owns the e2e hello job (not root)."),
    image: str | None = typer.Option(None, "--image", help="Image for the hello job (default: first allowed "
                                     "registry + /busybox:1.36)."),
    timeout_s: float = typer.Option(180.0, "--timeout", help="Seconds allowed for each e2e stage."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show details of passing checks and e2e timings."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document with every result."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Config file (default $SKBRIDGE_CONFIG or "
                                       "/etc/slurm-k8s-bridge/config.yaml)."),
) -> None:
    """Check a live installation end to end: config, NAS, munge, slurmctld (backfill, multifactor), hooks and
    Lua plugin, the Kubernetes API and RBAC, node mapping, the watcher, and a hello job from drop to results.

    One line per check: PASS, FAIL (with a fix hint) or SKIP. Exit status 0 only if nothing failed.
    """
    unknown = set(only) - set(GROUPS)
    if unknown:
        typer.echo(f"skbridge test-suite: unknown group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}",
                   err=True)
        raise typer.Exit(2)
    ctx = Context(config_path=config, e2e_user=user, e2e_image=image, e2e_timeout_s=timeout_s)
    console = Console(highlight=False)
    results = []
    for result in run_checks(ctx, set(only) or None):
        results.append(result)
        if as_json:
            continue
        colour = {"PASS": "green", "FAIL": "red", "SKIP": "yellow"}[result.outcome]
        line = f"[{colour}]{result.outcome}[/{colour}] {result.group:<10} {escape(result.name)}"
        if result.outcome != "PASS" or verbose:
            line += f"  [dim]({escape(result.detail)})[/dim]" if result.detail else ""
        console.print(line + f"  [dim]{result.seconds:.1f}s[/dim]")
        if result.outcome == "FAIL" and result.hint:
            console.print(f"      fix: {escape(result.hint)}")
        if verbose and result.timings_s:
            console.print("      timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings_s.items()))
    failed = [r for r in results if r.outcome == "FAIL"]
    if as_json:
        typer.echo(json.dumps({"ok": not failed, "results": [r.as_dict() for r in results]}, indent=2))
    else:
        counts = {k: sum(r.outcome == k for r in results) for k in ("PASS", "FAIL", "SKIP")}
        console.print(f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    if failed:
        raise typer.Exit(1)
