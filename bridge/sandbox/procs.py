"""Start, find and stop the sandbox's daemons by pid, never by name.

Each daemon runs in the foreground in a session of its own, so stopping its process group
also stops its helpers. A pid file stores the pid and the kernel's start time of the
process, so a recycled pid is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import PermanentError, TemporaryError
from bridge.sandbox.layout import SANDBOX_MARKER_ENV, SandboxLayout
from bridge.waiting import poll


def _start_time_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after it don't.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        if fields[0] == "Z":
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class DaemonRecord:
    name: str
    pid: int
    start_ticks: int

    def alive(self) -> bool:
        return _start_time_ticks(self.pid) == self.start_ticks


class Daemons:
    """The set of daemons one sandbox started, persisted as pid files under `run/`."""

    def __init__(self, layout: SandboxLayout) -> None:
        self._layout = layout

    def _pid_file(self, name: str) -> Path:
        return self._layout.run_dir / f"{name}.pid"

    def record(self, name: str) -> DaemonRecord | None:
        try:
            pid_text, ticks_text = self._pid_file(name).read_text(encoding="ascii").split()
            return DaemonRecord(name, int(pid_text), int(ticks_text))
        except (OSError, ValueError):
            return None

    def running(self, name: str) -> DaemonRecord | None:
        rec = self.record(name)
        return rec if rec is not None and rec.alive() else None

    def log_path(self, name: str) -> Path:
        return self._layout.log_dir / f"{name}.log"

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: Path | None = None,
    ) -> DaemonRecord:
        current = self.running(name)
        if current is not None:
            return current
        self._layout.run_dir.mkdir(parents=True, exist_ok=True)
        self._layout.log_dir.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ if env is None else env)
        full_env[SANDBOX_MARKER_ENV] = str(self._layout.root)
        log = self.log_path(name).open("ab")
        try:
            log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {' '.join(argv)}\n".encode())
            log.flush()
            kwargs: dict[str, object] = {}
            if user is not None:
                entry = pwd.getpwnam(user)
                kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            proc = subprocess.Popen(
                list(argv), env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, **kwargs,  # type: ignore[call-overload]
            )
        finally:
            log.close()
        ticks = None
        for _ in range(50):
            ticks = _start_time_ticks(proc.pid)
            if ticks is not None:
                break
            time.sleep(0.01)
        if ticks is None:
            raise PermanentError(f"{name} exited at once (exit {proc.poll()}); see {self.log_path(name)}")
        self._pid_file(name).write_text(f"{proc.pid} {ticks}\n", encoding="ascii")
        return DaemonRecord(name, proc.pid, ticks)

    def start_and_wait(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready: Callable[[], bool],
        timeout_s: float,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> DaemonRecord:
        rec = self.start(name, argv, env=env, user=user)
        self.wait_ready(rec, ready, timeout_s=timeout_s)
        return rec

    def wait_ready(self, rec: DaemonRecord, ready: Callable[[], bool], *, timeout_s: float) -> None:
        wait_until(ready, what=rec.name, timeout_s=timeout_s, log_hint=self.log_path(rec.name), daemon=rec)

    def stop(self, name: str, *, timeout_s: float = 15.0) -> bool:
        """Stop a daemon and its process group; True when something was stopped."""
        rec = self.running(name)
        stopped = False
        if rec is not None:
            stopped = True
            _signal_group(rec.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while rec.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if rec.alive():
                _signal_group(rec.pid, signal.SIGKILL)
                while rec.alive() and time.monotonic() < deadline + 5:
                    time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            self._pid_file(name).unlink()
        return stopped


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stray_processes(layout: SandboxLayout) -> list[int]:
    """Processes carrying this sandbox's marker (slurmstepd and the like), except ourselves."""
    marker = f"{SANDBOX_MARKER_ENV}={layout.root}".encode()
    own = {os.getpid(), os.getppid()}
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_strays(layout: SandboxLayout, timeout_s: float = 10.0) -> list[int]:
    strays = stray_processes(layout)
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    poll(lambda: not stray_processes(layout), timeout_s=timeout_s, interval_s=0.1)
    for pid in stray_processes(layout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return strays


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout_s: float,
    log_hint: Path | None = None,
    daemon: DaemonRecord | None = None,
) -> None:
    """Poll `check` until true; fail early when the daemon it waits for has died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if daemon is not None and not daemon.alive():
            tail = ""
            if log_hint is not None and log_hint.exists():
                tail = "\n" + "".join(log_hint.read_text(errors="replace").splitlines(True)[-15:])
            raise PermanentError(f"{what} exited during start-up; see {log_hint}{tail}")
        time.sleep(0.2)
    hint = f"; see {log_hint}" if log_hint else ""
    raise TemporaryError(f"{what} not ready after {timeout_s:.0f}s{hint}")


def run_checked(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout_s: float = 60.0) -> str:
    out = subprocess.run(list(argv), env=None if env is None else dict(env), capture_output=True, text=True,
                         timeout=timeout_s, check=False)
    if out.returncode != 0:
        raise PermanentError(f"{' '.join(argv)} failed (exit {out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout
