"""Issue 19: the watcher's unit is one systemd accepts, hardened, and its watchdog really
watches: keep-alives come from the main loop while it turns and stop when it stalls."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from pathlib import Path

from tests.conftest import Sandbox
from tests.ingest.conftest import make_watcher_run
from tests.systemd_units import UNITS, unit_settings, verify_unit

UNIT = UNITS / "skbridge-watcher.service"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    done = verify_unit(UNIT, "watch", tmp_path)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_unit_uses_the_hardening_that_fits_the_watcher() -> None:
    settings = unit_settings(UNIT)
    assert settings["NoNewPrivileges"] == "yes" and settings["PrivateTmp"] == "yes"
    assert settings["ProtectSystem"] in ("full", "strict")
    assert "/var/lib/slurm-k8s-bridge" in settings["ReadWritePaths"]
    assert settings["Type"] == "notify" and int(settings["WatchdogSec"].rstrip("s")) > 0
    # Stopping an sbatch that runs as its owner needs CAP_KILL; nothing grants CAP_SYS_ADMIN.
    capabilities = settings["CapabilityBoundingSet"].split()
    assert "CAP_KILL" in capabilities and "CAP_SYS_ADMIN" not in capabilities


def _pings(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    got: list[tuple[float, str]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        got.append((time.monotonic(), data.decode()))
    return got


def test_the_watchdog_stops_when_the_watcher_stalls(sandbox: Sandbox, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        run = make_watcher_run(sandbox, SKBRIDGE_INGEST__REAPER_INTERVAL_S="3600",
                               SKBRIDGE_INGEST__POLL_INTERVAL_S="0.2")
        run.env.update({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"})  # WatchdogSec=2s: ping every 1 s
        run.start()
        assert run.proc is not None
        try:
            ready = _pings(sock, 20)
            assert any("READY=1" in text for _, text in ready), ready
            healthy = [at for at, text in _pings(sock, 5) if "WATCHDOG=1" in text]
            assert len(healthy) >= 3, f"{len(healthy)} keep-alives in 5 s with WatchdogSec=2s"
            # Within WatchdogSec of each other, or systemd would have killed a healthy watcher.
            assert max(b - a for a, b in itertools.pairwise(healthy)) < 2.0
            os.kill(run.proc.pid, signal.SIGSTOP)  # a stalled watcher (hung NFS, deadlock)
            stalled = [text for _, text in _pings(sock, 3) if "WATCHDOG=1" in text]
            assert not stalled, "a stalled watcher must not keep systemd's watchdog happy"
            os.kill(run.proc.pid, signal.SIGCONT)
            assert any("WATCHDOG=1" in text for _, text in _pings(sock, 3)), "keep-alives resume"
        finally:
            if run.proc is not None:
                os.kill(run.proc.pid, signal.SIGCONT)
                run.stop()


def test_the_test_suite_tells_when_the_watcher_runs_an_older_config(sandbox: Sandbox) -> None:
    from tests.admin.test_admin import run_test_suite

    name = "the running watcher uses the config file as it is now"
    _, results = run_test_suite(sandbox, "--only", "watcher")
    assert results[name]["outcome"] == "PASS", results[name]
    config = sandbox.layout.bridge_config
    original = config.read_bytes()
    try:
        config.write_bytes(original + b"# an admin's edit the watcher has not read\n")
        code, results = run_test_suite(sandbox, "--only", "watcher")
        assert code == 1 and results[name]["outcome"] == "FAIL", results[name]
        assert "systemctl reload skbridge-watcher" in str(results[name]["hint"])
    finally:
        config.write_bytes(original)
    _, results = run_test_suite(sandbox, "--only", "watcher")
    assert results[name]["outcome"] == "PASS", results[name]
