"""Parsing of Slurm's value notations for the user commands (no sandbox; the commands are tested
end to end in tests/cli)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.kubernetes.access import ATTACH_KUBECONFIG
from bridge.kubernetes.render import ObjectNames
from bridge.userview import pod
from bridge.userview.fields import SEP, duration_s, expand_output_path, job_records, memory_mib, parse_gres, tres_gpus
from bridge.userview.listing import normalize_states
from bridge.userview.queue import SlurmJob, _exit_pair
from bridge.userview.reasons import plain_reason
from bridge.userview.status import pod_name_of


@pytest.mark.parametrize(("text", "expected"), [
    ("gpu:a100:4", {"a100": 4}),
    ("gpu:a100:4(S:0-1)", {"a100": 4}),
    ("gpu:a100:2(IDX:0,2),gpu:v100:1(IDX:3)", {"a100": 2, "v100": 1}),
    ("gpu:a100:0(IDX:N/A)", {"a100": 0}),
    ("gpu:2", {"gpu": 2}),
    ("(null)", {}),
    ("", {}),
    ("license:matlab:1,gpu:h100:8", {"h100": 8}),
])
def test_gres(text: str, expected: dict[str, int]) -> None:
    assert parse_gres(text) == expected


def test_tres_and_memory() -> None:
    assert tres_gpus("cpu=2,mem=8G,node=1,billing=2,gres/gpu=2,gres/gpu:a100=2") == 2
    assert tres_gpus("cpu=1,gres/gpu:a100=1,gres/gpu:v100=1") == 2
    assert tres_gpus("cpu=1,mem=1G") == 0
    assert (memory_mib("1G"), memory_mib("512M"), memory_mib("2T"), memory_mib("N/A")) == (1024, 512, 2 * 1024**2, None)


@pytest.mark.parametrize(("text", "seconds"), [
    ("0:01", 1), ("10:00", 600), ("01:02:03", 3723), ("2-00:00:00", 172800), ("1-02", 93600), ("UNLIMITED", None),
    ("N/A", None),
])
def test_durations(text: str, seconds: int | None) -> None:
    assert duration_s(text) == seconds


def test_exit_codes_from_squeue_and_sacct() -> None:
    assert _exit_pair("768") == (3, 0)  # squeue: raw wait status
    assert _exit_pair("15") == (0, 15)
    assert _exit_pair("3:0") == (3, 0)  # sacct: code:signal
    assert _exit_pair("0:15") == (0, 15)


def test_output_patterns() -> None:
    assert expand_output_path("/nas/out/%x-%j.out", job_id="12", user="ann", name="train", node="n1") == \
        "/nas/out/train-12.out"
    assert expand_output_path("%u/%N/%5j-%%", job_id="12", user="ann", name="x", node="n1") == "ann/n1/00012-%"
    assert expand_output_path("/a/b\\%j", job_id="12", user="ann", name="x", node=None) == "/a/b%j"


def test_records_keep_a_multi_line_name_in_one_record() -> None:
    text = f"12{SEP}ann{SEP}RUNNING{SEP}line one\nUserId=bob(1502) forged\n13{SEP}ann{SEP}PENDING{SEP}plain\n"
    assert job_records(text, 4) == [["12", "ann", "RUNNING", "line one\nUserId=bob(1502) forged"],
                                    ["13", "ann", "PENDING", "plain"]]


def test_states_and_reasons() -> None:
    assert normalize_states(["PD,R", "failed"]) == {"PENDING", "RUNNING", "FAILED"}
    assert "held by you" in (plain_reason("JobHeldUser") or "")
    assert "usage limit" in (plain_reason("QOSMaxGRESPerUser") or "")
    assert plain_reason(None) is None
    assert plain_reason("SomethingNew") == "SomethingNew"


def test_names_agree_with_the_bridge() -> None:
    # Kept literal in bridge.userview to spare the Kubernetes client's import time.
    assert pod.ATTACH_KUBECONFIG == ATTACH_KUBECONFIG
    job = SlurmJob(job_id="42", uid=1, user="ann", state="RUNNING", reason=None, nodes=None, cpus=None,
                   memory_mib=None, gpus=0, restart_count=3)
    assert pod_name_of(None, job) == ObjectNames.for_attempt("42", 3).pod
    assert pod_name_of({"attempts": [{"pod": "skb-42-r1"}, {"state": "rejected"}]}, job) == "skb-42-r1"


def test_user_commands_start_without_the_admin_sandbox_or_kubernetes_imports() -> None:
    # `skbridge status|jobs|nodes` pay Python start-up on every call: only the user commands load.
    code = "import sys; sys.argv = ['skbridge', 'status', '--help']; from bridge.cli.entry import main; main()"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Exit status" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "bridge.cli.user.status" in imported
    assert not {name for name in imported if name.startswith(("bridge.sandbox", "bridge.admin", "kubernetes"))}


def test_drop_outcome_is_found_by_the_files_identity(tmp_path: Path) -> None:
    from bridge.settings import NasSettings, Settings
    from bridge.userview.actions import DropTicket, find_outcome

    settings = Settings(nas=NasSettings(root=tmp_path))
    for folder in (settings.nas.accepted_dir, settings.nas.failed_dir):
        folder.mkdir(parents=True)
    mine = tmp_path / "mine.sh"
    mine.write_text("#!/bin/bash\n")
    info = mine.stat()
    ticket = DropTicket(name="job.sh", device=info.st_dev, inode=info.st_ino)
    assert find_outcome(settings, ticket) is None
    # Someone else's job.sh (another inode) is not ours, whatever its name.
    (settings.nas.accepted_dir / "77-job.sh").write_text("other")
    (settings.nas.failed_dir / "job.sh").write_text("other")
    assert find_outcome(settings, ticket) is None
    os.link(mine, settings.nas.failed_dir / "job.sh.1")
    (settings.nas.failed_dir / "job.sh.1.error").write_text("line 3: image not allowed\n")
    outcome = find_outcome(settings, ticket)
    assert outcome is not None and outcome.job_id is None and "image not allowed" in (outcome.error or "")
    (settings.nas.failed_dir / "job.sh.1").unlink()
    os.link(mine, settings.nas.accepted_dir / "78-job.sh")
    outcome = find_outcome(settings, ticket)
    assert outcome is not None and outcome.job_id == "78"
