"""The watcher's Prometheus metrics: defined here, recorded by the stages, served by the daemon.

One registry for the watcher process (ingest, the hooks it serves warm, the reaper). The
daemon serves it at `/metrics` (`metrics.listen_address`/`metrics.port`). A hook that
slurmctld runs as its own short-lived process (the fallback when the watcher does not
answer) records into its own copy of this registry, which nobody scrapes: its figures are
simply not exported, and recording costs it nothing worth counting.

Every label value comes from a closed set written in the code (reasons, stages, causes,
object kinds): never a user's name, a file name or free text, which would make every job a
new time series and publish who ran what.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server

from bridge.log import get_logger

log = get_logger(component="metrics")

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_start_time_seconds, ...

# Seconds: from the tens of milliseconds of a warm step to the minutes of a slow Pod start.
_FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

# -- drop folder ------------------------------------------------------------------------

FILES_SEEN = Counter("skbridge_drop_files_seen", "Dropped files claimed from submit/", registry=REGISTRY)
FILES_ACCEPTED = Counter("skbridge_drop_files_accepted", "Dropped files submitted to Slurm and archived in accepted/",
                         registry=REGISTRY)
FILES_REJECTED = Counter("skbridge_drop_files_rejected", "Dropped files refused into failed/, by reason",
                         ["reason"], registry=REGISTRY)
PICKUP_SECONDS = Histogram("skbridge_drop_pickup_seconds", "From the watcher first seeing a dropped file complete to "
                           "sbatch returning its job id", buckets=_SLOW_BUCKETS, registry=REGISTRY)
SBATCH_SECONDS = Histogram("skbridge_sbatch_seconds", "One sbatch call for a dropped file, by result (ok, refused: "
                           "Slurm said no, unknown: cut off or timed out)", ["result"], buckets=_FAST_BUCKETS,
                           registry=REGISTRY)
JOURNAL_PENDING = Gauge("skbridge_journal_pending_entries", "Drop-journal entries not yet accepted or failed",
                        registry=REGISTRY)
JOURNAL_OLDEST_PENDING = Gauge("skbridge_journal_oldest_pending_age_seconds", "Age of the oldest drop-journal entry "
                               "not yet accepted or failed (0: none)", registry=REGISTRY)
HEARTBEAT = Gauge("skbridge_watcher_heartbeat_timestamp_seconds", "When the watcher's main loop last went round "
                  "(Unix time); a stalled loop stops it", registry=REGISTRY)

# -- hooks --------------------------------------------------------------------------------

HOOKS_IN_FLIGHT = Gauge("skbridge_hook_requests_in_flight", "Hook requests the watcher is running for slurmctld",
                        ["hook"], registry=REGISTRY)
HOOK_REQUESTS = Counter("skbridge_hook_requests", "Hook requests the watcher ran for slurmctld, by exit code",
                        ["hook", "exit_code"], registry=REGISTRY)
PROLOG_SECONDS = Histogram("skbridge_prolog_seconds", "One prolog, start to exit code", buckets=_SLOW_BUCKETS,
                           registry=REGISTRY)
PROLOG_STAGE_SECONDS = Histogram("skbridge_prolog_stage_seconds", "Time of each stage of a prolog (bridge jobs)",
                                 ["stage"], buckets=(*_FAST_BUCKETS, 60.0, 120.0), registry=REGISTRY)
PROLOG_OUTCOMES = Counter("skbridge_prolog_outcomes", "Prologs by outcome (ready, rejected, requeued, skipped: not a "
                          "bridge job, crashed)", ["outcome"], registry=REGISTRY)
PROLOG_REQUEUES = Counter("skbridge_prolog_requeues", "Jobs a prolog sent back to the queue, by cause", ["cause"],
                          registry=REGISTRY)
EPILOG_SECONDS = Histogram("skbridge_epilog_seconds", "One epilog of a bridge job: collecting and teardown",
                           buckets=_SLOW_BUCKETS, registry=REGISTRY)
EPILOG_OUTCOMES = Counter("skbridge_epilog_outcomes", "Epilogs of bridge jobs by outcome (clean, objects_left, "
                          "kube_unavailable)", ["outcome"], registry=REGISTRY)
TEARDOWN_SECONDS = Histogram("skbridge_teardown_seconds", "An epilog's deletion of a job's objects until they are gone",
                             buckets=_SLOW_BUCKETS, registry=REGISTRY)

# -- reaper -------------------------------------------------------------------------------

REAPED_OBJECTS = Counter("skbridge_reaped_objects", "Objects of ended jobs the reaper removed (the epilog left them), "
                         "by kind", ["kind"], registry=REGISTRY)
REAPER_PASSES = Counter("skbridge_reaper_passes", "Reaper passes by result (ok, skipped: Slurm or Kubernetes could "
                        "not answer, failed)", ["result"], registry=REGISTRY)

PROLOG_OUTCOME_VALUES = ("ready", "rejected", "requeued", "skipped", "crashed")
REQUEUE_CAUSES = ("slurm_unavailable", "pod_template", "kube_credential", "kube_unavailable", "kube_error",
                  "pod_not_ready", "hook_timeout")

# Problem codes of the drop-folder checks (bridge.ingest) -> the reason label: a handful of
# kinds an operator acts on differently. A code missing here counts as "other" (a unit test
# keeps this table complete).
REJECT_REASONS: Mapping[str, str] = {
    **dict.fromkeys(("bad-name", "name-too-long", "too-big", "binary", "empty", "unreadable", "missing", "not-regular",
                     "hard-link", "symlink", "mtime-zero", "writable-by-others", "not-utf8", "crlf", "not-ready"), "file"),
    **dict.fromkeys(("not-in-user-folder", "not-a-user-folder", "not-your-folder", "folder-writable-by-others"),
                    "folder"),
    **dict.fromkeys(("unknown-owner", "root-owned", "uid-out-of-range"), "owner"),
    **dict.fromkeys(("no-shebang", "interpreter", "directive-after-command", "header-whitespace", "slurm-directive",
                     "sbatch-lookalike", "sbatch-syntax", "unknown-option", "option-value", "k8s-syntax",
                     "unknown-k8s-key", "k8s-empty", "k8s-repeated", "bad-path", "bad-env", "bad-mount", "bad-shm",
                     "unknown-volume"), "syntax"),
    **dict.fromkeys(("missing-image", "bad-image", "registry-not-allowed"), "image"),
    **dict.fromkeys(("forbidden-option", "over-limit", "path-escape", "reserved-env", "read-only-volume"), "policy"),
    "slurm-rejected": "slurm",
    "internal": "internal",
}
REJECT_REASON_VALUES = ("file", "folder", "owner", "syntax", "image", "policy", "slurm", "internal", "other")


class _HasCode(Protocol):
    @property
    def code(self) -> str: ...

    @property
    def severity(self) -> str: ...


def rejection_reason(problems: Iterable[_HasCode]) -> str:
    """The reason label of a refused file: its first error's kind (a folder problem comes first)."""
    listed = list(problems)
    first = next((p for p in listed if p.severity == "error"), listed[0] if listed else None)
    return "other" if first is None else REJECT_REASONS.get(first.code, "other")


