"""Issue 11 item 3: the validator reads #SBATCH exactly as the real sbatch does.

Differential test: skbalice submits tricky headers held (`--hold`) to the sandbox's real
sbatch 22.05; what slurmctld recorded (squeue --json) is compared with the validator's
reading, then the job is cancelled. A header the validator accepts must be recorded with
the same values; a trick sbatch honours must be refused by the validator.
"""

from __future__ import annotations

import json
import pwd
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.jobfile import sbatch_values as values
from bridge.jobfile.spec import JobSpec, parse_job_text
from bridge.settings import NasSettings, PolicySettings
from tests.conftest import Sandbox
from tests.unit.test_sbatch_grammar import SEPARATORS, _prefixes, _quoted

# Small maxima, so over-limit requests still fit the sandbox node (16 CPUs, 64G, 4 GPUs)
# and sbatch accepts them: the comparison then shows what the validator refused.
POLICY = PolicySettings(allowed_registries=["registry.lab:5000"], max_cpus_per_task=8, max_mem_mib=8192,
                        max_gpus=2, max_time_minutes=60, max_array_tasks=4)
NAS = NasSettings(root=Path("/mnt/nas"))
USER = "skbalice"


@dataclass
class Outcome:
    """What sbatch and slurmctld made of a header, and what the validator made of it."""

    record: dict[str, Any] | None  # squeue --json's job; None when sbatch refused the script
    sbatch_error: str
    spec: JobSpec | None
    codes: list[str]

    def tres(self, key: str) -> int | None:
        assert self.record is not None
        items = dict(item.split("=", 1) for item in self.record["tres_req_str"].split(",") if "=" in item)
        return values.mbytes(items[key]) if key in items else None  # counts carry no unit; memory is in M/G/T


@pytest.fixture
def submit(sandbox: Sandbox, users: dict[str, pwd.struct_passwd], tmp_job_dir: Path) -> Any:
    submitted: list[str] = []

    def run(*header: str) -> Outcome:
        text = "\n".join(["#!/bin/bash", *header, "#K8S_IMAGE=registry.lab:5000/x:1", "echo hello", ""])
        script = tmp_job_dir / f"{uuid.uuid4().hex[:8]}.sh"
        # sbatch gets the same header without #K8S_IMAGE (a comment in its place, so lines keep
        # their numbers), submitted by root: under the one-road policy job_submit.lua leaves
        # root's own plain jobs on the host, so what slurmctld records is sbatch's reading of
        # the header alone, not the plugin's refusal of it.
        script.write_text(text.replace("#K8S_IMAGE=", "# K8S image left out: ", 1), encoding="utf-8")
        script.chmod(0o644)
        spec, problems = parse_job_text(text, POLICY, NAS, owner=USER, owner_home=tmp_job_dir)
        codes = [p.code for p in problems if p.severity == "error"]
        out = sandbox.slurm("sbatch", "--hold", "--parsable", "--output=/dev/null", f"--chdir={tmp_job_dir}",
                            str(script), check=False)
        if out.returncode != 0:
            return Outcome(None, out.stderr, spec, codes)
        job_id = out.stdout.strip().split(";")[0]
        submitted.append(job_id)
        listing = json.loads(sandbox.slurm("squeue", "--json", "--jobs", job_id).stdout)
        record = next(job for job in listing["jobs"] if str(job["job_id"]) == job_id)
        return Outcome(record, "", spec, codes)

    yield run
    if submitted:
        sandbox.slurm("scancel", *submitted, check=False)


ACCEPTED = [
    ("#SBATCH--time=1:30", "#SLURM --mem=1500K"),                      # no space; #SLURM; units as Slurm rounds them
    ("#SBATCH\v-J\f\"a b\"#not a comment word", "#SBATCH\t--mem=1G\r--time=5"),  # C isspace; # ends a word
    ("#SBATCH --job-name", "#SBATCH --comment=forged", "#SBATCH --mem=2G"),  # the value comes from the next line
    ("#SBATCH --jo'b-n'ame=x\\#y --time-m=\"5\"",),                     # quotes and escapes inside words; prefix
    ("#SBATCH --array=0-3,1-2%1 -n 2 --gpus-per-t=1",),                 # array ids deduplicated; GPUs per task
    ("#SBATCH --gres=gpu:a100:2 --time=0-1",),
    ("#SBATCH -n2 -c4 --mem-per-cpu=1G",),
    ("#SBATCH \"\" --comment=forged", "#SBATCH --time=7"),              # an empty word ends the line
    ("#SBATCH --time=10 # --comment=forged --time=UNLIMITED",),
]


