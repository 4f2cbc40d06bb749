"""The drop-folder watcher against the sandbox's real Slurm."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import threading
import time
from collections import Counter

from bridge.jobfile.launcher import LAUNCHER_MARKER
from tests.conftest import Sandbox, wait_for
from tests.ingest.conftest import VALID_JOB, WatcherRun, job_field, make_watcher_run, tagged_jobs


def test_valid_file_becomes_a_job_of_its_owner(watcher: WatcherRun, users: dict[str, pwd.struct_passwd]) -> None:
    alice = users["skbalice"]
    watcher.drop("hello.sh", VALID_JOB.format(name="hello"), owner=alice)
    watcher.wait_settled(1, timeout_s=60)

    accepted = list(watcher.folder("accepted").iterdir())
    assert len(accepted) == 1, watcher.log_text()
    job_id, _, original = accepted[0].name.partition("-")
    assert original == "hello.sh" and job_id.isdigit()
    assert accepted[0].stat().st_uid == alice.pw_uid
    assert job_field(watcher.sandbox, job_id, "%u|%j|%P") == "skbalice|hello|parked"
    assert watcher.dropped_files() == [] and os.listdir(watcher.folder("processing")) == []

    script = watcher.sandbox.slurm("scontrol", "write", "batch_script", job_id, "-").stdout
    assert "echo hello from hello" in script
    assert LAUNCHER_MARKER in script
    # The launcher sits after the header so Slurm still reads every #SBATCH line.
    lines = script.splitlines()
    launcher_at = next(i for i, line in enumerate(lines) if LAUNCHER_MARKER in line)
    assert all(not line.startswith("#SBATCH") for line in lines[launcher_at:])
    assert '"file": "hello.sh"' in watcher.log_text() and f'"job_id": "{job_id}"' in watcher.log_text()


def test_rejected_files_land_in_failed_with_reasons(watcher: WatcherRun, users: dict[str, pwd.struct_passwd]) -> None:
    alice = users["skbalice"]
    root = pwd.getpwnam("root")
    watcher.drop("noimage.sh", "#!/bin/bash\n#SBATCH --mem=1G\necho hi\n", owner=alice)
    watcher.drop("rootowned.sh", VALID_JOB.format(name="r"), owner=root, folder=alice)
    watcher.drop("toobig.sh", VALID_JOB.format(name="big").replace("--mem=1G", "--mem=100T"), owner=alice)
    # Slurm itself refuses this one: more GPUs than any node has.
    watcher.drop("slurmsaysno.sh", VALID_JOB.format(name="no").replace("#K8S_IMAGE", "#SBATCH --gres=gpu:a100:5\n#K8S_IMAGE"),
                 owner=alice)
    link_target = watcher.root / "elsewhere.sh"
    link_target.write_text(VALID_JOB.format(name="x"))
    os.symlink(link_target, watcher.user_folder(alice) / "symlink.sh")
    watcher.wait_settled(5, timeout_s=60)

    failed = watcher.folder("failed")
    reasons = {name: (failed / f"{name}.error").read_text() for name in
               ("noimage.sh", "rootowned.sh", "toobig.sh", "slurmsaysno.sh", "symlink.sh")}
    assert "#K8S_IMAGE" in reasons["noimage.sh"]
    assert "root" in reasons["rootowned.sh"]
    assert "mem" in reasons["toobig.sh"].lower()
    assert "Requested node configuration is not available" in reasons["slurmsaysno.sh"]
    assert "symlink" in reasons["symlink.sh"].lower() or "symbolic link" in reasons["symlink.sh"].lower()
    assert (failed / "noimage.sh.error").stat().st_uid == alice.pw_uid
    assert list(watcher.folder("accepted").iterdir()) == []


def test_name_clashes_never_overwrite(watcher: WatcherRun, users: dict[str, pwd.struct_passwd]) -> None:
    alice = users["skbalice"]
    for round_ in range(3):
        watcher.drop("same.sh", "#!/bin/bash\necho no image\n", owner=alice)
        watcher.wait_settled(round_ + 1, timeout_s=60)
    failed = sorted(p.name for p in watcher.folder("failed").iterdir())
    assert failed == ["same.sh", "same.sh.1", "same.sh.1.error", "same.sh.2", "same.sh.2.error", "same.sh.error"]


def test_partially_written_file_is_not_taken_early(watcher: WatcherRun, users: dict[str, pwd.struct_passwd]) -> None:
    alice = users["skbalice"]
    target = watcher.user_folder(alice) / "slow.sh"
    header = VALID_JOB.format(name="slow")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.fchown(fd, alice.pw_uid, alice.pw_gid)
    os.write(fd, header.encode())
    taken_early = False
    # Keep appending for several settle windows: the file must stay in submit/ throughout.
    for index in range(12):
        time.sleep(0.25)
        os.write(fd, f"echo step {index}\n".encode())
        taken_early = taken_early or not target.exists()
    os.write(fd, b"echo the end\n")
    os.close(fd)
    assert not taken_early, "the watcher claimed a file while it was still being written"
    watcher.wait_settled(1, timeout_s=60)
    job_id = watcher.accepted_job_ids()["slow.sh"]
    script = watcher.sandbox.slurm("scontrol", "write", "batch_script", job_id, "-").stdout
    assert "echo the end" in script and "echo step 11" in script


def test_slurmctld_down_files_wait_then_submit(sandbox: Sandbox, users: dict[str, pwd.struct_passwd]) -> None:
    """slurmctld unreachable from the watcher: files wait (never fail), then each is submitted once.

    The shared sandbox's slurmctld keeps running (other sessions' fixtures would restart a
    stopped one); the watcher's own slurm.conf points at a closed port instead, which is what
    every Slurm command on the host sees while slurmctld is down, and is switched back later.
    """
    run = make_watcher_run(sandbox)
    source = sandbox.layout.slurm_conf
    conf_dir = run.root / "slurm-client"
    conf_dir.mkdir()
    for sibling in source.parent.iterdir():
        if sibling.name != source.name:
            (conf_dir / sibling.name).symlink_to(sibling)
    real = source.read_text()
    port = next(line.split("=", 1)[1] for line in real.splitlines() if line.startswith("SlurmctldPort="))
    conf = conf_dir / source.name
    conf.write_text(real.replace(f"SlurmctldPort={port}", "SlurmctldPort=1") + "MessageTimeout=3\n")
    conf.chmod(0o644)
    run.env["SKBRIDGE_SLURM__CONF_PATH"] = str(conf)
    try:
        run.start()
        for index in range(5):
            run.drop(f"wait{index}.sh", VALID_JOB.format(name=f"wait{index}"), owner=users["skbbob"])
        # Long enough for several failed sbatch attempts, failed lookups and retries.
        wait_for(lambda: run.log_text().count("cannot look the job up yet") >= 5, timeout_s=90,
                 what="retries after sbatch failed")
        assert "Unable to contact slurm controller" in run.log_text()
        assert list(run.folder("failed").iterdir()) == []
        assert list(run.folder("accepted").iterdir()) == []
        conf.write_text(real)  # slurmctld is back (each sbatch/squeue reads the file anew)
        run.wait_settled(5, timeout_s=120)
        assert len(run.accepted_job_ids()) == 5
        assert list(run.folder("failed").iterdir()) == []
        mine = run.tags()
        assert sorted(Counter(t for t in tagged_jobs(sandbox) if t in mine).values()) == [1] * 5
    finally:
        if run.proc is not None:
            run.stop()
        sandbox.slurm("scancel", "--partition=parked", check=False)
        shutil.rmtree(run.root, ignore_errors=True)


def test_sigterm_stops_cleanly(watcher: WatcherRun, users: dict[str, pwd.struct_passwd]) -> None:
    watcher.drop("one.sh", VALID_JOB.format(name="one"), owner=users["skbalice"])
    watcher.wait_settled(1, timeout_s=60)
    assert watcher.stop(signal.SIGTERM) == 0
    assert '"event": "stopped"' in watcher.log_text()


def test_second_instance_refuses_to_start(watcher: WatcherRun) -> None:
    second = make_watcher_run(watcher.sandbox, SKBRIDGE_INGEST__LOCK_PATH=watcher.env["SKBRIDGE_INGEST__LOCK_PATH"])
    wait_for(lambda: '"event": "watching"' in watcher.log_text(), timeout_s=30, what="first watcher running")
    second.start()
    assert second.proc is not None
    assert second.proc.wait(timeout=30) == 1
    assert "another watcher" in second.log_text()


def test_kill_9_during_a_burst_loses_and_doubles_nothing(sandbox: Sandbox, users: dict[str, pwd.struct_passwd]) -> None:
    """1,000 files arrive while the watcher is killed -9 at random moments and restarted."""
    import random

    run = make_watcher_run(sandbox, SKBRIDGE_INGEST__MAX_CONCURRENT_SBATCH="4")
    total = 1000
    bad_every = 50  # some invalid files too: each must be rejected exactly once
    rng = random.Random(1234)
    try:
        run.start()

        def dropper() -> None:
            for index in range(total):
                text = VALID_JOB.format(name=f"b{index}")
                if index % bad_every == 0:
                    text = "#!/bin/bash\necho no image\n"
                run.drop(f"burst{index:04d}.sh", text, owner=users["skbalice" if index % 2 else "skbbob"])

        writer = threading.Thread(target=dropper)
        writer.start()
        kills = 0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 2.0))
            if run.proc is not None:
                run.stop(signal.SIGKILL)
                kills += 1
                run.start()
            accepted = len(list(run.folder("accepted").iterdir()))
            failed = len([p for p in run.folder("failed").iterdir() if not p.name.endswith(".error")])
            if not writer.is_alive() and accepted + failed >= total:
                break
            if kills >= 25 and not writer.is_alive():
                break
        writer.join()
        run.wait_settled(total, timeout_s=300)
    finally:
        if run.proc is not None:
            run.stop()

    accepted = run.accepted_job_ids()
    failed = {p.name for p in run.folder("failed").iterdir()}
    expected_bad = {f"burst{i:04d}.sh" for i in range(0, total, bad_every)}
    assert failed == expected_bad | {f"{name}.error" for name in expected_bad}, \
        "each invalid file rejected exactly once, with its explanation and no leftovers"
    assert len(accepted) == total - len(expected_bad)
    assert run.dropped_files() == [] and os.listdir(run.folder("processing")) == []
    mine = run.tags()
    tags = Counter(t for t in tagged_jobs(sandbox) if t in mine)
    duplicates = {tag: n for tag, n in tags.items() if n > 1}
    assert not duplicates, f"duplicate submissions: {duplicates}"
    assert len(tags) == len(accepted), "one Slurm job per accepted file"
    assert kills >= 3
    sandbox.slurm("scancel", "--partition=parked", check=False)