def file_rejected(problems: Iterable[_HasCode]) -> None:
    FILES_REJECTED.labels(rejection_reason(problems)).inc()


def prolog_done(outcome: str, cause: str | None, stages_s: Mapping[str, float], total_s: float) -> None:
    PROLOG_OUTCOMES.labels(outcome).inc()
    if outcome == "requeued":
        PROLOG_REQUEUES.labels(cause or "slurm_unavailable").inc()
    if outcome != "skipped":  # the stages of a job the bridge leaves alone say nothing about the bridge
        PROLOG_SECONDS.observe(total_s)
        for stage, seconds in stages_s.items():
            PROLOG_STAGE_SECONDS.labels(stage).observe(seconds)


def track_journal(pending: Callable[[], list[float]]) -> None:
    """`pending`: creation times (Unix) of the open journal entries, read when scraped."""
    import time

    JOURNAL_PENDING.set_function(lambda: float(len(pending())))
    JOURNAL_OLDEST_PENDING.set_function(lambda: max(0.0, time.time() - min(pending(), default=time.time())))


def _zero_known_series() -> None:
    """Series of the closed label sets exist from the start at 0, so rate() and alerts see the first event."""
    for reason in REJECT_REASON_VALUES:
        FILES_REJECTED.labels(reason)
    for outcome in PROLOG_OUTCOME_VALUES:
        PROLOG_OUTCOMES.labels(outcome)
    for cause in REQUEUE_CAUSES:
        PROLOG_REQUEUES.labels(cause)
    for outcome in ("clean", "objects_left", "kube_unavailable"):
        EPILOG_OUTCOMES.labels(outcome)
    for result in ("ok", "skipped", "failed"):
        REAPER_PASSES.labels(result)
    for hook in ("prolog", "epilog"):
        HOOKS_IN_FLIGHT.labels(hook)


_zero_known_series()


@contextlib.contextmanager
def serving_metrics(listen_address: str, port: int) -> Iterator[Any]:
    """Serve REGISTRY at http://listen_address:port/metrics for the block; port 0 or no address: nothing.

    A port already taken costs the metrics only, never the watcher: it logs and goes on.
    """
    if not listen_address or port == 0:
        yield None
        return
    try:
        server, thread = start_http_server(port, addr=listen_address, registry=REGISTRY)
    except OSError as exc:
        log.warning("cannot serve /metrics; going on without", address=listen_address, port=port, error=str(exc))
        yield None
        return
    log.info("serving metrics", address=listen_address, port=port)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
