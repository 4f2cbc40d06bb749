"""`skbridge watch`: the long-running drop-folder watcher.

Single instance (a lock file), journal recovery and a full rescan at start, polling with
an inotify hint, a capped pool of sbatch workers, retries with backoff, and a clean stop
on SIGTERM: no new claims, in-flight files finish their step, the journal covers the rest.
It also runs slurmctld's hooks warm on a local socket (`bridge.hooks.server`).
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import FrameType

from bridge import metrics, systemd
from bridge.collect.reaper import reap_once
from bridge.collect.retention import retention_pass
from bridge.errors import BridgeError, ConfigError
from bridge.hooks.server import HookServer, serving_hooks
from bridge.ingest.detect import InotifyHint, SubmitScanner
from bridge.ingest.journal import Entry, Journal, JournalUnavailable
from bridge.ingest.layout import ensure_user_folders
from bridge.ingest.pipeline import Ingestor, Outcome
from bridge.kubernetes.client import shared_client
from bridge.log import get_logger
from bridge.settings import Settings, config_file_in_effect, load_settings

log = get_logger(component="watcher")


class InstanceLock:
    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self._path), exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"another watcher (pid {holder}) holds {self._path}; only one may run") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Watcher:
    def __init__(self, settings: Settings, *, config_path: Path | None = None) -> None:
        self._settings = settings
        self._config_path = config_file_in_effect(config_path)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload_asked = threading.Event()
        self._hook_server: HookServer | None = None  # set once it serves; the reaper asks it
        self._journal_down_logged_at = -60.0
        self.reload_on_exit = False
        self._in_flight: dict[str, Future[Outcome]] = {}

    def request_stop(self, *_: object) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_asked.set()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("stopping", signal=signal.Signals(signum).name)
            self.request_stop()

        def reload_handler(_signum: int, _frame: FrameType | None) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGHUP, reload_handler)

    def _reload_if_asked(self) -> None:
        """SIGHUP (`systemctl reload`): a config that loads means a graceful stop and re-exec.

        Re-executing, rather than swapping settings inside the running process, makes a reload
        reach everything that read the settings at start (paths, the socket, the pools) and the
        code installed now (an upgrade), through the same start-up path a restart takes. A config
        that does not load leaves the watcher running on the old one and says why.
        """
        if not self._reload_asked.is_set():
            return
        self._reload_asked.clear()
        try:
            load_settings(self._config_path)
        except BridgeError as exc:
            log.error("reload refused: the config does not load; still running with the previous one",
                      config=str(self._config_path), error=str(exc))
            return
        log.info("reloading: finishing work in progress, then starting again with the config and code now installed",
                 config=str(self._config_path))
        systemd.notify("RELOADING=1")
        self.reload_on_exit = True
        self.request_stop()

    def run(self) -> None:
        settings = self._settings
        ingest = settings.ingest
        lock = InstanceLock(str(ingest.lock_path))
        lock.acquire()
        journal = Journal(ingest.journal_path)
        ingestor = Ingestor(settings, journal)
        scanner = SubmitScanner(settings.nas.submit_dir, settle_s=ingest.settle_s, hint_settle_s=ingest.hint_settle_s)
        hint = InotifyHint(settings.nas.submit_dir, scanner, self._wake)
        pool = ThreadPoolExecutor(max_workers=ingest.max_concurrent_sbatch, thread_name_prefix="sbatch")
        inotify = ingest.use_inotify and hint.start()
        reaper = threading.Thread(target=self._reap_forever, name="reaper", daemon=True)
        reaper.start()
        threading.Thread(target=self._retain_forever, name="retention", daemon=True).start()
        try:
            metrics.track_journal(lambda: [entry.created_at for entry in journal.open_entries()])
            metrics.HEARTBEAT.set_to_current_time()  # alive from the start, not "stalled since 1970" until the loop runs
            with serving_hooks(settings) as hook_server, \
                    metrics.serving_metrics(settings.metrics.listen_address, settings.metrics.port):
                self._hook_server = hook_server
                self._recover(ingestor, pool)
                systemd.notify("READY=1")
                log.info("watching", folder=str(settings.nas.submit_dir), poll_interval_s=ingest.poll_interval_s,
                         inotify_hint=inotify, workers=ingest.max_concurrent_sbatch)
                self._loop(ingestor, journal, scanner, pool)
        finally:
            systemd.notify("STOPPING=1")
            hint.stop()
            pool.shutdown(wait=True)  # in-flight sbatch calls finish and are journaled
            journal.close()
            lock.release()
            log.info("stopped")

    def _reap_forever(self) -> None:
        """Remove what epilogs left behind, every `reaper_interval_s`, until stopped."""
        settings = self._settings
        reaper_log = get_logger(component="reaper")
        while not self._stop.wait(settings.ingest.reaper_interval_s):
            try:
                # The hooks' client: a renewed kubeconfig reaches the reaper too.
                kube = shared_client(settings.kubernetes.kubeconfig, timeout_s=settings.kubernetes.api_timeout_s)
                server = self._hook_server
                reap_once(settings, kube, grace_s=settings.ingest.reaper_grace_s,
                          hook_running=server.hook_running if server is not None else None)
                metrics.REAPER_PASSES.labels("ok").inc()
            except BridgeError as exc:
                metrics.REAPER_PASSES.labels("skipped").inc()
                reaper_log.warning("reaper pass skipped", error=str(exc))
            except Exception:
                metrics.REAPER_PASSES.labels("failed").inc()
                reaper_log.exception("reaper pass failed")

    def _retain_forever(self) -> None:
        """Apply the retention horizons (archives, results, journal) every `retention.interval_s`."""
        settings = self._settings
        retention_log = get_logger(component="retention")
        while not self._stop.wait(settings.retention.interval_s):
            try:
                retention_pass(settings)
                if settings.retention.journal_days is not None:
                    journal = Journal(settings.ingest.journal_path)  # its own connection: WAL allows it
                    try:
                        forgotten = journal.prune(settings.retention.journal_days * 86400)
                    finally:
                        journal.close()
                    if forgotten:
                        retention_log.info("journal pruned", entries=forgotten)
            except Exception:
                retention_log.exception("retention pass failed")

    def _recover(self, ingestor: Ingestor, pool: ThreadPoolExecutor) -> None:
        while not self._stop.is_set():
            try:
                entries = ingestor.recover()
                break
            except OSError as exc:
                log.error("cannot read processing/; retrying", error=str(exc))
                self._stop.wait(self._settings.ingest.poll_interval_s * 5)
        else:
            return
        if entries:
            log.info("resuming work from before the restart", entries=len(entries))
        for entry in entries:
            self._dispatch(ingestor, pool, entry)

    def _dispatch(self, ingestor: Ingestor, pool: ThreadPoolExecutor, entry: Entry) -> None:
        if entry.id in self._in_flight:
            return
        future = pool.submit(self._process_safely, ingestor, entry)
        self._in_flight[entry.id] = future
        future.add_done_callback(lambda _f: self._wake.set())

    def _journal_down(self, error: str) -> None:
        """Say it once a minute, not on every pass, while the journal cannot be written."""
        now = time.monotonic()
        if now - self._journal_down_logged_at >= 60.0:
            self._journal_down_logged_at = now
            log.error("the journal cannot be written: no file is claimed or submitted until it can "
                      "(free space on its disk)", error=error)

    def _process_safely(self, ingestor: Ingestor, entry: Entry) -> Outcome:
        try:
            return ingestor.process(entry)
        except JournalUnavailable as exc:
            # The step that needed the journal did not happen; the entry's last written state
            # says where to resume (an intent without a job id is looked up in Slurm first).
            self._journal_down(str(exc))
            raise
        except Exception:
            # A bug or an unwritable NAS must not lose the file: it stays in processing/ with
            # its journal entry and is tried again later.
            log.exception("unexpected failure; the file stays queued", file=os.fsdecode(entry.name), entry=entry.id)
            fresh = ingestor.journal.get(entry.id)
            if fresh is not None:
                ingestor.journal.set_state(entry.id, fresh.state, next_attempt_at=time.time() + 30)
            raise

    def _loop(self, ingestor: Ingestor, journal: Journal, scanner: SubmitScanner, pool: ThreadPoolExecutor) -> None:
        ingest = self._settings.ingest
        capacity = ingest.max_concurrent_sbatch * 4
        last_watchdog = 0.0
        next_journal_check = 0.0
        next_folder_refresh = 0.0
        watchdog_s = systemd.watchdog_interval_s()
        while not self._stop.is_set():
            self._wake.clear()
            metrics.HEARTBEAT.set_to_current_time()
            self._reload_if_asked()
            if self._stop.is_set():
                break
            for entry_id in [eid for eid, fut in self._in_flight.items() if fut.done()]:
                del self._in_flight[entry_id]
            if time.monotonic() >= next_journal_check:
                # Retries are due at most once a poll interval; no need to ask on every wake.
                next_journal_check = time.monotonic() + ingest.poll_interval_s
                for entry in journal.due_entries(time.time(), capacity + len(self._in_flight)):
                    if len(self._in_flight) >= capacity:
                        break
                    self._dispatch(ingestor, pool, entry)
            if len(self._in_flight) < capacity:
                for name in scanner.scan():
                    if self._stop.is_set() or len(self._in_flight) >= capacity:
                        break
                    try:
                        claimed = ingestor.claim(name, complete_since_s=scanner.complete_since_s(name))
                    except OSError as exc:
                        log.error("cannot claim file; will retry", file=os.fsdecode(name), error=exc.strerror)
                        continue
                    except JournalUnavailable as exc:
                        # No entry, no submission: the files wait in submit/ until it can be written.
                        self._journal_down(str(exc))
                        break
                    scanner.forget(name)
                    if claimed is not None:
                        log.info("claimed", file=os.fsdecode(name), entry=claimed.id)
                        self._dispatch(ingestor, pool, claimed)
            if time.monotonic() >= next_folder_refresh:
                next_folder_refresh = time.monotonic() + ingest.user_folders_refresh_s
                self._refresh_user_folders()
            if watchdog_s is not None and time.monotonic() - last_watchdog > watchdog_s:
                systemd.notify("WATCHDOG=1")
                last_watchdog = time.monotonic()
            due = scanner.next_check_in_s()
            self._wake.wait(ingest.poll_interval_s if due is None else min(ingest.poll_interval_s, due + 0.01))

    def _refresh_user_folders(self) -> None:
        """New accounts get their submit/<user>/ without a restart."""
        try:
            made = ensure_user_folders(self._settings.nas, self._settings.policy)
        except OSError as exc:
            log.warning("cannot create user drop folders; will retry", error=exc.strerror)
            return
        if made:
            log.info("drop folders created", users=[path.name for path in made])


def reexec_in_place() -> None:
    """Replace this process with a fresh start of the same command (same pid, so systemd keeps
    tracking it; the instance lock and the hook socket are released by the exit of the old image)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)  # noqa: S606 - our own argv, no shell
