"""The watcher's checks: it runs, it serves the Slurm hooks warm, and it reads the config as it is now."""

from __future__ import annotations

import fcntl
import os

from bridge.admin.checks.base import Context, Failed, Skipped, check


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
