"""Attacks on the drop folder (issue 11, items 5, 7 and 8), against the sandbox's real Slurm.

- 5: slurmctld is paused (SIGSTOP) between accepting sbatch's connection and replying, so sbatch
  gives up ("Socket timed out on send/recv operation", or is cut off by the watcher) while its
  request still sits in slurmctld's queue; the watcher's lookups fail too. When slurmctld
  resumes, every tag exists exactly once in Slurm.
- 7: skbalice moves skbbob's readable script out of a directory both can write into the drop
  area: no job ever runs as skbbob; skbbob's own `cp` into his folder works.
- 8: a file written in two steps (`cat a > f; cat b >> f`) is submitted whole, inotify hint on;
  a name too long to claim ends in failed/ with a `.error` under a name that fits; `.error`
  files are the owner's alone.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.sandbox.procs import Daemons
from tests.conftest import Sandbox, wait_for
from tests.ingest.conftest import VALID_JOB, WatcherRun, make_watcher_run, tagged_jobs

# -- helpers ----------------------------------------------------------------------------------


def as_user(user: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run argv as a lab user (no shell unless argv is one on purpose)."""
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=60,
                          check=check)


def accounted_tags(sandbox: Sandbox, tags: set[str]) -> Counter[str]:
    """How many distinct jobs carry each of `tags`, in the queue and in accounting together."""
    jobs: dict[str, set[str]] = {}
    queue = sandbox.slurm("squeue", "--noheader", "--all", "--states=all", "--format=%i|%k").stdout
    history = sandbox.slurm("sacct", "--noheader", "--parsable2", "--allusers", "--allocations",
                            "--starttime=now-1hours", "--format=JobID,Comment", check=False).stdout
    for line in [*queue.splitlines(), *history.splitlines()]:
        job_id, _, comment = line.partition("|")
        if comment.strip() in tags:
            jobs.setdefault(comment.strip(), set()).add(job_id.strip().split("_")[0])
    return Counter({tag: len(ids) for tag, ids in jobs.items()})


@pytest.fixture
def private_watcher(sandbox: Sandbox, users: dict[str, pwd.struct_passwd]) -> Iterator[list[WatcherRun]]:
    """Watchers a test starts with its own settings; stopped and cleaned afterwards."""
    runs: list[WatcherRun] = []
    yield runs
    for run in runs:
        if run.proc is not None:
            run.stop()
        shutil.rmtree(run.root, ignore_errors=True)
    sandbox.slurm("scancel", "--partition=parked", check=False)


def short_timeout_conf(sandbox: Sandbox, directory: Path, message_timeout_s: int) -> Path:
    """The sandbox's slurm.conf with a short client-side MessageTimeout (for sbatch/squeue only)."""
    directory.mkdir(parents=True, exist_ok=True)
    source = sandbox.layout.slurm_conf
    for sibling in source.parent.iterdir():
        if sibling.name != source.name:
            (directory / sibling.name).symlink_to(sibling)
    lines = [line for line in source.read_text().splitlines() if not line.startswith("MessageTimeout=")]
    conf = directory / source.name
    conf.write_text("\n".join([*lines, f"MessageTimeout={message_timeout_s}"]) + "\n")
    conf.chmod(0o644)
    return conf


# -- item 5: exactly once under ambiguous failures --------------------------------------------


