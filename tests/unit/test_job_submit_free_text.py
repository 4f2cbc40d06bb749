"""job_submit.lua refuses a bridge job whose user-written fields could break `scontrol show job`
into extra lines (issue 11, item 1: defence in depth; the prolog refuses such a record too)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.jobfile.launcher import render_job_submit_lua

LUA = shutil.which("lua5.1")
HARNESS = """
slurm = {SUCCESS = 0, ERROR = -1, log_info = function(...) end, log_user = function(f, ...) io.write(f) end}
dofile(arg[1])
local job = {%s}
local verb = arg[2]
if verb == "submit" then
  job.script = "#!/bin/bash\\n#K8S_IMAGE=registry.lab:5000/x:1\\necho hi\\n"
  if slurm_job_submit(job, {}, 1501) == 0 then io.write("ACCEPTED") end
else
  if slurm_job_modify(job, {admin_comment = "skbridge"}, {}, 1501) == 0 then io.write("ACCEPTED") end
end
"""


@pytest.mark.parametrize("verb", ["submit", "modify"])
@pytest.mark.parametrize(("field", "value", "accepted"), [
    ("comment", "plain words, fine", True),
    ("name", "train-resnet 50", True),
    ("comment", "a\\nb", False),
    ("name", "a\\rb", False),
    ("std_out", "/home/a/out\\t.log", False),
    ("work_dir", "/home/a/\\028x", False),
    ("mail_user", "a\\194\\133b", False),       # U+0085 NEXT LINE in UTF-8
    ("comment", "a\\226\\128\\168b", False),   # U+2028 LINE SEPARATOR
    ("std_err", "a\\226\\128\\169b", False),   # U+2029 PARAGRAPH SEPARATOR
    ("comment", "caf\\195\\169", True),         # other UTF-8 is fine
])
def test_line_breaking_text_is_refused(tmp_path: Path, verb: str, field: str, value: str, accepted: bool) -> None:
    assert LUA is not None, "lua5.1 is required (apt-get install lua5.1; .ci/run installs it)"
    template = (Path(__file__).parents[2] / "deploy/slurm/job_submit.lua").read_text()
    plugin = tmp_path / "job_submit.lua"
    plugin.write_text(render_job_submit_lua(template, Path("/opt/slurm-k8s-bridge/bin/skbridge")))
    harness = tmp_path / "harness.lua"
    harness.write_text(HARNESS % f'{field} = "{value}"')
    out = subprocess.run([LUA, str(harness), str(plugin), verb], capture_output=True, text=True, check=True).stdout
    assert (out == "ACCEPTED") is accepted, out
    if not accepted:
        assert "one plain line" in out


FAIL_CLOSED = """
slurm = {SUCCESS = 0, ERROR = -1, log_info = function(...) end, log_user = function(f, ...) io.write(f) end,
         log_error = function(...) end}
dofile(arg[1])
local job = {script = "#!/bin/bash\\necho hi\\n", partition = {}}  -- a value the plugin cannot read
if slurm_job_submit(job, {}, 1501) == 0 then io.write("ACCEPTED") end
"""


def test_an_error_inside_the_plugin_refuses_the_job(tmp_path: Path) -> None:
    # slurmctld takes a job whose plugin raised as submitted, without the launcher: fail closed.
    assert LUA is not None, "lua5.1 is required (apt-get install lua5.1; .ci/run installs it)"
    template = (Path(__file__).parents[2] / "deploy/slurm/job_submit.lua").read_text()
    plugin = tmp_path / "job_submit.lua"
    plugin.write_text(render_job_submit_lua(template, Path("/opt/slurm-k8s-bridge/bin/skbridge")))
    harness = tmp_path / "harness.lua"
    harness.write_text(FAIL_CLOSED)
    out = subprocess.run([LUA, str(harness), str(plugin)], capture_output=True, text=True, check=True).stdout
    assert out != "ACCEPTED" and "was not submitted" in out, out
