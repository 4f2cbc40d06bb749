"""The sandbox's Slurm accounting: a private MariaDB and slurmdbd, so `sacct` and fair-share work.

The watcher's exactly-once recovery looks jobs up by tag in `sacct` once they have left
`squeue`, and users read exit codes from `sacct`; both need real accounting.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

from bridge.errors import PermanentError
from bridge.sandbox.layout import ProgressFn, SandboxLayout
from bridge.sandbox.procs import Daemons

ACCOUNT = "lab"


def _db_dir(layout: SandboxLayout) -> Path:
    return layout.root / "mariadb"


def _socket(layout: SandboxLayout) -> Path:
    return layout.run_dir / "mariadb" / "mariadb.sock"


def _password_file(layout: SandboxLayout) -> Path:
    return layout.slurm_dir / "dbd.password"


def _password(layout: SandboxLayout) -> str:
    path = _password_file(layout)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(16))
    return path.read_text(encoding="ascii").strip()


def render_slurmdbd_conf(layout: SandboxLayout) -> str:
    return "\n".join([
        "# Written by `skbridge sandbox up`.",
        "AuthType=auth/munge",
        "DbdHost=localhost",
        "DbdAddr=127.0.0.1",
        f"DbdPort={layout.ports.slurmdbd}",
        "SlurmUser=root",
        f"PidFile={layout.run_dir}/slurmdbd.daemon.pid",
        "StorageType=accounting_storage/mysql",
        "StorageHost=127.0.0.1",
        f"StoragePort={layout.ports.mariadb}",
        "StorageUser=slurm",
        f"StoragePass={_password(layout)}",
        "StorageLoc=slurm_acct_db",
        "DebugLevel=info",
    ]) + "\n"


def _mariadb_ready(layout: SandboxLayout) -> bool:
    out = subprocess.run(["mariadb", f"--socket={_socket(layout)}", "-uroot", "-e", "SELECT 1"], capture_output=True,
                         timeout=10, check=False)
    return out.returncode == 0


def _sql(layout: SandboxLayout, statement: str) -> None:
    out = subprocess.run(["mariadb", f"--socket={_socket(layout)}", "-uroot", "-e", statement], capture_output=True,
                         text=True, timeout=30, check=False)
    if out.returncode != 0:
        raise PermanentError(f"MariaDB statement failed: {out.stderr.strip()}")


def _slurm_env(layout: SandboxLayout) -> dict[str, str]:
    return dict(os.environ, SLURM_CONF=str(layout.slurm_conf))


def dbd_answers(layout: SandboxLayout) -> bool:
    out = subprocess.run(["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"], env=_slurm_env(layout),
                         capture_output=True, text=True, timeout=20, check=False)
    return out.returncode == 0


def start(layout: SandboxLayout, daemons: Daemons, progress: ProgressFn) -> None:
    data = _db_dir(layout)
    if not (data / "mysql").is_dir():
        progress("initialising MariaDB for slurmdbd")
        data.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "mysql", "mysql")
        out = subprocess.run(["mariadb-install-db", f"--datadir={data}", "--user=mysql",
                              "--auth-root-authentication-method=socket", "--skip-test-db"],
                             capture_output=True, text=True, timeout=300, check=False)
        if out.returncode != 0:
            raise PermanentError(f"mariadb-install-db failed:\n{out.stdout[-1500:]}{out.stderr[-1500:]}")
    # mariadbd drops to the mysql user before it creates its socket and pid file.
    _socket(layout).parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(_socket(layout).parent, "mysql", "mysql")
    progress("starting MariaDB and slurmdbd")
    daemons.start_and_wait("mariadb", [
        "/usr/sbin/mariadbd", f"--datadir={data}", f"--socket={_socket(layout)}", f"--port={layout.ports.mariadb}",
        "--bind-address=127.0.0.1", "--user=mysql", "--skip-name-resolve", f"--pid-file={_socket(layout).parent}/mariadbd.pid",
        "--innodb-flush-log-at-trx-commit=2", "--innodb-buffer-pool-size=64M", "--log-error=",
    ], ready=lambda: _mariadb_ready(layout), timeout_s=60)
    password = _password(layout)
    _sql(layout, "CREATE DATABASE IF NOT EXISTS slurm_acct_db; "
                 f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                 f"CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '{password}'; "
                 "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';")
    conf = layout.slurm_dir / "slurmdbd.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out_file:
        out_file.write(render_slurmdbd_conf(layout))
    daemons.start_and_wait("slurmdbd", ["/usr/sbin/slurmdbd", "-D"], env=_slurm_env(layout),
                           ready=lambda: dbd_answers(layout), timeout_s=60)
    _ensure_cluster(layout)


def _sacctmgr(layout: SandboxLayout, *args: str) -> str:
    out = subprocess.run(["sacctmgr", "-i", "-n", "-P", *args], env=_slurm_env(layout), capture_output=True, text=True,
                         timeout=30, check=False)
    return out.stdout + out.stderr


def _ensure_cluster(layout: SandboxLayout) -> None:
    if "skbsandbox" not in _sacctmgr(layout, "show", "cluster", "format=cluster"):
        _sacctmgr(layout, "add", "cluster", "skbsandbox")
    if ACCOUNT not in _sacctmgr(layout, "show", "account", "format=account"):
        _sacctmgr(layout, "add", "account", ACCOUNT, "description=sandbox lab", "organization=lab")
    ensure_user(layout, "root")


def ensure_user(layout: SandboxLayout, user: str) -> None:
    """Give a user an association so fair-share accounts for their jobs."""
    if user not in _sacctmgr(layout, "show", "user", "format=user").split():
        _sacctmgr(layout, "add", "user", user, f"account={ACCOUNT}", f"defaultaccount={ACCOUNT}")


def stop(daemons: Daemons) -> list[str]:
    return [name for name in ("slurmdbd", "mariadb") if daemons.stop(name)]
