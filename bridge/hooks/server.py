"""The hooks' warm runner: the watcher daemon runs prologs and epilogs for slurmctld.

slurmctld starts a fresh process per hook and job. Python start-up and the imports of
pydantic, structlog, Jinja2 and the Kubernetes client cost ~0.3 s of CPU each time, which
is most of the prolog's wall time and, when many short jobs start together, the largest
load on the controller host. The watcher already runs on that host with those modules
loaded, so it listens on a root-only Unix socket; the hook entry points (`fastpath`, which
imports only the standard library) hand it the job id and exit with the code it answers.

Nothing depends on the server being there: when the socket is missing, refuses, or drops
the connection before answering, the entry point runs the hook itself. Hooks are
idempotent, so a hook cut off by a watcher restart is simply run again.

Protocol: one JSON line each way. {"hook": "prolog"|"epilog"|"ping"|"info", "job_id": "123"} ->
{"exit_code": N}.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bridge import installed_version, metrics
from bridge.hooks.entry import HookBody, open_hook_log, run_hook_body
from bridge.hooks.fastpath import ask_hook_server
from bridge.hooks.prolog import client_startup_s, client_waiting
from bridge.hooks.turns import holding_place, hook_queued_s
from bridge.log import get_logger, log_stream
from bridge.settings import Settings, config_digest, config_file_in_effect

log = get_logger(component="hook-server")

MAX_REQUEST_BYTES = 4096


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class HookServer:
    """Serve hook requests on `path` from threads until `close()`."""

    def __init__(self, settings: Settings, path: Path) -> None:
        self._settings = settings
        self._path = path
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None
        self._hook_log: Any = None
        self._inode = 0
        # The settings were loaded from this file at start; a later edit needs a restart.
        self._config_path = config_file_in_effect()
        self._config_sha256 = config_digest(self._config_path)
        # Tells a reload (same pid, fresh image) from the server that was there before it.
        self._started_at = time.time()
        self._jobs = _JobLocks()
        # Prologs and epilogs have places apart (bridge.hooks.turns): an epilog never waits
        # behind prologs (it frees what they may wait for), nor a prolog behind a burst of epilogs.
        self._places = {hook: threading.BoundedSemaphore(settings.slurm.hooks_at_once) for hook in ("prolog", "epilog")}

    def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if ping(self._path):
            raise OSError(f"another process already serves {self._path}")
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()  # a stale socket from a killed daemon
        handler = _handler_for(self._serve)
        # The socket is created with mode 0600 (umask), never briefly open to everyone.
        old_umask = os.umask(0o177)
        try:
            server = socketserver.ThreadingUnixStreamServer(str(self._path), handler)
        finally:
            os.umask(old_umask)
        server.daemon_threads = False  # close() waits for hooks in progress
        self._server = server
        self._inode = os.stat(self._path).st_ino
        self._hook_log = open_hook_log(self._settings)
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="hook-server", daemon=True)
        self._thread.start()
        log.info("serving hooks", socket=str(self._path))

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()  # joins the request threads
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self._path).st_ino == self._inode:  # still ours, not a successor's
                self._path.unlink()
        if self._hook_log not in (None, sys.stderr):
            self._hook_log.close()
        self._server = None

    def hook_running(self, job_id: str) -> bool:
        """True while a hook of the job runs (or waits for a place) here: the reaper leaves it alone."""
        return self._jobs.busy(job_id)

    def _serve(self, request: dict[str, Any], waiting: Callable[[], bool] | None = None) -> int | dict[str, Any]:
        hook = request.get("hook")
        if hook == "ping":
            return 0
        if hook == "info":
            # Which config the served hooks use: `skbridge test-suite` compares it with the file now.
            return {"exit_code": 0, "config_path": str(self._config_path) if self._config_path else None,
                    "config_sha256": self._config_sha256, "pid": os.getpid(), "version": installed_version(),
                    "started_at": self._started_at}
        job_id = str(request.get("job_id") or "")
        body = _bodies().get(str(hook))
        if body is None or not job_id.isdigit():
            raise ValueError(f"bad request {request!r}")
        startup = request.get("client_startup_s")
        token = client_startup_s.set(float(startup) if isinstance(startup, (int, float)) else None)
        waiting_token = client_waiting.set(waiting)
        queued_token = hook_queued_s.set(None)
        try:
            # The hook's lines go to the hooks' log, as when slurmctld runs it as a process.
            with log_stream(self._hook_log), metrics.HOOKS_IN_FLIGHT.labels(str(hook)).track_inprogress(), \
                    self._jobs.one_at_a_time(job_id), holding_place(self._places[str(hook)]):
                job_env = request.get("job_env")
                if hook == "prolog" and waiting is not None and not waiting():
                    # slurmctld gave up on it while it waited for its turn: nothing was made yet,
                    # and the job runs its prolog again when Slurm starts it next.
                    log.warning("slurmctld stopped waiting before this prolog's turn came; not run", job_id=job_id)
                    code = 1
                else:
                    code = run_hook_body(str(hook), body, self._settings, job_id,
                                         job_env if isinstance(job_env, dict) else {}, served_by="watcher")
            metrics.HOOK_REQUESTS.labels(str(hook), str(code)).inc()
            return code
        finally:
            client_startup_s.reset(token)
            client_waiting.reset(waiting_token)
            hook_queued_s.reset(queued_token)


class _JobLocks:
    """One hook at a time per job. A restarted slurmctld runs a job's prolog again while the
    first run, which lost its client, still works here: the second waits for the first to
    finish (its client gone, it leaves its objects with the script's gate shut) and then takes
    those objects over, instead of both making and removing the same objects at once. An
    epilog waits for a prolog alike."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, list[int]]] = {}

    def busy(self, job_id: str) -> bool:
        with self._guard:
            return job_id in self._locks

    @contextlib.contextmanager
    def one_at_a_time(self, job_id: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.setdefault(job_id, (threading.Lock(), [0]))
            users[0] += 1
        try:
            if not lock.acquire(blocking=False):
                log.info("another hook of this job is still running here; waiting for it", job_id=job_id)
                lock.acquire()
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[job_id]


def server_info(path: Path) -> dict[str, Any] | None:
    """The running hook server's own facts (its config file and digest); None: nobody answered."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5.0)
            conn.connect(str(path))
            conn.sendall(b'{"hook": "info"}\n')
            answer = json.loads(conn.makefile("rb").readline() or b"null")
    except (OSError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


def ping(path: Path) -> bool:
    """True when a hook server answers on `path` (for `skbridge test-suite`, and before taking a path)."""
    return ask_hook_server(path, {"hook": "ping"}, timeout_s=5.0) == 0


def _bodies() -> dict[str, HookBody]:
    from bridge.hooks.epilog import run_epilog
    from bridge.hooks.prolog import run_prolog

    return {"prolog": run_prolog, "epilog": run_epilog}



def _still_connected(conn: socket.socket) -> bool:
    """True while the hook's process keeps its end open: it sends nothing after its request,
    so a readable socket means end of file (the process exited or was killed)."""
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return True
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _handler_for(serve: Callable[[dict[str, Any], Callable[[], bool]], int | dict[str, Any]],
                 ) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            peer = _peer_uid(self.connection)
            if peer != os.geteuid():
                log.warning("refused hook request", peer_uid=peer)
                return
            line = self.rfile.readline(MAX_REQUEST_BYTES)
            try:
                answer = serve(json.loads(line), lambda: _still_connected(self.connection))
            except (ValueError, TypeError) as exc:
                log.warning("bad hook request", error=str(exc))
                return  # no answer: the client runs the hook itself
            body = answer if isinstance(answer, dict) else {"exit_code": answer}
            with contextlib.suppress(OSError):  # slurmctld may have given up on the hook
                self.wfile.write(json.dumps(body).encode("utf-8") + b"\n")

    return Handler


@contextlib.contextmanager
def serving_hooks(settings: Settings) -> Iterator[HookServer | None]:
    """Run a HookServer for the duration of the block when a socket path is configured."""
    path = settings.slurm.hook_socket_path
    if path is None:
        yield None
        return
    server = HookServer(settings, path)
    try:
        server.start()
    except OSError as exc:
        log.warning("cannot serve hooks; slurmctld will run them as processes", socket=str(path), error=str(exc))
        yield None
        return
    try:
        yield server
    finally:
        server.close()
