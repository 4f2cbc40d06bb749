"""Issue 19: a config change reaches the running watcher by a documented action (SIGHUP, which
`systemctl reload skbridge-watcher` sends, or `skbridge admin reload`), a broken config is
refused without stopping it, and an upgrade installed over a running watcher reaches the hooks
it serves without losing the job in flight."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.admin.reload import running_watcher_pid
from bridge.hooks.server import server_info
from bridge.sandbox import manager
from bridge.sandbox.procs import Daemons
from bridge.settings import config_digest
from tests.admin.test_admin import REPO, run_test_suite
from tests.conftest import Sandbox, wait_for
from tests.jobs.conftest import Jobs, job_script

SKBRIDGE = str(Path(sys.executable).parent / "skbridge")
STALE_CHECK = "the running watcher uses the config file as it is now"


def _info(jobs: Jobs) -> dict[str, object]:
    path = jobs.settings.slurm.hook_socket_path
    assert path is not None
    info = server_info(path)
    assert info is not None, f"nothing answers on {path}"
    return info


def _reload(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SKBRIDGE, "admin", "reload", "--config", str(sandbox.layout.bridge_config), *args],
                          capture_output=True, text=True, timeout=180, check=False)


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers of the shared sandbox config never see it half-written."""
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.chmod(part, path.stat().st_mode & 0o777)
    os.replace(part, path)


@pytest.fixture
def config_restored(sandbox: Sandbox) -> Iterator[bytes]:
    original = sandbox.layout.bridge_config.read_bytes()
    yield original
    if sandbox.layout.bridge_config.read_bytes() != original:
        _write_atomically(sandbox.layout.bridge_config, original)
    assert _reload(sandbox).returncode == 0


def test_a_reload_takes_the_new_config_and_a_broken_one_is_refused(sandbox: Sandbox, jobs: Jobs,
                                                                   config_restored: bytes) -> None:
    config = sandbox.layout.bridge_config
    before = _info(jobs)
    pid = running_watcher_pid(jobs.settings.ingest.lock_path)
    assert pid is not None and pid == before["pid"]

    _write_atomically(config, config_restored + b"\n# changed by the reload test\n")
    _code, results = run_test_suite(sandbox, "--only", "watcher")
    assert results[STALE_CHECK]["outcome"] == "FAIL" and "reload" in str(results[STALE_CHECK]["hint"])

    done = _reload(sandbox)
    assert done.returncode == 0, done.stderr
    assert f"watcher pid {pid} runs version" in done.stdout
    after = _info(jobs)
    assert after["pid"] == pid, "a reload keeps the pid systemd tracks"
    assert after["started_at"] != before["started_at"] and after["config_sha256"] == config_digest(config)
    code, results = run_test_suite(sandbox, "--only", "watcher")
    assert code == 0 and results[STALE_CHECK]["outcome"] == "PASS", results

    # A served hook after the reload works (the prolog and epilog of a real job in a container).
    job_id = jobs.sbatch("skbalice", job_script(body="echo served after reload"))
    assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")
    assert "served after reload" in jobs.output_path("skbalice", job_id).read_text()

    # A config that does not load: refused by the command before any signal, and by the watcher
    # itself on a bare SIGHUP; either way it keeps serving with the config it has.
    _write_atomically(config, config_restored + b"\ningest:\n  poll_interval_s: soon\n")
    try:
        refused = _reload(sandbox)
        assert refused.returncode == 2 and "poll_interval_s" in refused.stderr
        log = sandbox.layout.log_dir / "watcher.log"
        seen = log.stat().st_size
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: "reload refused" in log.read_text(errors="replace")[seen:], timeout_s=20,
                 what="the watcher logs that it refused the config")
    finally:
        _write_atomically(config, config_restored + b"\n# changed by the reload test\n")
    still = _info(jobs)
    assert still["pid"] == pid and still["started_at"] == after["started_at"], "a refused reload does not restart"