@pytest.mark.parametrize("header", ACCEPTED)
def test_headers_the_validator_accepts_are_recorded_as_it_read_them(submit: Any, header: tuple[str, ...]) -> None:
    outcome = submit(*header)
    assert outcome.codes == []
    record = outcome.record
    assert record is not None, outcome.sbatch_error
    spec = outcome.spec
    assert spec is not None
    name = spec.option("job-name")
    assert record["name"] == (name if name is not None else Path(record["command"]).name)
    if spec.time_limit_minutes is not None:
        assert record["time_limit"] == spec.time_limit_minutes
    if spec.option("time-min") is not None:
        assert record["time_minimum"] == values.time_minutes(spec.option("time-min") or "")
    if spec.option("mem") is not None:
        assert record["memory_per_node"] == spec.mem_mib
    if spec.option("mem-per-cpu") is not None:
        assert record["memory_per_cpu"] * (outcome.tres("cpu") or 1) == spec.mem_mib
    if spec.gpus is not None:
        assert outcome.tres("gres/gpu") == spec.gpus
    if spec.array_tasks is not None:
        assert values.array_tasks(record["array_task_string"]) == spec.array_tasks
    assert not record["comment"], "a --comment the validator did not see reached slurmctld"


# (header, what slurmctld records when sbatch honours the trick)
TRICKS: list[tuple[tuple[str, ...], str]] = [
    (("#SBATCH--comment=forged",), "comment"),
    (("#SLURM --comment=forged",), "comment"),
    (("#SBATCH\v--comment=forged",), "comment"),
    (("#SBATCH --comm=forged",), "comment"),
    (("#SBATCH --mem=1G\f--comment=forged",), "comment"),
    (("#SBATCH --co\"mment\"=forged",), "comment"),
    (("#SBATCH--mem=9G",), "memory"),
    (("#SLURM --mem=0",), "memory"),
    (("#SBATCH -n 4 --mem-per-cpu=3G",), "memory"),
    (("#SBATCH -n 2 --gpus-per-task=2",), "gpus"),
    (("#SBATCH\t-G 3",), "gpus"),
    (("#SBATCH --gpus-per-node=3",), "gpus"),
    (("#SBATCH --time=0",), "time"),
    (("#SBATCH --time=UNLIMITED",), "time"),
    (("#SBATCH --time=1:01:00",), "time"),
    (("#SBATCH --array=0-4",), "array"),
    (("#SBATCH --array", "#SBATCH 0-9:2"), "array"),
    (("#SBATCH --exclusive",), "exclusive"),
    (("#SBATCH -n 4 -c 4",), "cpus"),
]


@pytest.mark.parametrize(("header", "honoured"), TRICKS)
def test_tricks_sbatch_honours_are_refused(submit: Any, header: tuple[str, ...], honoured: str) -> None:
    outcome = submit(*header)
    assert outcome.spec is None and outcome.codes, f"the validator accepted {header}"
    record = outcome.record
    assert record is not None, f"sbatch refused {header}: {outcome.sbatch_error}"
    if honoured == "comment":
        assert record["comment"] == "forged"
        assert "forbidden-option" in outcome.codes
        return
    assert "over-limit" in outcome.codes or "forbidden-option" in outcome.codes, outcome.codes
    if honoured == "memory":
        assert (outcome.tres("mem") or 0) > POLICY.max_mem_mib, record["tres_req_str"]  # --mem=0: the whole node
    elif honoured == "gpus":
        assert (outcome.tres("gres/gpu") or 0) > POLICY.max_gpus
    elif honoured == "time":
        limit = record["time_limit"]
        assert not isinstance(limit, int) or limit == 0 or limit > POLICY.max_time_minutes, limit
    elif honoured == "array":
        assert (values.array_tasks(record["array_task_string"]) or 0) > POLICY.max_array_tasks
    elif honoured == "exclusive":
        assert record["shared"] in ("exclusive", "none", "0", 0) or "EXCLUSIVE" in str(record["shared"]).upper()
    elif honoured == "cpus":
        assert (outcome.tres("cpu") or 0) > POLICY.max_cpus_per_task


