"""One road: bridge.jobfile.routing and job_submit.lua decide the same for every kind of job."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.jobfile.launcher import LAUNCHER_MARKER, render_job_submit_lua
from bridge.jobfile.routing import route
from bridge.settings import PolicySettings

LUA = shutil.which("lua5.1")
HARNESS = """
slurm = {SUCCESS = 0, ERROR = -1, log_info = function(...) end, log_user = function(...) end,
         log_error = function(...) end}
dofile(arg[1])
local job = {account = arg[3] ~= "" and arg[3] or nil, partition = arg[4] ~= "" and arg[4] or nil}
if arg[2] ~= "" then
  local f = io.open(arg[2], "rb"); job.script = f:read("*a"); f:close()
end
if slurm_job_submit(job, {}, tonumber(arg[5])) ~= 0 then io.write("refused")
elseif job.script ~= nil and job.script:find(MARKER_TEXT, 1, true) then io.write("pod")
else io.write("host") end
"""
POLICIES = {
    "refuse": PolicySettings(),
    "default-image": PolicySettings(default_image="registry.lab:5000/job:1"),
    "host-account": PolicySettings(host_accounts=["ops"]),
    "host-partition": PolicySettings(host_partitions=["maint"], default_image="registry.lab:5000/job:1"),
}
CASES = [  # image?, batch?, account, partition, uid
    (True, True, None, None, 1501), (False, True, None, None, 1501), (False, False, None, None, 1501),
    (False, True, "ops", None, 1501), (False, False, "ops", None, 1501), (True, True, "ops", None, 1501),
    (False, True, None, "maint", 1501), (False, True, None, "gpu,maint", 1501), (False, True, None, "gpu", 1501),
    (False, False, None, "maint", 1501), (False, True, None, None, 0), (False, False, None, None, 0),
]


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
@pytest.mark.parametrize(("image", "batch", "account", "partition", "uid"), CASES)
def test_python_and_lua_take_the_same_road(tmp_path: Path, policy_name: str, image: bool, batch: bool,
                                           account: str | None, partition: str | None, uid: int) -> None:
    assert LUA is not None, "lua5.1 is required (apt-get install lua5.1; .ci/run installs it)"
    policy = POLICIES[policy_name]
    expected = route(image="registry.lab:5000/x:1" if image else None, batch=batch, account=account,
                     partitions=(partition or "").split(","), uid=uid, policy=policy).road
    template = (Path(__file__).parents[2] / "deploy/slurm/job_submit.lua").read_text()
    plugin = tmp_path / "job_submit.lua"
    plugin.write_text(render_job_submit_lua(template, Path("/opt/slurm-k8s-bridge/bin/skbridge"), None, policy))
    (tmp_path / "harness.lua").write_text(HARNESS.replace("MARKER_TEXT", json.dumps(LAUNCHER_MARKER)))
    script = tmp_path / "script"
    script.write_text("#!/bin/bash\n" + ("#K8S_IMAGE=registry.lab:5000/x:1\n" if image else "") + "echo hi\n")
    out = subprocess.run([LUA, str(tmp_path / "harness.lua"), str(plugin), str(script) if batch else "",
                          account or "", partition or "", str(uid)], capture_output=True, text=True, check=True)
    assert out.stdout == expected, (policy_name, out.stdout, expected)