def _source_tree(version: str, into: Path) -> Path:
    """The working tree as a release of `version` would ship it (tracked and not ignored files)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    pyproject = into / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', f'version = "{version}"', 1))
    return into


@pytest.fixture
def installed_watcher(sandbox: Sandbox) -> Iterator[dict[str, subprocess.Popen[bytes] | None]]:
    """The sandbox's own watcher makes way for the installed one; afterwards, back to the sandbox's."""
    holder: dict[str, subprocess.Popen[bytes] | None] = {"proc": None}
    Daemons(sandbox.layout).stop("watcher")
    try:
        yield holder
    finally:
        proc = holder["proc"]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        env = {**os.environ, "SLURM_CONF": str(sandbox.layout.slurm_conf)}
        subprocess.run(["bash", str(REPO / "install.sh"), "--uninstall"], env=env, capture_output=True, timeout=300,
                       check=False)
        manager.up(sandbox.layout, lambda _m: None)


@pytest.mark.slow
def test_an_upgrade_reaches_the_running_watcher_without_losing_the_job_in_flight(
        sandbox: Sandbox, jobs: Jobs, tmp_path: Path, installed_watcher: dict[str, subprocess.Popen[bytes] | None]) -> None:
    env = {**os.environ, "SLURM_CONF": str(sandbox.layout.slurm_conf),
           "SKBRIDGE_CONFIG": str(sandbox.layout.bridge_config)}
    release_a = _source_tree("0.1.0+upgrade.a", tmp_path / "a")
    release_b = _source_tree("0.1.0+upgrade.b", tmp_path / "b")

    def install(release: Path) -> str:
        done = subprocess.run(["bash", str(release / "install.sh"), "--no-systemd", "--config",
                               str(sandbox.layout.bridge_config), "--kubeconfig", sandbox.layout.env()["KUBECONFIG"]],
                              env=env, capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    install(release_a)
    socket_path = jobs.settings.slurm.hook_socket_path
    assert socket_path is not None
    etc_config = Path("/etc/slurm-k8s-bridge/config.yaml").read_bytes()
    log = (tmp_path / "watcher.log").open("wb")
    watcher = subprocess.Popen(["/opt/slurm-k8s-bridge/bin/skbridge", "watch"], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    installed_watcher["proc"] = watcher
    wait_for(lambda: (server_info(socket_path) or {}).get("version") == "0.1.0+upgrade.a",
             timeout_s=60, what="the installed watcher (A) serving hooks")
    pid = watcher.pid

    # A job in flight across the upgrade: allocated by A's prolog, ended by B's epilog.
    job_id = jobs.sbatch("skbalice", job_script(body="echo before; sleep 25; echo after the upgrade"))
    jobs.wait_running(job_id, timeout_s=120)

    out = install(release_b)
    assert f"watcher pid {pid} runs version 0.1.0+upgrade.b" in out, out[-2000:]
    info = server_info(socket_path)
    assert info is not None and info["pid"] == pid and info["version"] == "0.1.0+upgrade.b"
    assert Path("/etc/slurm-k8s-bridge/config.yaml").read_bytes() == etc_config, "an upgrade keeps the config"

    assert jobs.wait_done(job_id, timeout_s=180) == ("COMPLETED", "0:0")
    text = jobs.output_path("skbalice", job_id).read_text()
    assert "before" in text and "after the upgrade" in text
    summary = jobs.results("skbalice", job_id) / "summary.json"
    wait_for(summary.is_file, timeout_s=60, what="the job's results collected by the upgraded watcher's epilog")
    jobs.wait_no_objects(job_id)
    proc = installed_watcher["proc"]
    assert proc is not None and proc.poll() is None and proc.pid == pid

    suite = subprocess.run(["/opt/slurm-k8s-bridge/bin/skbridge", "test-suite", "--json", "--user", "skbalice"],
                           capture_output=True, text=True, timeout=600, check=False, env=env)
    assert suite.returncode == 0, suite.stdout[-4000:]
