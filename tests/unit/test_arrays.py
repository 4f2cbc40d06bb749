"""Array tasks: reading their Slurm record, naming their results folder, labelling their objects,
and accepting `12345_3` where a job id is accepted."""

from __future__ import annotations

import dataclasses

import pytest

from bridge.errors import PermanentError
from bridge.kubernetes.render import LABEL_ARRAY_JOB_ID, LABEL_ARRAY_TASK_ID, LABEL_JOB_ID, render_job
from bridge.settings import SlurmSettings
from bridge.slurm import jobinfo
from bridge.slurm.commands import SlurmResult
from bridge.slurm.identity import JobOwner
from bridge.slurm.jobinfo import AmbiguousJobRecord, array_of_env, array_task_name, parse_scontrol_job
from bridge.userview.queue import array_has_index, check_job_id
from tests.unit.test_jobinfo import SHOW_JOB
from tests.unit.test_render import REFERENCE, SCRIPT, Directives, reference_settings

TASK_HEAD = "JobId=13010 ArrayJobId=13009 ArrayTaskId=4 ArrayTaskThrottle=2 JobName=my job name"


def test_an_array_task_is_read_with_its_array_and_task_id() -> None:
    job = parse_scontrol_job(SHOW_JOB.replace("JobId=11201 JobName=my job name", TASK_HEAD))
    assert (job.job_id, job.array_job_id, job.array_task_id, job.name) == ("13010", "13009", "4", "my job name")
    assert job.results_name == "13009_4"


def test_a_plain_job_keeps_its_id_as_results_name() -> None:
    job = parse_scontrol_job(SHOW_JOB)
    assert (job.array_job_id, job.array_task_id, job.results_name) == ("", "", "11201")


def test_array_ids_in_the_job_name_are_not_read() -> None:
    """The name is the user's text: `ArrayJobId=` in it names no array."""
    job = parse_scontrol_job(SHOW_JOB.replace("JobName=my job name", "JobName=x ArrayJobId=1 ArrayTaskId=2"))
    assert (job.job_id, job.array_job_id, job.results_name, job.name) == ("11201", "", "11201",
                                                                           "x ArrayJobId=1 ArrayTaskId=2")


@pytest.mark.parametrize(("array_job", "task", "expected"), [
    ("13009", "4", "13009_4"), ("13009", "5-9%2", ""), ("", "4", ""), ("13009", "", ""), ("1x", "2", ""),
    ("١٢", "3", ""),  # Arabic-Indic digits are str.isdigit() but not a Slurm id
])
def test_array_task_name(array_job: str, task: str, expected: str) -> None:
    assert array_task_name(array_job, task) == expected


def test_array_of_env() -> None:
    assert array_of_env({"SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "0"}) == ("7", "0")
    assert array_of_env({"SLURM_JOB_ID": "7"}) is None


def test_an_array_task_renders_with_array_labels_and_environment() -> None:
    task = dataclasses.replace(REFERENCE, job_id="4250", array_job_id="4242", array_task_id="8",
                               array_env=(("SLURM_ARRAY_TASK_COUNT", "10"), ("SLURM_ARRAY_TASK_MAX", "9")))
    rendered = render_job(reference_settings(), task, Directives(), SCRIPT)
    assert rendered.names.pod == "skb-4250-r0"
    for obj in rendered.objects:
        labels = obj["metadata"]["labels"]
        assert (labels[LABEL_JOB_ID], labels[LABEL_ARRAY_JOB_ID], labels[LABEL_ARRAY_TASK_ID]) == ("4250", "4242", "8")
    env = {item["name"]: item["value"] for item in rendered.pod["spec"]["containers"][0]["env"]}
    assert env["SLURM_JOB_ID"] == "4250"
    assert (env["SLURM_ARRAY_JOB_ID"], env["SLURM_ARRAY_TASK_ID"]) == ("4242", "8")
    assert (env["SLURM_ARRAY_TASK_COUNT"], env["SLURM_ARRAY_TASK_MAX"]) == ("10", "9")


def test_a_plain_job_renders_without_array_labels_or_environment() -> None:
    rendered = render_job(reference_settings(), REFERENCE, Directives(), SCRIPT)
    assert LABEL_ARRAY_JOB_ID not in rendered.pod["metadata"]["labels"]
    names = {item["name"] for item in rendered.pod["spec"]["containers"][0]["env"]}
    assert not any(name.startswith("SLURM_ARRAY_") for name in names)


@pytest.mark.parametrize("job_id", ["1234", "1234_5", "0_0"])
def test_job_ids_and_array_tasks_are_accepted(job_id: str) -> None:
    check_job_id(job_id)


@pytest.mark.parametrize("job_id", ["", "12_", "_3", "12_3_4", "12-3", "12_[1-3]", "1234 ", "-1", "١٢"])
def test_other_ids_are_refused(job_id: str) -> None:
    with pytest.raises(PermanentError):
        check_job_id(job_id)


class FakeSlurm:
    """Slurm's command line at its boundary: canned output per command, and the calls made."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, _settings: object, argv: list[str], **_kwargs: object) -> SlurmResult:
        self.calls.append(argv)
        return SlurmResult(stdout=self.answers[argv[0]], stderr="")


def test_a_task_is_asked_for_by_its_array_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """The task holding the array's own id: `scontrol show job 13009` would list the whole array."""
    fake = FakeSlurm({"scontrol": SHOW_JOB.replace("JobId=11201 JobName=my job name",
                                                   "JobId=11201 ArrayJobId=11201 ArrayTaskId=7 JobName=x")})
    monkeypatch.setattr(jobinfo, "run_slurm", fake)
    owner = JobOwner(user="root", uid=0, gid=0, groups=(0,))
    env = {"SLURM_ARRAY_JOB_ID": "11201", "SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "8",
           "SLURM_ARRAY_TASK_STEP": "x"}
    job = jobinfo.read_allocation(SlurmSettings(), "11201", owner, env)
    assert fake.calls == [["scontrol", "show", "job", "-d", "11201_7"]]
    assert job.results_name == "11201_7" and job.array_env == (("SLURM_ARRAY_TASK_COUNT", "8"),)
    with pytest.raises(AmbiguousJobRecord, match="slurmctld 11201_6"):
        jobinfo.read_allocation(SlurmSettings(), "11201", owner, {**env, "SLURM_ARRAY_TASK_ID": "6"})


def test_by_hand_the_hook_asks_squeue_for_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSlurm({"squeue": "13010|1501|alice|1501|vm|13009|4\n"})
    monkeypatch.setattr(jobinfo, "run_slurm", fake)
    env = jobinfo.complete_hook_env(SlurmSettings(), "13010", {})
    assert (env["SLURM_JOB_UID"], env["SLURM_ARRAY_JOB_ID"], env["SLURM_ARRAY_TASK_ID"]) == ("1501", "13009", "4")
    fake.answers["squeue"] = "13011|1501|alice|1501|vm|13011|N/A\n"
    assert "SLURM_ARRAY_JOB_ID" not in jobinfo.complete_hook_env(SlurmSettings(), "13011", {})


@pytest.mark.parametrize(("spec", "index", "held"), [
    ("2-3%2", 3, True), ("2-3%2", 4, False), ("0-9:2,15%4", 6, True), ("0-9:2,15%4", 7, False),
    ("0-9:2,15%4", 15, True), ("7", 7, True), ("5-9:0", 5, False), ("N/A", 1, False), ("", 0, False),
    ("0-4000000000", 3999999999, True),
])
def test_a_pending_groups_indices(spec: str, index: int, held: bool) -> None:
    assert array_has_index(spec, index) is held