@pytest.mark.parametrize("line", ["#SBATCH --wai", "#SBATCH --mem=1G junk", "#SBATCH --ntasks-per=2",
                                  "#SBATCH --job-name='x", "#SBATCH -c=4", "#SBATCH --WAIT"])
def test_lines_sbatch_rejects_are_refused_too(submit: Any, line: str) -> None:
    outcome = submit(line)
    assert outcome.record is None, f"sbatch accepted {line!r}"
    assert outcome.spec is None and outcome.codes


def test_wait_without_a_space_is_honoured_by_sbatch_and_refused(sandbox: Sandbox, users: dict[str, pwd.struct_passwd],
                                                               tmp_job_dir: Path) -> None:
    name = f"skbdiff-{uuid.uuid4().hex[:8]}"
    text = "#!/bin/bash\n#SBATCH--wait\n#K8S_IMAGE=registry.lab:5000/x:1\necho hi\n"
    script = tmp_job_dir / "wait.sh"
    script.write_text(text, encoding="utf-8")
    spec, problems = parse_job_text(text, POLICY, NAS, owner=USER, owner_home=tmp_job_dir)
    assert spec is None and "forbidden-option" in [p.code for p in problems]
    try:
        # A held job never ends: an sbatch that honours --wait is still waiting when this times out.
        subprocess.run(["runuser", "-u", USER, "--", "sbatch", "--hold", f"--job-name={name}", "--output=/dev/null",
                        f"--chdir={tmp_job_dir}", str(script)], env=sandbox.env, capture_output=True, timeout=5,
                       check=True)
        waited = False
    except subprocess.TimeoutExpired:
        waited = True
    finally:
        ids = sandbox.slurm("squeue", "-h", "-n", name, "-o", "%A", check=False).stdout.split()
        if ids:
            sandbox.slurm("scancel", *ids, check=False)
    assert waited, "sbatch did not wait: #SBATCH--wait was not read as --wait"
    assert ids


# -- property: random spellings of allowed options, read back from slurmctld ---------------------

NAME_TEXT = st.text(alphabet="abcXYZ019 #'\"\\=:,-_./@%", min_size=1, max_size=12).filter(
    lambda v: v.strip(" ") == v and not v.lower().startswith(("hetjob", "packjob")))
TIMES = st.sampled_from(["5", "1:30", "0:59", "1:00:00", "0-1", "0-0:45", "0-0:30:01", "59"])
SIZES = st.sampled_from(["1", "1500K", "512M", "1G", "2gb", "8192", "3m", "7G"])


@st.composite
def _spelled(draw: st.DrawFn, name: str, value: str) -> list[str]:
    spelling = draw(st.sampled_from(_prefixes(name)))
    rendered = _quoted(value, draw(st.sampled_from("\"'")))
    if draw(st.booleans()):
        return [f"--{spelling}={rendered}"]
    return [f"--{spelling}", rendered]


@st.composite
def _header(draw: st.DrawFn) -> tuple[list[str], dict[str, str]]:
    chosen = {"job-name": draw(NAME_TEXT), "time": draw(TIMES), "mem": draw(SIZES)}
    words = [w for name in draw(st.permutations(sorted(chosen))) for w in draw(_spelled(name, chosen[name]))]
    lines, at = [], 0
    while at < len(words):
        take = draw(st.integers(1, len(words) - at))
        magic = draw(st.sampled_from(["#SBATCH", "#SLURM"]))
        gap = draw(st.one_of(st.just(""), SEPARATORS))
        lines.append(magic + gap + "".join(w + draw(SEPARATORS) for w in words[at:at + take])
                     + draw(st.sampled_from(["", "#c", " # --comment=forged"])))
        at += take
    return lines, chosen


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(_header())
def test_random_spellings_are_recorded_as_the_validator_reads_them(
        submit: Any, case: tuple[list[str], dict[str, str]]) -> None:
    lines, chosen = case
    outcome = submit(*lines)
    if outcome.codes == ["crlf"]:  # a line ending in \r: sbatch refuses DOS line breaks too
        assert outcome.record is None, lines
        return
    assert outcome.codes == [], (lines, outcome.codes)
    record, spec = outcome.record, outcome.spec
    assert record is not None and spec is not None, (lines, outcome.sbatch_error)
    assert record["name"] == chosen["job-name"] == spec.option("job-name")
    assert record["time_limit"] == values.time_minutes(chosen["time"]) == spec.time_limit_minutes
    assert record["memory_per_node"] == values.mbytes(chosen["mem"]) == spec.mem_mib
    assert not record["comment"]


