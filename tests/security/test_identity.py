"""Issue 11, items 1, 2 and 6: nobody becomes somebody else, root is never steered by a
user's file, and teardown runs whatever collecting did. Each test is an attack by skbalice,
a normal lab account, against the real sandbox."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.ingest.layout import ensure_user_folder, user_submit_dir
from tests.conftest import Sandbox, ensure_user, wait_for
from tests.jobs.conftest import Jobs, job_script

FORGED_OWNER = "   UserId=skbbob(1502) GroupId=skbbob(1502) MCS_label=N/A"
FORGED_ALLOCATION = "     Nodes={node} CPU_IDs=0-15 Mem=65536 GRES=gpu:a100:4(IDX:0-3)"
# A real line break, and the characters Python's str.splitlines() also breaks at.
SEPARATORS = {"newline": "\n", "file-separator": "\x1c", "next-line": "\x85", "line-separator": "\u2028"}
FIELDS = ("--comment", "--job-name", "--output", "--error", "--chdir", "--mail-user")


def _prolog_outcome(jobs: Jobs, user: str, job_id: str) -> dict[str, Any]:
    """What the prolog did for the job: its user-visible status and the Pod it made, if any."""
    folder = jobs.results(user, job_id)
    status = json.loads((folder / "bridge-status.json").read_text()) if (folder / "bridge-status.json").exists() else {}
    manifest = folder / "manifest.yaml"
    docs = [doc for doc in yaml.safe_load_all(manifest.read_text())] if manifest.exists() else []
    return {"status": status, "objects": [doc for doc in docs if doc]}


def _assert_ran_as_alice_or_refused(jobs: Jobs, job_id: str, what: str) -> None:
    alice, bob = pwd.getpwnam("skbalice"), pwd.getpwnam("skbbob")
    assert not jobs.results("skbbob", job_id).exists(), f"{what}: root made a folder in skbbob's results"
    outcome = _prolog_outcome(jobs, "skbalice", job_id)
    states = [attempt.get("state") for attempt in outcome["status"].get("attempts") or []]
    assert states, f"{what}: the prolog left no word for alice ({outcome})"
    if states[-1] == "rejected":
        assert "line break" in outcome["status"]["reason"], outcome["status"]
        return
    pods = [obj for obj in outcome["objects"] if obj["kind"] == "Pod"]
    volumes = [obj for obj in outcome["objects"] if obj["kind"] == "PersistentVolume"]
    assert pods, f"{what}: a running attempt without its Pod in the manifest"
    security = pods[0]["spec"]["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (alice.pw_uid, alice.pw_gid), what
    assert bob.pw_gid not in security["supplementalGroups"], what
    paths = [volume["spec"]["hostPath"]["path"] for volume in volumes]
    assert paths and all("skbbob" not in path for path in paths), f"{what}: {paths}"
    assert str(jobs.settings.nas.home_root / "skbalice") in paths, f"{what}: {paths}"
    assert pods[0]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchFields"][0]["values"] == [jobs.sandbox.node_name]


def test_forged_fields_in_plain_sbatch_never_change_the_owner(jobs: Jobs, sandbox: Sandbox) -> None:
    home = jobs.home("skbalice")
    submitted: dict[str, str] = {}
    refused = 0
    for field in FIELDS:
        for sep_name, sep in SEPARATORS.items():
            forged = f"x{sep}{FORGED_OWNER}{sep}{FORGED_ALLOCATION.format(node=sandbox.node_name)}"
            value = f"{home}/out/{forged}" if field in ("--output", "--error") else \
                f"{home}/{forged}" if field == "--chdir" else forged
            script = jobs.write_script("skbalice", "forged.sh", job_script("--gres=gpu:a100:1"))
            argv = ["sbatch", "--parsable", f"{field}={value}"]
            argv += [] if field == "--output" else [f"--output={home}/out/%j.out"]
            argv += [] if field == "--chdir" else [f"--chdir={home}"]
            out = sandbox.slurm(*argv, script.as_posix(), user="skbalice", check=False)
            if out.returncode != 0:
                # job_submit.lua refuses a line-breaking field at once, and says why.
                assert "one plain line" in out.stderr, out.stderr
                refused += 1
                continue
            job_id = out.stdout.strip().split(";")[0]
            jobs.submitted.append(job_id)
            submitted[job_id] = f"{field} with {sep_name}"
    assert refused + len(submitted) == len(FIELDS) * len(SEPARATORS)
    for job_id, what in submitted.items():
        jobs.wait_done(job_id, timeout_s=240)
        _assert_ran_as_alice_or_refused(jobs, job_id, what)


def test_a_comment_changed_after_submission_cannot_change_the_owner(jobs: Jobs, sandbox: Sandbox) -> None:
    job_id = jobs.sbatch("skbalice", job_script(), "--hold")
    for sep in ("\n", "\u2028"):
        changed = sandbox.slurm("scontrol", "update", f"JobId={job_id}", f"Comment=x{sep}{FORGED_OWNER}",
                                user="skbalice", check=False)
        assert changed.returncode != 0, "job_submit.lua refuses the update (scontrol shows no plugin message)"
    sandbox.slurm("scontrol", "release", job_id, user="skbalice")
    jobs.wait_done(job_id, timeout_s=180)
    _assert_ran_as_alice_or_refused(jobs, job_id, "scontrol update Comment")


@pytest.mark.parametrize("sep", ["\n", "\u2028"])
def test_a_forged_record_past_the_plugin_is_refused_by_the_prolog(jobs: Jobs, sandbox: Sandbox, sep: str) -> None:
    # The second line of defence: the text reaches scontrol's record anyway (root, or a site
    # whose plugin is not in effect, set the comment), and the prolog still cannot be fooled.
    job_id = jobs.sbatch("skbalice", job_script(), "--hold")
    forged = f"x{sep}{FORGED_OWNER}{sep}{FORGED_ALLOCATION.format(node=sandbox.node_name)}"
    sandbox.slurm("scontrol", "update", f"JobId={job_id}", f"Comment={forged}")
    assert FORGED_OWNER.strip() in sandbox.slurm("scontrol", "show", "job", job_id).stdout
    sandbox.slurm("scontrol", "release", job_id)
    jobs.wait_done(job_id, timeout_s=180)
    _assert_ran_as_alice_or_refused(jobs, job_id, f"root-set comment with {sep!r}")
    if sep == "\n":
        status = json.loads((jobs.results("skbalice", job_id) / "bridge-status.json").read_text())
        assert status["state"] == "rejected" and "line break" in status["reason"], status


def test_forged_names_in_a_dropped_file_never_change_the_owner(jobs: Jobs, sandbox: Sandbox,
                                                               users: dict[str, pwd.struct_passwd]) -> None:
    # The sandbox's own watcher takes the file. A line break ends an #SBATCH line, but the
    # other separators ride along inside the value.
    alice = users["skbalice"]
    ensure_user_folder(jobs.settings.nas, alice)
    folder = user_submit_dir(jobs.settings.nas, "skbalice")
    names: list[str] = []
    for sep_name, sep in SEPARATORS.items():
        if sep == "\n":
            continue
        name = f"forged-{sep_name}-{os.getpid()}.sh"
        # Quoted, as sbatch reads a value with spaces; unquoted, the validator refuses the file.
        # (--comment is the bridge's own tag on this path, refused in a dropped file.)
        text = job_script(f'--job-name="x{sep}{FORGED_OWNER}"')
        staged = jobs.write_script("skbalice", name, text)
        os.rename(staged, folder / name)
        names.append(name)
    accepted = jobs.settings.nas.accepted_dir

    def job_ids() -> dict[str, str]:
        found = {path.name.split("-", 1)[1]: path.name.split("-", 1)[0] for path in accepted.iterdir() if "-" in path.name}
        return {name: found[name] for name in names if name in found}

    failed = jobs.settings.nas.failed_dir

    def settled() -> bool:
        return all(name in job_ids() or (failed / f"{name}.error").exists() for name in names)

    wait_for(settled, timeout_s=120, what="the dropped files accepted or rejected")
    for name in names:
        if name in job_ids():
            continue
        # slurmctld's plugin refused the job at the watcher's sbatch; the .error says why.
        assert "one plain line" in (failed / f"{name}.error").read_text(), name
    for name, job_id in job_ids().items():
        jobs.submitted.append(job_id)
        jobs.wait_done(job_id, timeout_s=240)
        _assert_ran_as_alice_or_refused(jobs, job_id, f"dropped {name}")


def test_an_account_outside_the_lab_range_gets_no_pod(jobs: Jobs, sandbox: Sandbox) -> None:
    # A service account (uid below policy.uid_min) submitting a bridge job with plain sbatch.
    ensure_user("skbsvc", 990)
    jobs.home("skbsvc")
    job_id = jobs.sbatch("skbsvc", job_script())
    jobs.wait_done(job_id, timeout_s=120)
    assert jobs.pod(job_id) is None and not jobs.objects(job_id)
    assert not jobs.results("skbsvc", job_id).exists(), "root made no folder for an unverified owner"
    comment = sandbox.slurm("scontrol", "show", "job", job_id).stdout
    assert "skbridge rejected" in comment and "outside the site's range" in comment, comment
    state, code = jobs.sacct(job_id)
    assert state == "FAILED" and code != "0:0", (state, code)


def test_a_forged_status_file_does_not_steer_the_epilog(jobs: Jobs, sandbox: Sandbox) -> None:
    # Bob runs a job; alice rewrites the status file in her own results folder so that her
    # epilog would collect bob's Pod into her folder.
    bob_job = jobs.sbatch("skbbob", job_script(env=("SANDBOX_RUN_DURATION=60s",), body="echo bob-secret; sleep 60"))
    alice_job = jobs.sbatch("skbalice", job_script(env=("SANDBOX_RUN_DURATION=8s",), body="echo alice; sleep 8"))
    jobs.wait_running(bob_job, timeout_s=120)
    jobs.wait_running(alice_job, timeout_s=120)
    status_file = jobs.results("skbalice", alice_job) / "bridge-status.json"
    wait_for(lambda: status_file.exists() and '"running"' in status_file.read_text(), timeout_s=60,
             what="the prolog's record of the running attempt")
    status = json.loads(status_file.read_text())
    for attempt in status["attempts"]:
        attempt["pod"] = f"skb-{bob_job}-r0"
    forged = json.dumps(status)
    subprocess.run(["runuser", "-u", "skbalice", "--", "python3", "-c",
                    "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])",
                    str(status_file), forged], check=True)
    jobs.wait_done(alice_job, timeout_s=180)
    wait_for((jobs.results("skbalice", alice_job) / "summary.json").exists, timeout_s=60,
             what="alice's summary")
    folder = jobs.results("skbalice", alice_job)
    pod = json.loads((folder / "pod.json").read_text())
    assert pod["metadata"]["name"] == f"skb-{alice_job}-r0"
    assert pod["metadata"]["labels"]["slurm.user"] == "skbalice"
    assert "bob-secret" not in (folder / "pod.log").read_text(errors="replace")
    assert jobs.pod(bob_job) is not None, "bob's Pod is untouched by alice's epilog"


def test_an_unwritable_results_folder_still_gets_torn_down(jobs: Jobs, sandbox: Sandbox) -> None:
    job_id = jobs.sbatch("skbalice", job_script(env=("SANDBOX_RUN_DURATION=6s",), body="sleep 6"))
    jobs.wait_running(job_id, timeout_s=120)
    folder = jobs.results("skbalice", job_id)
    subprocess.run(["runuser", "-u", "skbalice", "--", "chmod", "0500", str(folder)], check=True)
    try:
        jobs.wait_done(job_id, timeout_s=180)

        def epilog_removed() -> bool:
            lines = [json.loads(line) for line in jobs.hook_log().splitlines() if f'"{job_id}"' in line]
            return any(line.get("component") == "epilog" and line.get("event") == "removed" for line in lines)

        wait_for(epilog_removed, timeout_s=90, what="the epilog's teardown despite the failed collection")
        assert not jobs.objects(job_id)
        output = jobs.output_path("skbalice", job_id).read_text()
        assert "skbridge epilog: results not collected" in output, output
        record = json.loads(Path(jobs.settings.job_records_dir, f"{job_id}.json").read_text())
        assert record["attempts"][-1]["state"] == "collect-failed"
        assert os.stat(jobs.settings.job_records_dir / f"{job_id}.json").st_mode & 0o077 == 0
    finally:
        subprocess.run(["chmod", "0750", str(folder)], check=False)


def test_the_job_record_is_roots_alone(jobs: Jobs) -> None:
    job_id = jobs.sbatch("skbalice", job_script())
    jobs.wait_done(job_id, timeout_s=120)
    record = jobs.settings.job_records_dir / f"{job_id}.json"
    wait_for(record.exists, timeout_s=30, what="root's record of the job")
    info = os.stat(record)
    assert info.st_uid == 0 and info.st_mode & 0o077 == 0
    assert os.stat(jobs.settings.job_records_dir).st_mode & 0o077 == 0


def test_a_full_nas_still_gets_torn_down_and_says_so(jobs: Jobs, sandbox: Sandbox) -> None:
    # The user's results folder is a 256 KiB filesystem; the job leaves 2 MiB of results.
    carol = ensure_user("skbcarol", 1503)
    jobs.home("skbcarol")
    results = jobs.settings.nas.results_root / "skbcarol"
    results.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=256k,uid={carol.pw_uid},gid={carol.pw_gid},mode=0750",
                    "skbridge-full-nas", str(results)], check=True)
    try:
        body = "mkdir -p /workspace/full-out && head -c 2097152 /dev/zero > /workspace/full-out/big.bin && echo wrote"
        job_id = jobs.sbatch("skbcarol", job_script(body=body, results="/workspace/full-out"))
        jobs.wait_done(job_id, timeout_s=180)

        def epilog_removed() -> bool:
            lines = [json.loads(line) for line in jobs.hook_log().splitlines() if f'"{job_id}"' in line]
            return any(line.get("component") == "epilog" and line.get("event") == "removed" for line in lines)

        wait_for(epilog_removed, timeout_s=90, what="the epilog's teardown on a full NAS")
        assert not jobs.objects(job_id)
        folder = results / job_id
        summary = folder / "summary.json"
        told = (summary.exists() and "No space left" in summary.read_text()) or \
            "results not collected" in jobs.output_path("skbcarol", job_id).read_text()
        assert told, "the user learns that the NAS was full"
    finally:
        subprocess.run(["umount", "-l", str(results)], check=False)
