"""The job file format: every rule gives its own reason, and the validator never raises."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.jobfile.spec import normalize_image, parse_job_text, render_report
from bridge.settings import NasSettings, PolicySettings

POLICY = PolicySettings(allowed_registries=["registry.lab:5000", "docker.io/library"], max_cpus_per_task=32,
                        max_mem_mib=65536, max_gpus=4, max_time_minutes=2 * 24 * 60, max_array_tasks=10)
NAS = NasSettings(root=Path("/mnt/nas"), shared_volumes={"datasets": {"path": "shared/datasets"},
                                                         "scratch": {"path": "scratch", "read_only": False}})
GOOD = """#!/bin/bash
#SBATCH --job-name=train-resnet
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --gres=gpu:a100:2          # or --gpus=2
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
#K8S_IMAGE=registry.lab:5000/pytorch:2.4   # required; registry allow-list
#K8S_WORKDIR=/workspace                    # default /workspace
#K8S_ENV=WANDB_MODE=offline                # repeatable
#K8S_ENV=GREETING=a=b c
#K8S_MOUNT=datasets:/data:ro               # named NAS volume
#K8S_SHM=16Gi                              # /dev/shm size for data loaders
#K8S_RESULTS=/workspace/outputs            # collected after the job
python train.py --epochs 100
"""


def parse(text: str, owner: str | None = "alice"):  # type: ignore[no-untyped-def]
    return parse_job_text(text, POLICY, NAS, owner=owner, owner_home=Path("/home/alice"))


def codes(text: str) -> list[str]:
    return [p.code for p in parse(text)[1] if p.severity == "error"]


def with_header(*lines: str, image: str = "#K8S_IMAGE=registry.lab:5000/x:1") -> str:
    return "\n".join(["#!/bin/bash", *lines, image, "echo hi", ""])


def test_the_design_example_is_valid_and_fully_read() -> None:
    spec, problems = parse(GOOD)
    assert problems == []
    assert spec is not None
    assert spec.image == "registry.lab:5000/pytorch:2.4"
    assert spec.env == [("WANDB_MODE", "offline"), ("GREETING", "a=b c")]
    assert [(m.name, m.container_path, m.read_only) for m in spec.mounts] == [("datasets", "/data", True)]
    assert (spec.shm, spec.results, spec.workdir) == ("16Gi", "/workspace/outputs", "/workspace")
    assert (spec.cpus_per_task, spec.mem_mib, spec.gpus, spec.gpu_type) == (8, 32768, 2, "a100")
    assert spec.time_limit_minutes == 24 * 60
    assert spec.option("job-name") == "train-resnet"


def test_short_options_and_space_separated_values_are_read_as_sbatch_does() -> None:
    spec, problems = parse(with_header("#SBATCH -c 4 -t 1-02:30", "#SBATCH -J demo --mem-per-cpu 2G", "#SBATCH -G 1"))
    assert problems == []
    assert spec is not None
    assert (spec.cpus_per_task, spec.mem_mib, spec.gpus, spec.time_limit_minutes) == (4, 8192, 1, 26 * 60 + 30)
    assert spec.option("job-name") == "demo"


@pytest.mark.parametrize(("lines", "code"), [
    (("#SBATCH --uid=0",), "forbidden-option"),
    (("#SBATCH --gid=0",), "forbidden-option"),
    (("#SBATCH --comment=skb:deadbeef",), "forbidden-option"),
    (("#SBATCH --export=ALL",), "forbidden-option"),
    (("#SBATCH --wrap='rm -rf /'",), "forbidden-option"),
    (("#SBATCH --get-user-env",), "forbidden-option"),
    (("#SBATCH --chdir=/root",), "path-escape"),
    (("#SBATCH --output=/etc/cron.d/x",), "path-escape"),
    (("#SBATCH --error=../../../etc/passwd",), "path-escape"),
    (("#SBATCH --cpus-per-task=33",), "over-limit"),
    (("#SBATCH --mem=65G",), "over-limit"),
    (("#SBATCH -c 4 --mem-per-cpu=20G",), "over-limit"),
    (("#SBATCH --gres=gpu:a100:5",), "over-limit"),
    (("#SBATCH --time=3-00:00:00",), "over-limit"),
    (("#SBATCH --time=UNLIMITED",), "over-limit"),
    (("#SBATCH --array=0-99",), "over-limit"),
    (("#SBATCH --nodes=5",), "over-limit"),
    (("#SBATCH --mem=lots",), "option-value"),
    (("#SBATCH --time=soon",), "option-value"),
    (("#SBATCH --gres=fpga:1",), "option-value"),
    (("#SBATCH --cpus-per-task",), "option-value"),
    (("#K8S_IMGAE=registry.lab:5000/x:1",), "unknown-k8s-key"),
    (("#K8S_ENV=SLURM_JOB_ID=1",), "reserved-env"),
    (("#K8S_ENV=1BAD=x",), "bad-env"),
    (("#K8S_MOUNT=nosuch:/data",), "unknown-volume"),
    (("#K8S_MOUNT=datasets:relative",), "bad-mount"),
    (("#K8S_SHM=huge",), "bad-shm"),
    (("#K8S_RESULTS=outputs",), "bad-path"),
    (("#K8S_WORKDIR=",), "k8s-empty"),
    (("#SBATCH --frobnicate=1",), "unknown-option"),
    (("#SBATCH --mem='1G",), "sbatch-syntax"),
])
def test_each_bad_line_gets_its_own_reason_with_its_line_number(lines: tuple[str, ...], code: str) -> None:
    spec, problems = parse(with_header(*lines))
    assert spec is None
    assert [p.code for p in problems] == [code]
    assert problems[0].line == 2
    assert problems[0].expected and problems[0].fix


def test_missing_image_and_disallowed_registries() -> None:
    assert codes(with_header(image="")) == ["missing-image"]
    assert codes(with_header(image="#K8S_IMAGE=evil.example.com/miner:1")) == ["registry-not-allowed"]
    assert codes(with_header(image="#K8S_IMAGE=someone/pytorch:2")) == ["registry-not-allowed"]
    assert codes(with_header(image="#K8S_IMAGE=ubuntu:24.04")) == []  # docker.io/library/ubuntu
    assert codes(with_header(image="#K8S_IMAGE=Not An Image")) == ["bad-image"]
    assert codes(with_header(image="#K8S_IMAGE=registry.lab.evil.com/x:1")) == ["registry-not-allowed"]


def test_did_you_mean_for_misspelt_directives() -> None:
    _spec, problems = parse(with_header("#K8S_RESULT=/workspace/out"))
    assert problems[0].fix == "did you mean #K8S_RESULTS?"


def test_text_level_problems() -> None:
    assert codes(GOOD.replace("\n", "\r\n")) == ["crlf"]
    assert codes(GOOD.removeprefix("#!/bin/bash\n")) == ["no-shebang"]
    assert codes("") == ["empty"]
    assert codes(GOOD + "\x00") == ["binary"]


def test_directives_after_the_first_command_are_errors() -> None:
    _spec, problems = parse(GOOD + "#SBATCH --mem=1G\n#K8S_SHM=1Gi\n")
    assert [(p.line, p.code) for p in problems] == [(16, "directive-after-command"), (17, "directive-after-command")]


def test_paths_inside_the_owner_area_are_fine() -> None:
    assert codes(with_header("#SBATCH --output=/home/alice/logs/%j.out", "#SBATCH --chdir=/mnt/nas/home/alice/x",
                             "#SBATCH --error=/dev/null", "#SBATCH --export=NONE")) == []
    assert codes(with_header("#SBATCH --output=/home/alicebob/x")) == ["path-escape"]


def test_read_only_volume_asked_read_write_is_a_warning_not_an_error() -> None:
    spec, problems = parse(with_header("#K8S_MOUNT=datasets:/data:rw", "#K8S_MOUNT=scratch:/scratch:rw"))
    assert spec is not None
    assert [(p.code, p.severity) for p in problems] == [("read-only-volume", "warning")]
    assert [m.read_only for m in spec.mounts] == [True, False]


def test_report_names_lines_expectations_and_fixes() -> None:
    _spec, problems = parse(with_header("#SBATCH --uid=0", "#K8S_IMGAE=x"))
    report = render_report(problems, file_name="job.sh")
    assert report.startswith("job.sh was not submitted: 2 problems found.")
    assert "line 2: error: --uid is not allowed" in report
    assert "expected:" in report and "fix:" in report


def test_image_normalisation_matches_the_runtime() -> None:
    assert normalize_image("ubuntu") == "docker.io/library/ubuntu"
    assert normalize_image("user/app:1") == "docker.io/user/app:1"
    assert normalize_image("index.docker.io/library/x") == "docker.io/library/x"
    assert normalize_image("localhost/x") == "localhost/x"


header_lines = st.one_of(
    st.text(max_size=60),
    st.builds(lambda k, v: f"#K8S_{k}={v}", st.sampled_from(["IMAGE", "ENV", "MOUNT", "SHM", "RESULTS", "WORKDIR", "X"]),
              st.text(max_size=40)),
    st.builds(lambda o, v: f"#SBATCH --{o}={v}", st.sampled_from(["mem", "time", "gres", "array", "cpus-per-task",
                                                                  "gpus", "nodes", "output", "chdir", "mem-per-gpu"]),
              st.text(max_size=20)),
    st.builds(lambda w: "#SBATCH " + w, st.text(max_size=40)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(header_lines, max_size=12), st.booleans())
def test_fuzzed_headers_never_raise_and_always_explain(lines: list[str], shebang: bool) -> None:
    text = ("#!/bin/bash\n" if shebang else "") + "\n".join(lines) + "\necho done\n"
    spec, problems = parse(text)
    assert spec is not None or any(p.severity == "error" for p in problems)
    assert all(p.code != "internal" for p in problems), problems
    for problem in problems:
        assert problem.message and problem.expected and problem.fix


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_raises(text: str) -> None:
    spec, problems = parse(text)
    assert spec is not None or problems
    assert all(p.code != "internal" for p in problems), problems