@pytest.mark.parametrize("cut_off_by", ["sbatch-timeout", "watcher-timeout"])
def test_sbatch_cut_off_by_a_paused_slurmctld_never_submits_twice(
        sandbox: Sandbox, users: dict[str, pwd.struct_passwd], private_watcher: list[WatcherRun],
        cut_off_by: str) -> None:
    overrides = {"SKBRIDGE_INGEST__RETRY_INITIAL_S": "0.3", "SKBRIDGE_INGEST__RETRY_MAX_S": "1"}
    run = make_watcher_run(sandbox, **overrides)
    if cut_off_by == "sbatch-timeout":
        # sbatch itself says "Socket timed out on send/recv operation" after 3 s.
        conf = short_timeout_conf(sandbox, run.root / "slurm-client", 3)
        run.env["SKBRIDGE_SLURM__CONF_PATH"] = str(conf)
        pause_s = 7.0
    else:
        # The watcher kills sbatch after 2 s (its command timeout): no answer at all.
        run.env["SKBRIDGE_SLURM__COMMAND_TIMEOUT_S"] = "2"
        pause_s = 6.0
    private_watcher.append(run)
    run.start()
    wait_for(lambda: '"event": "watching"' in run.log_text(), timeout_s=30, what="watcher running")
    alice, bob = users["skbalice"], users["skbbob"]

    record = Daemons(sandbox.layout).running("slurmctld")
    assert record is not None, "slurmctld is not running"
    os.kill(record.pid, signal.SIGSTOP)
    try:
        for index in range(4):
            run.drop(f"amb{index}.sh", VALID_JOB.format(name=f"amb{index}"), owner=alice if index % 2 else bob)
        # Long enough for sbatch to give up and for failed lookups (and retries) to follow.
        wait_for(lambda: run.log_text().count("sbatch did not say whether the job exists") >= 1,
                 timeout_s=pause_s + 10, what="an sbatch cut off while slurmctld is paused", interval_s=0.1)
        time.sleep(max(0.0, pause_s - 4))
    finally:
        os.kill(record.pid, signal.SIGCONT)

    run.wait_settled(4, timeout_s=120)
    log = run.log_text()
    assert list(run.folder("failed").iterdir()) == [], log[-3000:]
    assert len(run.accepted_job_ids()) == 4
    mine = run.tags()
    counts = accounted_tags(sandbox, mine)
    accepted_tags = {tag for tag in mine if counts[tag]}
    assert len(accepted_tags) == 4, f"every accepted file's tag is in Slurm: {counts}"
    assert all(n == 1 for n in counts.values()), f"a tag appears on more than one job: {counts}"
    # The journal agrees with Slurm: the job id in accepted/ is the one carrying the tag.
    for name, job_id in run.accepted_job_ids().items():
        comment = sandbox.slurm("squeue", "--noheader", "--states=all", "-j", job_id, "--format=%k").stdout.strip()
        assert comment in mine, name
    assert "sbatch did not say whether the job exists" in log
    if cut_off_by == "sbatch-timeout":
        assert "Socket timed out on send/recv operation" in log
    # The scenario really happened: a job sbatch had reported as failed was created when
    # slurmctld resumed, and the watcher took it instead of submitting again.
    assert "found the job submitted before the interruption" in log


def test_ambiguous_failure_then_slurmctld_stopped_for_longer_keeps_waiting(
        sandbox: Sandbox, users: dict[str, pwd.struct_passwd], private_watcher: list[WatcherRun]) -> None:
    """Lookups failing for a while (slurmctld frozen) are no reason to submit: the file waits in
    processing/ as "submitting", then exactly one job results."""
    # 3 s: long enough for the lookup's sacct over the last hour of a busy sandbox (thousands
    # of benchmark jobs: over 1 s), short enough to see several lookups fail while it is frozen.
    run = make_watcher_run(sandbox, SKBRIDGE_SLURM__COMMAND_TIMEOUT_S="3", SKBRIDGE_INGEST__RETRY_INITIAL_S="0.2",
                           SKBRIDGE_INGEST__RETRY_MAX_S="0.5")
    private_watcher.append(run)
    run.start()
    wait_for(lambda: '"event": "watching"' in run.log_text(), timeout_s=30, what="watcher running")
    record = Daemons(sandbox.layout).running("slurmctld")
    assert record is not None
    os.kill(record.pid, signal.SIGSTOP)
    try:
        run.drop("frozen.sh", VALID_JOB.format(name="frozen"), owner=users["skbalice"])
        wait_for(lambda: run.log_text().count("cannot look the job up yet") >= 3, timeout_s=45,
                 what="several failed lookups", interval_s=0.1)
        assert run.log_text().count('"event": "sbatch did not say whether the job exists') == 1
        assert list(run.folder("accepted").iterdir()) == [] and list(run.folder("failed").iterdir()) == []
    finally:
        os.kill(record.pid, signal.SIGCONT)
    run.wait_settled(1, timeout_s=120)
    counts = accounted_tags(sandbox, run.tags())
    assert list(counts.values()) == [1], counts


# -- item 7: someone else's file never runs as its owner --------------------------------------


