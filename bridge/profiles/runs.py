"""A profile's runs: start one (snapshot + submit, here or over SSH), look at them, collect,
recover and clean. Everything as the user; nothing here needs root."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import structlog

from bridge.errors import BridgeError, ConfigError, PermanentError, TemporaryError
from bridge.profiles.model import Loaded, Profile
from bridge.profiles.remote import Remote
from bridge.profiles.render import RUNS_DIR, render_job, run_rel
from bridge.profiles.snapshot import Snapshot, extract_tar, select, write_tar
from bridge.profiles.state import RUN_RECORD, Run, RunStore
from bridge.settings import Settings
from bridge.slurm.vocabulary import FINAL_STATES, is_live

log = structlog.get_logger(__name__)
JOB_FILE = ".skbridge-job.sh"
_RUN_REL = re.compile(rf"^{RUNS_DIR}/[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}/\d{{8}}-\d{{6}}-[0-9a-f]{{4}}$")
_OUTPUT = re.compile(r"^slurm-(\d+)\.out$")
_EXIT_NOT_FOUND = 3  # skbridge status: no such job (cli.user.common.EXIT_NOT_FOUND)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclass(frozen=True)
class Prepared:
    name: str
    profile: Profile
    run_id: str
    job_text: str
    snapshot: Snapshot
    project: Path


def prepare(loaded: Loaded, name: str, *, allow_dirty: bool) -> Prepared:
    """Render the job and choose the snapshot's files; nothing is written yet."""
    profile = loaded.get(name)
    run_id = new_run_id()
    text = render_job(name, profile, run_id=run_id, project=loaded.project)
    collect_top = profile.collect_to.split("/", 1)[0]
    excluded = [collect_top] if "{" not in collect_top else []
    snapshot = select(loaded.project, profile.code, allow_dirty=allow_dirty, cap_bytes=profile.snapshot_cap_mib << 20,
                      excluded=excluded)
    return Prepared(name=name, profile=profile, run_id=run_id, job_text=text, snapshot=snapshot,
                    project=loaded.project)


def _record(prepared: Prepared, run_dir: str, host: str | None) -> Run:
    return Run(profile=prepared.name, run_id=prepared.run_id, project=str(prepared.project), run_dir=run_dir,
               host=host, created=datetime.now(UTC).isoformat(timespec="seconds"), source=prepared.snapshot.source,
               commit=prepared.snapshot.commit, files=len(prepared.snapshot.files))


def _extras(run: Run, job_text: str) -> dict[str, bytes]:
    return {RUN_RECORD: run.model_dump_json(indent=1).encode(), JOB_FILE: job_text.encode()}


def nas_home(settings: Settings, user: str) -> Path:
    return settings.nas.home_root / user


def receive(settings: Settings, user: str, rel: str, stream: IO[bytes]) -> Path:
    """The remote end of an upload: unpack a snapshot stream into the user's new run folder."""
    if not _RUN_REL.match(rel):
        raise ConfigError(f"{rel!r} is not a run folder ({RUNS_DIR}/PROFILE/RUN_ID)")
    run_dir = nas_home(settings, user) / rel
    run_dir.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    extract_tar(stream, run_dir)
    return run_dir


def start_local(settings: Settings, user: str, prepared: Prepared, store: RunStore) -> Run:
    """Snapshot into the NAS run folder, submit from there as the user, remember the run."""
    from bridge.ingest.filecheck import validate_file
    from bridge.userview.actions import submit_sbatch

    run_dir = nas_home(settings, user) / run_rel(prepared.name, prepared.run_id)
    run = _record(prepared, str(run_dir), None)
    with tempfile.TemporaryFile() as spool:
        write_tar(prepared.snapshot, spool, _extras(run, prepared.job_text))
        spool.seek(0)
        run_dir.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        extract_tar(spool, run_dir)
    job_file = run_dir / JOB_FILE
    report = validate_file(job_file, settings)
    if not report.ok:
        shutil.rmtree(run_dir)
        problems = "; ".join(f"{p.message} (fix: {p.fix})" for p in report.problems)
        raise PermanentError(f"the rendered job of profile {prepared.name} is refused: {problems}")
    try:
        run.job_id = submit_sbatch(settings, job_file, cwd=run_dir)
    except BridgeError:
        shutil.rmtree(run_dir)  # no job will ever use it
        raise
    _finish(run, run_dir, store)
    log.info("profile run submitted", job_id=run.job_id, profile=run.profile, file=str(job_file))
    return run


