"""Where the launcher line goes, and that the Pod gets the user's script back unchanged."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.jobfile.launcher import (
    LAUNCHER_MARKER,
    SHELL_INTERPRETER,
    has_launcher,
    header_end,
    insert_launcher,
    launcher_line,
    render_job_submit_lua,
    strip_launcher,
)
from bridge.settings import PolicySettings

SKB = Path("/opt/slurm-k8s-bridge/bin/skbridge")
SCRIPT = """#!/bin/bash
#SBATCH --mem=1G

# a comment in the header
#K8S_IMAGE=registry.lab:5000/x:1
python train.py
#SBATCH --ignored-by-slurm
echo done
"""


def test_launcher_goes_right_after_the_header() -> None:
    lines = insert_launcher(SCRIPT, SKB).split("\n")
    at = next(i for i, line in enumerate(lines) if LAUNCHER_MARKER in line)
    assert lines[at] == f"exec /opt/slurm-k8s-bridge/bin/skbridge attach  {LAUNCHER_MARKER}"
    assert lines[at + 1] == "python train.py"
    assert lines[at - 1] == "#K8S_IMAGE=registry.lab:5000/x:1"


def test_insertion_is_idempotent_and_reversible() -> None:
    once = insert_launcher(SCRIPT, SKB)
    assert insert_launcher(once, SKB) == once
    assert has_launcher(once) and not has_launcher(SCRIPT)
    assert strip_launcher(once) == SCRIPT


def test_header_only_script_keeps_its_final_newline() -> None:
    text = "#!/bin/bash\n#K8S_IMAGE=r/x:1\n"
    inserted = insert_launcher(text, SKB)
    assert inserted.endswith(f"{LAUNCHER_MARKER}\n")
    assert strip_launcher(inserted) == text


def test_paths_with_spaces_are_quoted() -> None:
    inserted = insert_launcher(SCRIPT, Path("/opt/my tools/skbridge"))
    assert "exec '/opt/my tools/skbridge' attach" in inserted


# -- issue 11 item 4: a user's line ending with the marker never stands in for the launcher ------

SPOOFS = [
    f"hostname > /tmp/pwned  {LAUNCHER_MARKER}",
    f"exec /bin/true  {LAUNCHER_MARKER}",
    f"exec /home/alice/evil attach  {LAUNCHER_MARKER}",                      # the generated form, another path
    f"exec /opt/slurm-k8s-bridge/bin/skbridge attach  {LAUNCHER_MARKER}  ",  # trailing spaces
    f"  exec /opt/slurm-k8s-bridge/bin/skbridge attach  {LAUNCHER_MARKER}",  # indented
    f"exec /opt/slurm-k8s-bridge/bin/skbridge attach; id  {LAUNCHER_MARKER}",
]


def _spoofed(line: str) -> str:
    return f"#!/bin/bash\n#SBATCH --mem=1G\n#K8S_IMAGE=registry.lab:5000/x:1\n{line}\necho after\n"


@pytest.mark.parametrize("line", SPOOFS)
def test_a_users_line_ending_with_the_marker_gets_the_launcher_in_front(line: str) -> None:
    text = _spoofed(line)
    assert not has_launcher(text, SKB)
    inserted = insert_launcher(text, SKB)
    lines = inserted.split("\n")
    assert lines[header_end(lines)] == launcher_line(SKB)  # the first line bash runs
    assert lines[header_end(lines) + 1] == line
    assert has_launcher(inserted, SKB)
    assert strip_launcher(inserted) == strip_launcher(inserted, SKB) == text
    assert strip_launcher(text, SKB) == text  # nothing of the user's is ever stripped


def test_the_exact_line_at_the_exact_place_is_kept_once() -> None:
    text = _spoofed(launcher_line(SKB))
    assert has_launcher(text, SKB) and insert_launcher(text, SKB) == text
    elsewhere = "#!/bin/bash\n#K8S_IMAGE=r/x:1\necho first\n" + launcher_line(SKB) + "\n"
    assert not has_launcher(elsewhere)
    assert insert_launcher(elsewhere, SKB).split("\n")[2] == launcher_line(SKB)
    assert strip_launcher(elsewhere) == elsewhere


def test_header_end_is_bashs_first_command() -> None:
    assert header_end(["#!/bin/bash", "  # c", "\t", "", "\v#x", "echo"]) == 4  # \v is no blank to bash
    assert header_end(["#!/bin/bash", "#SBATCH --mem=1G"]) == 2


SHEBANGS = ["#!/bin/bash", "#! /bin/bash", "#!/bin/bash -e", "#!/bin/sh -eux", "#!/usr/bin/env bash", "#!/bin/bash  ",
            "#!/usr/bin/bash", "#!/bin/bash -l", "#!/bin/bash -i", "#!/bin/bash -e -x", "#!/usr/bin/env -S sh -c 'id'",
            "#!/usr/bin/awk -f", "#!/usr/bin/perl", "#!/usr/bin/env python3", "#!/bin/bash --rcfile x", "#!/bin/bashx",
            "#!/usr/bin/env bash -e", "#!/bin/sh\t", "#!\t/bin/sh"]
LUA = shutil.which("lua5.1")  # the Lua slurmctld 22.05 embeds
HARNESS = """
slurm = {SUCCESS = 0, ERROR = -1, log_info = function(...) end, log_user = function(...) end}
dofile(arg[1])
local f = io.open(arg[2], "rb"); local script = f:read("*a"); f:close()
local job = {script = script, environment = nil}
if slurm_job_submit(job, {}, 1501) == 0 then io.write(job.script) else io.write("REFUSED") end
"""


@pytest.mark.skipif(LUA is None, reason="lua5.1 is not installed (apt-get install lua5.1)")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(SHEBANGS), st.lists(st.sampled_from([
    "#SBATCH --mem=1G", "#K8S_IMAGE=registry.lab:5000/x:1", "", " ", "\t# c", "# comment", "\v#x", "echo hi",
    "python train.py", *SPOOFS, launcher_line(SKB), launcher_line(Path("/opt/my tools/skbridge")),
]), max_size=8), st.booleans(), st.sampled_from([None, Path("/etc/skb/config.yaml"), Path("/etc/it's.yaml")]))
def test_job_submit_lua_inserts_exactly_what_the_watcher_inserts(tmp_path: Path, shebang: str, body: list[str],
                                                                 newline: bool, config: Path | None) -> None:
    text = "\n".join([shebang, "#K8S_IMAGE=registry.lab:5000/x:1", *body]) + ("\n" if newline else "")
    template = (Path(__file__).parents[2] / "deploy/slurm/job_submit.lua").read_text()
    plugin = tmp_path / "job_submit.lua"
    plugin.write_text(render_job_submit_lua(template, SKB, config))
    (tmp_path / "harness.lua").write_text(HARNESS)
    (tmp_path / "script").write_text(text)
    assert LUA is not None
    out = subprocess.run([LUA, str(tmp_path / "harness.lua"), str(plugin), str(tmp_path / "script")],
                         capture_output=True, check=True)
    expected = insert_launcher(text, SKB, config) if SHELL_INTERPRETER.match(shebang) else "REFUSED"
    assert out.stdout.decode() == expected


LIMITS_HARNESS = """
slurm = {SUCCESS = 0, ERROR = -1, log_info = function(...) end, log_user = function(f, ...) io.write(f) end}
dofile(arg[1])
local job = %s
job.script = "#!/bin/bash\\n#K8S_IMAGE=registry.lab:5000/x:1\\necho hi\\n"
if slurm_job_submit(job, {}, 1501) == 0 then io.write("ACCEPTED") end
"""
NO_VAL, INFINITE = 4294967294, 4294967295


@pytest.mark.skipif(LUA is None, reason="lua5.1 is not installed (apt-get install lua5.1)")
@pytest.mark.parametrize(("fields", "accepted"), [
    ("{}", True),
    (f"{{time_limit = {NO_VAL}, num_tasks = {NO_VAL}, cpus_per_task = 65534, min_cpus = 1}}", True),
    ("{time_limit = 60, min_mem_per_node = 8192, tres_per_node = 'gres:gpu:a100:2', array_inx = '0-9%2'}", True),
    ("{time_limit = 0}", False),                       # --time=0: no limit at all
    (f"{{time_limit = {INFINITE}}}", False),
    ("{time_limit = 121}", False),
    ("{min_mem_per_node = 0}", False),                 # --mem=0: the whole node
    ("{min_mem_per_cpu = 3000, min_cpus = 4}", False),  # 12000 MiB
    ("{min_mem_per_cpu = 2000, min_cpus = 4}", True),
    ("{tres_per_task = 'gres:gpu:2', num_tasks = 3}", False),
    ("{tres_per_job = 'gres:gpu:5'}", False),
    ("{tres_per_node = 'gres:gpu:a100'}", True),
    ("{tres_per_socket = 'gres:gpu:1'}", False),
    ("{mem_per_tres = 'gres:gpu:5001', tres_per_job = 'gres:gpu:2'}", False),
    ("{array_inx = '0-10'}", False),
    ("{array_inx = '0-9,0-9%1'}", True),
    ("{shared = 0}", False),                           # --exclusive
    ("{min_cpus = 9}", False),
    ("{num_tasks = 3, cpus_per_task = 3}", False),
    ("{ntasks_per_node = 3, cpus_per_task = 3}", False),
    (f"{{ntasks_per_node = 65534, num_tasks = {NO_VAL}, pn_min_cpus = 65534, cpus_per_task = 2}}", True),
    ("{min_nodes = 2}", False),
])
def test_job_submit_lua_enforces_the_site_maxima_on_the_whole_job(tmp_path: Path, fields: str, accepted: bool) -> None:
    policy = PolicySettings(max_time_minutes=120, max_mem_mib=10000, max_gpus=4, max_cpus_per_task=8,
                            max_array_tasks=10, max_nodes=1)
    template = (Path(__file__).parents[2] / "deploy/slurm/job_submit.lua").read_text()
    plugin = tmp_path / "job_submit.lua"
    plugin.write_text(render_job_submit_lua(template, SKB, None, policy))
    (tmp_path / "harness.lua").write_text(LIMITS_HARNESS % fields)
    assert LUA is not None
    out = subprocess.run([LUA, str(tmp_path / "harness.lua"), str(plugin)], capture_output=True, text=True, check=True)
    assert out.stdout.endswith("ACCEPTED") == accepted, out.stdout
    assert accepted or "more than the site allows" in out.stdout


MODIFY_HARNESS = """
slurm = {SUCCESS = 0, ERROR = -1, log_info = function(...) end, log_user = function(...) end}
dofile(arg[1])
io.write(slurm_job_modify(%s, {admin_comment = %s}, {}, %d) == 0 and "ACCEPTED" or "REFUSED")
"""


@pytest.mark.skipif(LUA is None, reason="lua5.1 is not installed (apt-get install lua5.1)")
@pytest.mark.parametrize(("request_fields", "mark", "uid", "accepted"), [
    ("{min_mem_per_node = 0}", "'skbridge'", 1501, False),          # scontrol update MinMemoryNode=0
    ("{tres_per_node = 'gres:gpu:4'}", "'skbridge'", 1501, False),  # Gres=gpu:4
    ("{min_cpus = 16}", "'skbridge rejected: x'", 1501, False),     # NumCPUs=16
    ("{time_limit = 0}", "'skbridge'", 1501, False),
    ("{time_limit = 30}", "'skbridge'", 1501, True),                # a shorter limit is fine
    (f"{{time_limit = {NO_VAL}, min_cpus = {NO_VAL}, cpus_per_task = 65534, name = 'x'}}", "'skbridge'", 1501, True),
    ("{min_mem_per_node = 0}", "nil", 1501, True),                  # not a bridge job
    ("{min_mem_per_node = 0}", "'skbridge'", 0, True),              # root
])
def test_job_submit_lua_keeps_a_bridge_jobs_resources_as_submitted(tmp_path: Path, request_fields: str, mark: str,
                                                                   uid: int, accepted: bool) -> None:
    template = (Path(__file__).parents[2] / "deploy/slurm/job_submit.lua").read_text()
    plugin = tmp_path / "job_submit.lua"
    plugin.write_text(render_job_submit_lua(template, SKB, None, PolicySettings(max_time_minutes=120)))
    (tmp_path / "harness.lua").write_text(MODIFY_HARNESS % (request_fields, mark, uid))
    assert LUA is not None
    out = subprocess.run([LUA, str(tmp_path / "harness.lua"), str(plugin)], capture_output=True, text=True, check=True)
    assert out.stdout == ("ACCEPTED" if accepted else "REFUSED")