# -- the command line and SBATCH_* variables are spellings too: job_submit.lua checks the job ------

@pytest.mark.parametrize(("args", "variables"), [
    (("--time=0",), {}), (("--time=UNLIMITED",), {}), (("--mem=0",), {}), (("--exclusive",), {}),
    (("--array=0-500",), {}), ((), {"SBATCH_TIMELIMIT": "0"}), ((), {"SBATCH_MEM_PER_NODE": "0"}),
    ((), {"SBATCH_EXCLUSIVE": "user"}),
])
def test_site_maxima_hold_for_options_given_to_sbatch_itself(sandbox: Sandbox, users: dict[str, pwd.struct_passwd],
                                                            tmp_job_dir: Path, args: tuple[str, ...],
                                                            variables: dict[str, str]) -> None:
    script = tmp_job_dir / "cli.sh"
    script.write_text("#!/bin/bash\n#SBATCH --time=10\n#K8S_IMAGE=registry.lab:5000/x:1\necho hi\n", encoding="utf-8")
    script.chmod(0o644)
    out = sandbox.slurm("env", *(f"{k}={v}" for k, v in variables.items()), "sbatch", "--hold", "--parsable",
                        "--output=/dev/null", f"--chdir={tmp_job_dir}", *args, str(script), user=USER, check=False)
    if out.returncode == 0:
        sandbox.slurm("scancel", out.stdout.strip().split(";")[0], check=False)
    assert out.returncode != 0 and "more than the site allows" in out.stderr, out


def test_a_job_within_the_maxima_is_still_accepted_with_options_on_the_command_line(
        sandbox: Sandbox, users: dict[str, pwd.struct_passwd], tmp_job_dir: Path) -> None:
    script = tmp_job_dir / "ok.sh"
    script.write_text("#!/bin/bash\n#K8S_IMAGE=registry.lab:5000/x:1\necho hi\n", encoding="utf-8")
    script.chmod(0o644)
    out = sandbox.slurm("sbatch", "--hold", "--parsable", "--output=/dev/null", f"--chdir={tmp_job_dir}",
                        "--time=60", "--mem=2G", "--gres=gpu:a100:2", "-n", "2", "--array=0-3", str(script),
                        user=USER, check=False)
    assert out.returncode == 0, out.stderr
    sandbox.slurm("scancel", out.stdout.strip().split(";")[0], check=False)


@pytest.mark.parametrize("update", ["MinMemoryNode=0", "Gres=gpu:4", "NumCPUs=16", "TimeLimit=0"])
def test_a_pending_bridge_job_cannot_be_updated_past_the_maxima(sandbox: Sandbox, users: dict[str, pwd.struct_passwd],
                                                                tmp_job_dir: Path, update: str) -> None:
    script = tmp_job_dir / "held.sh"
    script.write_text("#!/bin/bash\n#SBATCH --mem=1G --time=10\n#K8S_IMAGE=registry.lab:5000/x:1\necho hi\n",
                      encoding="utf-8")
    script.chmod(0o644)
    out = sandbox.slurm("sbatch", "--hold", "--parsable", "--output=/dev/null", f"--chdir={tmp_job_dir}", str(script),
                        user=USER)
    job_id = out.stdout.strip().split(";")[0]
    try:
        before = sandbox.slurm("scontrol", "show", "job", job_id).stdout
        refused = sandbox.slurm("scontrol", "update", f"JobId={job_id}", update, user=USER, check=False)
        assert refused.returncode != 0, refused
        after = sandbox.slurm("scontrol", "show", "job", job_id).stdout
        field = {"MinMemoryNode": "MinMemoryNode=", "Gres": "TRES=", "NumCPUs": "TRES=", "TimeLimit": "TimeLimit="}
        key = field[update.split("=", maxsplit=1)[0]]
        assert [w for w in after.split() if w.startswith(key)] == [w for w in before.split() if w.startswith(key)]
        shorter = sandbox.slurm("scontrol", "update", f"JobId={job_id}", "TimeLimit=5", user=USER, check=False)
        assert shorter.returncode == 0, shorter.stderr
    finally:
        sandbox.slurm("scancel", job_id, check=False)