def start_remote(remote: Remote, prepared: Prepared, store: RunStore) -> Run:
    """Upload the snapshot (a tar stream on ssh's stdin), then submit the job file (stdin) there."""
    rel = str(run_rel(prepared.name, prepared.run_id))
    run = _record(prepared, "", remote.host)
    with tempfile.TemporaryFile() as spool:
        write_tar(prepared.snapshot, spool, _extras(run, prepared.job_text))
        spool.seek(0)
        run.run_dir = remote.output(["profile", "receive", rel], stdin=spool).strip()
    store.put(run)  # before submitting: a refused job leaves a folder there that `clean` must know of
    out = remote.output(["submit", "--parsable", "--chdir", run.run_dir, "-"], stdin=prepared.job_text.encode())
    job_id = out.strip().splitlines()[0] if out.strip() else ""
    if not job_id.isdigit():
        raise PermanentError(f"{remote.host} printed no job id: {out.strip()!r}")
    run.job_id = job_id
    store.put(run)
    log.info("profile run submitted over ssh", job_id=job_id, profile=run.profile, host=remote.host)
    return run


def _finish(run: Run, run_dir: Path, store: RunStore) -> None:
    (run_dir / RUN_RECORD).write_text(run.model_dump_json(indent=1), encoding="utf-8")
    store.put(run)


def job_state(settings: Settings | None, run: Run) -> tuple[str, bool]:
    """(Slurm state, still active) of a run; a job Slurm forgot counts as ended."""
    if run.job_id is None:
        return "NOT SUBMITTED", False
    if run.host:
        remote = Remote.from_env(run.host)
        done = remote.run(["status", run.job_id, "--json"])
        if done.returncode == _EXIT_NOT_FOUND:
            return "UNKNOWN", False
        if done.returncode != 0:
            raise TemporaryError(f"{run.host}: skbridge status {run.job_id} failed (exit {done.returncode})")
        state = str(json.loads(done.stdout).get("state") or "UNKNOWN")
        return state, is_live(state)
    from bridge.userview.queue import find_job

    assert settings is not None  # a run of this machine: its Slurm is here
    job = find_job(settings.slurm, run.job_id)
    if job is None:
        return "UNKNOWN", False
    return job.state, not job.ended


# Ended without completing (or forgotten by Slurm): what `recover --resubmit` submits again.
UNFINISHED_STATES = (FINAL_STATES - {"COMPLETED"}) | {"UNKNOWN"}


def resubmit_run(settings: Settings | None, run: Run, store: RunStore) -> str:
    """Submit the run's job file again from its snapshot folder (left as the last attempt left it); the new id."""
    job_file = str(Path(run.run_dir) / JOB_FILE)
    if run.host:
        out = Remote.from_env(run.host).output(["submit", "--parsable", "--chdir", run.run_dir, job_file])
        job_id = out.strip().splitlines()[0] if out.strip() else ""
        if not job_id.isdigit():
            raise PermanentError(f"{run.host} printed no job id: {out.strip()!r}")
    else:
        from bridge.userview.actions import submit_sbatch

        assert settings is not None
        if not Path(job_file).is_file():
            raise PermanentError(f"run {run.run_id}: its snapshot {run.run_dir} is gone; start a new run instead")
        job_id = submit_sbatch(settings, Path(job_file), cwd=Path(run.run_dir))
    assert run.job_id is not None
    run.previous_jobs.append(run.job_id)
    run.job_id, run.state = job_id, None
    if not run.host:
        (Path(run.run_dir) / RUN_RECORD).write_text(run.model_dump_json(indent=1), encoding="utf-8")
    store.put(run)
    log.info("profile run resubmitted", job_id=job_id, profile=run.profile, file=job_file)
    return job_id


def collect_dest(run: Run, profile: Profile) -> Path:
    relative = profile.collect_to.format(profile=run.profile, job_id=run.job_id, run_id=run.run_id)
    return Path(run.project) / relative