def test_colleagues_file_moved_into_the_drop_area_never_runs_as_the_colleague(
        watcher: WatcherRun, users: dict[str, pwd.struct_passwd]) -> None:
    alice, bob = users["skbalice"], users["skbbob"]
    # A project directory on the same NAS that both can write to (a group share).
    shared = watcher.nas / "projects" / "team"
    shared.mkdir(parents=True)
    shared.parent.chmod(0o755)
    shared.chmod(0o777)
    script = VALID_JOB.format(name="bobsjob")
    for name in ("bobs.sh", "bobs-top.sh", "bobs-into-his.sh"):
        (shared / name).write_text(script)
        os.chown(shared / name, bob.pw_uid, bob.pw_gid)
        (shared / name).chmod(0o644)
    alice_folder, bob_folder = watcher.user_folder(alice), watcher.user_folder(bob)

    # skbalice tries every way in. Only her own folder lets her in; mv keeps skbbob as the owner.
    moved = as_user("skbalice", "mv", str(shared / "bobs.sh"), str(alice_folder / "bobs.sh"), check=False)
    assert moved.returncode == 0, moved.stderr
    with contextlib.suppress(FileNotFoundError):  # unless the watcher claimed it already
        assert (alice_folder / "bobs.sh").stat().st_uid == bob.pw_uid  # mv kept the owner
    top = as_user("skbalice", "mv", str(shared / "bobs-top.sh"), str(watcher.submit / "bobs-top.sh"), check=False)
    assert top.returncode != 0 and "Permission denied" in top.stderr
    his = as_user("skbalice", "mv", str(shared / "bobs-into-his.sh"), str(bob_folder / "x.sh"), check=False)
    assert his.returncode != 0 and "Permission denied" in his.stderr
    # A hard link is refused by the kernel (protected_hardlinks) or, failing that, by the link count.
    as_user("skbalice", "ln", str(shared / "bobs-top.sh"), str(alice_folder / "linked.sh"), check=False)

    watcher.wait_settled(1 + int((alice_folder / "linked.sh").exists()), timeout_s=60)
    failed = watcher.folder("failed")
    error = failed / "bobs.sh.error"
    assert error.exists(), watcher.log_text()[-2000:]
    assert "the file belongs to skbbob but was found in skbalice's folder" in error.read_text()
    info = error.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (bob.pw_uid, 0o600), "the .error is its owner's alone"
    assert list(watcher.folder("accepted").iterdir()) == []
    # Nothing in Slurm from this watcher, and no job of skbbob's called bobsjob at all.
    assert not set(tagged_jobs(watcher.sandbox)) & watcher.tags()
    bobs_jobs = watcher.sandbox.slurm("squeue", "--noheader", "--states=all", "--user=skbbob",
                                      "--format=%j").stdout.split()
    assert "bobsjob" not in bobs_jobs

    # skbbob's own copy, the documented way, works and runs as skbbob.
    mine = shared / "mine.sh"
    mine.write_text(VALID_JOB.format(name="bobsown"))
    os.chown(mine, bob.pw_uid, bob.pw_gid)
    copied = as_user("skbbob", "cp", str(mine), str(bob_folder / "mine.sh"), check=False)
    assert copied.returncode == 0, copied.stderr
    wait_for(lambda: "mine.sh" in watcher.accepted_job_ids(), timeout_s=60, what="skbbob's own copy accepted")
    job_id = watcher.accepted_job_ids()["mine.sh"]
    user = watcher.sandbox.slurm("squeue", "--noheader", "--states=all", "-j", job_id, "--format=%u").stdout.strip()
    assert user == "skbbob"


def test_a_user_cannot_squat_or_reach_into_another_users_folder(
        watcher: WatcherRun, users: dict[str, pwd.struct_passwd]) -> None:
    alice, bob = users["skbalice"], users["skbbob"]
    bob_folder = watcher.user_folder(bob)
    watcher.user_folder(alice)
    listing = as_user("skbalice", "ls", str(bob_folder), check=False)
    assert listing.returncode != 0  # 0700: names of skbbob's drops are his own business
    squat = as_user("skbalice", "mkdir", str(watcher.submit / "skbnewuser"), check=False)
    assert squat.returncode != 0 and "Permission denied" in squat.stderr
    top = watcher.submit.stat()
    assert (top.st_uid, stat.S_IMODE(top.st_mode)) == (0, 0o755)


# -- item 8: drop-folder edges ----------------------------------------------------------------


