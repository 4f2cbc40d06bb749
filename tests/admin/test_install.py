"""Issue 19: install.sh tells the truth. A dry run changes nothing on the machine and says so;
messages name the Slurm config actually in use."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import Sandbox

REPO = Path(__file__).resolve().parents[2]


def _tree(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under `roots` with its mode, size and mtime: what a change would touch."""
    found: dict[str, tuple[int, int, int]] = {}
    for root in roots:
        if not os.path.lexists(root):
            continue
        paths = [root] if not root.is_dir() else [root, *root.rglob("*")]
        for path in paths:
            info = path.lstat()
            found[str(path)] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def test_a_dry_run_changes_nothing_and_says_so(sandbox: Sandbox) -> None:
    roots = [Path("/opt/slurm-k8s-bridge"), Path("/etc/slurm-k8s-bridge"), Path("/var/lib/slurm-k8s-bridge"),
             Path("/var/log/slurm-k8s-bridge"), Path("/usr/local/bin/skbridge"),
             Path("/etc/systemd/system/skbridge-watcher.service"), Path("/etc/systemd/system/skbridge-serve.service"),
             # What install.sh writes next to slurm.conf (not slurmctld's own state, which moves on).
             sandbox.layout.slurm_conf, sandbox.layout.slurm_dir / "job_submit.lua"]
    before = _tree(*roots)
    env = {**os.environ, "SLURM_CONF": str(sandbox.layout.slurm_conf)}
    done = subprocess.run(["bash", str(REPO / "install.sh"), "--dry-run", "--no-systemd", "--config",
                           str(sandbox.layout.bridge_config), "--kubeconfig", sandbox.layout.env()["KUBECONFIG"]],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _tree(*roots) == before, "a dry run must not touch the machine"
    out = done.stdout
    assert "Dry run: nothing was changed" in out and "Installed." not in out
    for step in ("pip install", "install nas-layout", "install kubernetes", "job-submit-lua", "slurm.conf"):
        assert step in out, f"the dry run does not show the step {step!r}:\n{out}"
    assert "No such file or directory" not in done.stderr, done.stderr


def test_messages_name_the_slurm_config_in_use(sandbox: Sandbox) -> None:
    # No SLURM_CONF given: install.sh asks slurmctld which file it runs with, rather than
    # guessing /etc/slurm/slurm.conf.
    env = {key: value for key, value in os.environ.items() if key != "SLURM_CONF"}
    script = f'source <(sed -n "/^slurm_conf_in_use()/,/^}}/p" {REPO / "install.sh"}); slurm_conf_in_use'
    found = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert found.stdout.strip() == str(sandbox.layout.slurm_conf)
