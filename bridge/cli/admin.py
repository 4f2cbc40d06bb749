"""Admin commands: `skbridge config ...` and `skbridge install ...` (install.sh runs the latter)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import typer

from bridge.admin.config_example import config_example
from bridge.admin.slurm_conf import apply_conf, check_conf
from bridge.errors import BridgeError
from bridge.settings import Settings, load_settings

config_app = typer.Typer(help="Show the bridge's configuration.", no_args_is_help=True)
install_app = typer.Typer(help="Installation steps (install.sh runs these; each is safe to repeat).",
                          no_args_is_help=True)
ConfigOption = typer.Option(None, "--config", "-c", help="Config file (default $SKBRIDGE_CONFIG or "
                            "/etc/slurm-k8s-bridge/config.yaml).")


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except BridgeError as exc:
        typer.echo(f"skbridge: {exc}", err=True)
        raise typer.Exit(2) from exc


@config_app.command("example")
def example(nas_root: Path | None = typer.Option(None, help="NAS mount point to write in (uncommented).")) -> None:
    """Print a commented config file with every key, its default and what it means."""
    typer.echo(config_example(nas_root=nas_root), nl=False)


@config_app.command("reference")
def reference() -> None:
    """Print docs/configuration.md: every key with its default and meaning, as Markdown."""
    from bridge.admin.config_example import config_reference

    typer.echo(config_reference(), nl=False)


@config_app.command("show")
def show(config: Path | None = ConfigOption) -> None:
    """Print the effective configuration (file + environment overrides + defaults) as YAML."""
    import yaml

    typer.echo(yaml.safe_dump(_settings(config).model_dump(mode="json"), sort_keys=False), nl=False)


@install_app.command("nas-layout")
def nas_layout(
    config: Path | None = ConfigOption,
    user: list[str] = typer.Option([], "--user", "-u",
                                   help="Also make submit/<USER>/ for this account (repeatable; for directories "
                                        "such as LDAP that do not list their users)."),
) -> None:
    """Create the NAS folders (submit/<user>/ for each user, processing/ watcher-only, ...)."""
    import pwd

    from bridge.ingest.layout import ensure_nas_layout, ensure_user_folders, nas_folders

    settings = _settings(config)
    accounts = []
    for name in user:
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            raise typer.BadParameter(f"no account {name!r} on this host", param_hint="--user") from None
        if not settings.policy.uid_min <= account.pw_uid <= settings.policy.uid_max:
            raise typer.BadParameter(f"{name} (uid {account.pw_uid}) is outside policy.uid_min..uid_max",
                                     param_hint="--user")
        accounts.append(account)
    changed = ensure_nas_layout(settings.nas, settings.policy)
    changed += ensure_user_folders(settings.nas, settings.policy, accounts)
    for spec in nas_folders(settings.nas):
        typer.echo(f"{'fixed' if spec.path in changed else 'ok   '} {oct(spec.mode)[2:]:>5} {spec.path}  ({spec.purpose})")
    users = [path for path in changed if path.parent == settings.nas.submit_dir]
    typer.echo(f"made   {len(users)} user drop folders submit/<user>/ (0700, owned by the user)")


@install_app.command("kubernetes")
def kubernetes(
    admin_kubeconfig: Path = typer.Option(..., help="A kubeconfig allowed to create namespaces and RBAC."),
    manifests: Path = typer.Option(Path("/opt/slurm-k8s-bridge/share/deploy/kubernetes"), help="deploy/kubernetes."),
    write_kubeconfig: Path = typer.Option(Path("/etc/slurm-k8s-bridge/kubeconfig"),
                                          help="Where to write the bridge's own kubeconfig (root-only)."),
    config: Path | None = ConfigOption,
) -> None:
    """Apply the namespace, the bridge's ServiceAccount, least-privilege RBAC and the admission policy that
    limits the bridge's own credential (NAS root and uid_min from the config); write its kubeconfig (mode 0600)."""
    from kubernetes import config as kube_config

    from bridge.kubernetes.admission import bridge_manifests
    from bridge.kubernetes.apply import apply_manifests
    from bridge.kubernetes.credentials import write_bridge_kubeconfig

    settings = _settings(config)
    api = kube_config.new_client_from_config(config_file=str(admin_kubeconfig))
    for line in apply_manifests(api, bridge_manifests(sorted(manifests.glob("*.yaml")), settings)):
        typer.echo(line)
    write_kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    write_bridge_kubeconfig(api, write_kubeconfig)
    typer.echo(f"wrote {write_kubeconfig} (0600, the bridge's ServiceAccount token)")