def test_file_written_in_two_steps_is_never_submitted_half(
        watcher: WatcherRun, users: dict[str, pwd.struct_passwd]) -> None:
    """`cat a > f; cat b >> f` as the user, inotify on: every job holds both halves."""
    alice = users["skbalice"]
    folder = watcher.user_folder(alice)
    parts = watcher.root / "parts"
    parts.mkdir()
    parts.chmod(0o755)
    rounds = 8
    wait_for(lambda: '"event": "watching"' in watcher.log_text(), timeout_s=30, what="watcher running")
    time.sleep(0.5)  # its inotify watches are in place
    for index in range(rounds):
        first = parts / f"a{index}"
        second = parts / f"b{index}"
        # The first half alone is a valid job: submitting it early would go unnoticed otherwise.
        first.write_text(VALID_JOB.format(name=f"two{index}"))
        second.write_text(f"echo second half {index}\n")
        target = folder / f"two{index}.sh"
        gap = ["", "sleep 0.05; ", "sleep 0.1; "][index % 3]
        # A user's shell line on purpose (the attack is the shell's own two-step write); the
        # paths are the test's own.
        as_user("skbalice", "bash", "-c", f'cat "$1" > "$3"; {gap}cat "$2" >> "$3"', "two-step",
                str(first), str(second), str(target))
        time.sleep(0.3)
    watcher.wait_settled(rounds, timeout_s=90)
    accepted = watcher.accepted_job_ids()
    assert list(watcher.folder("failed").iterdir()) == [], [p.read_text() for p in watcher.folder("failed").iterdir()]
    assert len(accepted) == rounds
    for index in range(rounds):
        job_id = accepted[f"two{index}.sh"]
        script = watcher.sandbox.slurm("scontrol", "write", "batch_script", job_id, "-").stdout
        assert f"echo second half {index}" in script, f"two{index}.sh was submitted half-written"


def test_a_name_too_long_to_claim_is_rejected_with_an_error(
        watcher: WatcherRun, users: dict[str, pwd.struct_passwd]) -> None:
    alice = users["skbalice"]
    name = "n" * 250 + ".sh"
    watcher.drop(name, VALID_JOB.format(name="long"), owner=alice)
    watcher.wait_settled(1, timeout_s=60)
    failed = sorted(watcher.folder("failed").iterdir())
    assert len(failed) == 2, watcher.log_text()[-2000:]
    moved, error = failed
    assert error.name == moved.name + ".error" and len(error.name.encode()) <= 255
    assert "the file name is 253 bytes long" in error.read_text()
    info = error.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (alice.pw_uid, 0o600)
    assert watcher.dropped_files() == [] and os.listdir(watcher.folder("processing")) == []


def test_watcher_out_of_file_descriptors_retries_and_rejects_nothing(
        watcher: WatcherRun, users: dict[str, pwd.struct_passwd]) -> None:
    """EMFILE for real: the running watcher's descriptor limit is lowered to what it holds, so
    every open (listing, claim, reading the file, sbatch's pipes) fails; nothing is rejected,
    and the file is submitted once the limit is back."""
    assert watcher.proc is not None
    wait_for(lambda: '"event": "watching"' in watcher.log_text(), timeout_s=30, what="watcher running")
    pid = str(watcher.proc.pid)
    held = len(os.listdir(f"/proc/{pid}/fd"))
    soft, hard = subprocess.run(["prlimit", "--pid", pid, "--nofile", "--output=SOFT,HARD", "--noheadings", "--raw"],
                                capture_output=True, text=True, check=True).stdout.split()
    # Only the soft limit moves: raising a hard limit back needs CAP_SYS_RESOURCE.
    subprocess.run(["prlimit", "--pid", pid, f"--nofile={held}:{hard}"], check=True)
    try:
        watcher.drop("starved.sh", VALID_JOB.format(name="starved"), owner=users["skbalice"])
        time.sleep(3)
        assert list(watcher.folder("failed").iterdir()) == []
        assert list(watcher.folder("accepted").iterdir()) == []
    finally:
        subprocess.run(["prlimit", "--pid", pid, f"--nofile={soft}:{hard}"], check=True)
    watcher.wait_settled(1, timeout_s=60)
    assert "starved.sh" in watcher.accepted_job_ids(), watcher.log_text()[-3000:]
    assert "Too many open files" in watcher.log_text()