def wait_results(settings: Settings, user: str, job_id: str, wait_results_s: float = 60.0) -> Path:
    """The job's results folder once the epilog has finished it (SHA256SUMS is written last)."""
    from bridge.userview.results import SUMS_FILE, job_results_dir

    results = job_results_dir(settings.nas, user, job_id)
    deadline = time.monotonic() + wait_results_s
    while not (results / SUMS_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # the epilog collects right after the job ends
    if not results.is_dir():
        raise PermanentError(f"job {job_id} has no results folder {results} (yet)")
    return results


def export_results(settings: Settings, user: str, job_id: str, run_dir: Path | None, stream: IO[bytes]) -> None:
    """The login node's end of a collect over SSH: the results folder (and the run's output file) as a tar stream."""
    from bridge.userview.results import list_files

    results = wait_results(settings, user, job_id)
    extra: dict[str, bytes] = {}
    if run_dir is not None:
        owned = nas_home(settings, user) / RUNS_DIR
        output = run_dir / f"slurm-{job_id}.out"
        if owned in run_dir.parents and output.is_file():
            extra[output.name] = output.read_bytes()
    files = [item.path for item in list_files(results)]
    write_tar(Snapshot(project=results, source="folder", commit=None, files=files, size_bytes=0), stream, extra)


def discard(settings: Settings, user: str, rel: str) -> Path | None:
    """Remove one run folder of the user's (RUNS_DIR/PROFILE/RUN_ID), nothing else; its path, or None if gone."""
    if not _RUN_REL.match(rel):
        raise ConfigError(f"{rel!r} is not a run folder ({RUNS_DIR}/PROFILE/RUN_ID)")
    from bridge.userview.queue import find_job

    run_dir = nas_home(settings, user) / rel
    if not run_dir.is_dir() or run_dir.is_symlink():
        return None
    for job_id in (m.group(1) for p in run_dir.iterdir() if (m := _OUTPUT.match(p.name))):
        job = find_job(settings.slurm, job_id)
        if job is not None and not job.ended:
            raise PermanentError(f"job {job_id} still runs from {run_dir} ({job.state}); not removed")
    shutil.rmtree(run_dir)
    return run_dir


def collect(settings: Settings | None, user: str, run: Run, profile: Profile, store: RunStore, *,
            keep_snapshot: bool = False) -> tuple[Path, list[str]]:
    """Copy the job's results folder (and its output file) into the project; then remove the
    run's snapshot folder, and only it. The caller has checked that the job ended."""
    from bridge.userview.results import copy_tree

    assert run.job_id is not None
    dest = collect_dest(run, profile)
    if run.host:
        remote = Remote.from_env(run.host)
        with tempfile.TemporaryFile() as spool:
            done = remote.run(["profile", "export", run.job_id, "--run-dir", run.run_dir], stdout=spool)
            if done.returncode != 0:
                raise PermanentError(f"on {run.host}: the results of job {run.job_id} could not be read "
                                     f"(exit {done.returncode})")
            spool.seek(0)
            dest.mkdir(parents=True, exist_ok=True)
            copied = extract_tar(spool, dest, fresh=False)
        if not keep_snapshot:
            remote.output(["profile", "discard", str(run_rel(run.profile, run.run_id))])
            run.snapshot_removed = True
    else:
        assert settings is not None
        copied = copy_tree(wait_results(settings, user, run.job_id), dest)
        run_dir = Path(run.run_dir)
        output = run_dir / f"slurm-{run.job_id}.out"
        if output.is_file():
            shutil.copy2(output, dest / output.name)
            copied.append(output.name)
        if not keep_snapshot and run_dir.is_dir():
            shutil.rmtree(run_dir)
            run.snapshot_removed = True
    run.collected_to = str(dest)
    run.collected_at = datetime.now(UTC).isoformat(timespec="seconds")
    store.put(run)
    log.info("profile run collected", job_id=run.job_id, profile=run.profile, file=str(dest))
    return dest, copied


def orphans(settings: Settings, user: str, name: str | None, known: list[Run], project: Path) -> list[Run]:
    """Run folders of `project` on the NAS that this machine's state does not know (their own
    record names them; the same profile name in another project is not this one's)."""
    root = nas_home(settings, user) / RUNS_DIR
    seen = {(run.profile, run.run_id) for run in known}
    found: list[Run] = []
    for profile_dir in sorted(root.iterdir()) if root.is_dir() else []:
        if name is not None and profile_dir.name != name:
            continue
        for run_dir in sorted(profile_dir.iterdir()) if profile_dir.is_dir() else []:
            if (profile_dir.name, run_dir.name) in seen:
                continue
            try:
                run = Run.model_validate_json((run_dir / RUN_RECORD).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if Path(run.project) != project:
                continue
            run.run_dir, run.host = str(run_dir), None
            if run.job_id is None:  # uploaded over ssh: the job id is in its output file's name
                outputs = [m.group(1) for p in run_dir.iterdir() if (m := _OUTPUT.match(p.name))]
                run.job_id = max(outputs, key=int) if outputs else None
            found.append(run)
    return found


def clean_targets(run: Run) -> list[str]:
    """What `clean` deletes of an inactive run: its snapshot folder (HOST:path when it lies on a
    login node) and its collected copy."""
    targets = []
    if run.host and not run.snapshot_removed:
        targets.append(f"{run.host}:{run.run_dir}")
    elif not run.host and run.run_dir and Path(run.run_dir).is_dir():
        targets.append(run.run_dir)
    if run.collected_to and Path(run.collected_to).is_dir():
        targets.append(run.collected_to)
    return targets