@install_app.command("job-submit-lua")
def job_submit_lua(
    target: Path = typer.Option(..., help="Where slurmctld reads it: job_submit.lua next to slurm.conf."),
    template: Path = typer.Option(Path("/opt/slurm-k8s-bridge/share/deploy/slurm/job_submit.lua"),
                                  help="deploy/slurm/job_submit.lua."),
    config: Path | None = ConfigOption,
) -> None:
    """Write job_submit.lua for this installation: the launcher line with the config's slurm.skbridge_path and
    slurm.attach_config_path (exactly the line the watcher writes), the site maxima and the one-road policy."""
    from bridge.jobfile.launcher import render_job_submit_lua

    settings = _settings(config)
    text = render_job_submit_lua(template.read_text(encoding="utf-8"), settings.slurm.skbridge_path,
                                 settings.slurm.attach_config_path, settings.policy)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o644)
    tmp.replace(target)
    typer.echo(f"wrote {target} (launcher {settings.slurm.skbridge_path}; policy from the config)")


@install_app.command("slurm-conf")
def slurm_conf(
    slurm_conf_path: Path = typer.Option(Path("/etc/slurm/slurm.conf"), "--slurm-conf", help="slurm.conf to check."),
    apply: bool = typer.Option(False, "--apply", help="Write the lines into slurm.conf (a backup is kept)."),
    config: Path | None = ConfigOption,
) -> None:
    """Show the slurm.conf lines the bridge needs (or apply them with --apply), then check them with Slurm."""
    settings = _settings(config)
    if apply:
        backup = apply_conf(slurm_conf_path, settings)
        typer.echo(f"updated {slurm_conf_path} (backup {backup})" if backup else f"{slurm_conf_path} already right")
        if backup:
            done = subprocess.run(["scontrol", "reconfigure"], capture_output=True, text=True, check=False,
                                  env=settings.slurm.env() | {"SLURM_CONF": str(slurm_conf_path)})
            typer.echo("scontrol reconfigure: " + ("ok" if done.returncode == 0 else done.stderr.strip()))
    checks = check_conf(slurm_conf_path.read_text(encoding="utf-8"), settings)
    missing = [c for c in checks if not c.ok]
    for check in checks:
        state = "ok     " if check.ok else ("missing" if check.found is None else f"differs (now {check.found})")
        typer.echo(f"{state:<8} {check.line.key}={check.line.value}   # {check.line.why}")
    live = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=False,
                          env=settings.slurm.env() | {"SLURM_CONF": str(slurm_conf_path)})
    if live.returncode == 0:
        running = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition("=") for line in live.stdout.splitlines()) if _}
        stale = [c.line.key for c in checks if c.ok and c.line.key.lower() in running
                 and running[c.line.key.lower()].split()[0].lower() != c.line.value.lower()]
        if stale:
            typer.echo(f"slurmctld still runs with other values for {', '.join(stale)}: restart slurmctld")
    if missing:
        typer.echo(f"\nAdd these lines to {slurm_conf_path} (or rerun with --apply), then restart slurmctld:")
        for check in missing:
            typer.echo(f"  {check.line.key}={check.line.value}")
        raise typer.Exit(1)
