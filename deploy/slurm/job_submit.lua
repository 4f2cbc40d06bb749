--[[
slurm-k8s-bridge: route a plain `sbatch job.sh` through the bridge.

For a batch script whose header carries `#K8S_IMAGE=` (or, when the site sets a default
image, any batch script, `sbatch --wrap` included), insert the launcher line right after the
header, exactly as the drop-folder watcher does (bridge/jobfile/launcher.py), so the batch
step runs `skbridge attach` and the script itself runs only in the Pod. A job without an
image and interactive allocations run on the bare host only for the site's host accounts
and partitions (policy.host_accounts, host_partitions) and root; otherwise they are refused
with the reason (bridge/jobfile/routing.py).

This runs inside slurmctld under its locks: string work only, no I/O, no commands.
Validation happens in the prolog, whose reasons reach the job's output file.
Install as job_submit.lua next to slurm.conf, with JobSubmitPlugins=lua.
--]]

-- install.sh (and the sandbox) rewrite these two lines: the installed skbridge, and the
-- config file `skbridge attach` reads ("" = its default, /etc/slurm-k8s-bridge/config.yaml).
local SKBRIDGE = "/opt/slurm-k8s-bridge/bin/skbridge"
local SKBRIDGE_CONFIG = ""
local MARKER = "# skbridge-launcher: this job runs in a Kubernetes Pod"
-- Marks a bridge job in a field only slurmctld's operators can write, so that a later
-- `scontrol update` of it can be recognised (Lua sees no batch script then).
local BRIDGE_JOB_MARK = "skbridge"
-- The site maxima (config `policy`), filled in like the two lines above; nil: not enforced here.
local POLICY = nil

-- Same result as Python's shlex.quote.
local function shell_quote(s)
	if s ~= "" and not s:find("[^%w_@%%+=:,./-]") then
		return s
	end
	return "'" .. s:gsub("'", "'\"'\"'") .. "'"
end

local function split_lines(text)
	local lines = {}
	for line in (text .. "\n"):gmatch("(.-)\n") do
		lines[#lines + 1] = line
	end
	return lines
end

local function is_bridge_job(lines)
	for _, line in ipairs(lines) do
		if line:sub(1, 11) == "#K8S_IMAGE=" then
			return true
		end
	end
	return false
end

-- Index of the first line bash would run: where the launcher line goes. A header line is
-- blank or starts with "#" after spaces and tabs (launcher.py header_end, the same rule).
local function header_end(lines)
	for index, line in ipairs(lines) do
		local lead = line:match("^[ \t]*(.*)$")
		if lead ~= "" and lead:sub(1, 1) ~= "#" then
			return index
		end
	end
	return #lines + 1
end

-- The interpreter lines for which the launcher line runs before anything of the user's
-- (launcher.py SHELL_INTERPRETER, the same set): bash or sh by path with at most one option
-- word of e, u, x, v letters, or /usr/bin/env bash|sh. Anything else could run the user's
-- text on the host (`env -S sh -c ...`, awk/perl programs, `bash -l` reading startup files).
local function shell_interpreter(first)
	local line = first:gsub("[ \t]+$", "")
	local rest = line:match("^#![ \t]*(.*)$")
	if rest == nil then
		return false
	end
	if rest == "/usr/bin/env bash" or rest == "/usr/bin/env sh" then
		return true
	end
	local path = rest:match("^(%S+) %-[euxv]+$")
	if path == nil then
		path = rest
	end
	return path == "/bin/bash" or path == "/usr/bin/bash" or path == "/bin/sh" or path == "/usr/bin/sh"
end

-- Variables that bash or the loader act on before the launcher line runs: with them a user
-- could run code on the bare host (BASH_ENV, SHELLOPTS=xtrace with PS4, a function named
-- exec, LD_PRELOAD, ...). The Pod's environment comes from #K8S_ENV, so they are emptied.
-- Slurm 22.05's Lua reads and sets variables by name only: this is a list, not a filter.
local HOST_STARTUP_VARIABLES = {
	"BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "BASH_XTRACEFD", "BASH_FUNC_exec%%", "BASH_FUNC_exec()",
	"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "GCONV_PATH", "LOCPATH",
}

local function neutralise_environment(job_desc)
	local env = job_desc.environment
	if env == nil then
		return
	end
	for _, name in ipairs(HOST_STARTUP_VARIABLES) do
		if env[name] ~= nil then
			env[name] = ""
		end
	end
end

-- Slurm's "not set" values as Lua sees them (doubles).
local NO_VAL = 4294967294
local NO_VAL16 = 65534

local function set(value, unset)
	return value ~= nil and value < unset
end

-- GPUs in a TRES list such as "gres:gpu:2,gres:gpu:a100:1" (or "gres/gpu..."); nil if unreadable.
local function tres_gpus(list)
	local total = 0
	if list == nil or list == "" then
		return 0
	end
	for item in (list .. ","):gmatch("([^,]*),") do
		local kind, rest = item:match("^gres[:/](%w+):?(.*)$")
		if kind == nil then
			return nil
		end
		if kind == "gpu" then
			local count = rest:match("(%d+)$")
			if rest == "" then
				count = "1"
			elseif rest:match("^[%a][%w_.-]*$") then
				count = "1"
			end
			if count == nil then
				return nil
			end
			total = total + tonumber(count)
		end
	end
	return total
end

-- Distinct ids of an --array list ("0-15:2,20%4"); nil if unreadable or beyond `cap`.
local function array_tasks(spec, cap)
	local ids, count = {}, 0
	spec = spec:gsub("%%%d+$", "")
	for part in (spec .. ","):gmatch("([^,]*),") do
		local low, high, step = part:match("^(%d+)%-(%d+):(%d+)$")
		if low == nil then
			low, high = part:match("^(%d+)%-(%d+)$")
			step = "1"
		end
		if low == nil then
			low = part:match("^(%d+)$")
			high, step = low, "1"
		end
		if low == nil or tonumber(step) < 1 or tonumber(high) < tonumber(low) then
			return nil
		end
		for id = tonumber(low), tonumber(high), tonumber(step) do
			if not ids[id] then
				ids[id] = true
				count = count + 1
				if count > cap then
					return count
				end
			end
		end
	end
	return count
end

-- Why the job asks for more than the site allows, or nil. This sees the job as slurmctld
-- will run it (script, environment and command line together), so options given to
-- `sbatch` itself cannot go around the validator's maxima.
local function over_limit(job_desc)
	local p = POLICY
	local t = job_desc.time_limit
	if t ~= nil and t ~= NO_VAL and (t == 0 or t > p.max_time_minutes) then
		return "a time limit of at most " .. p.max_time_minutes .. " minutes (0 and UNLIMITED mean none)"
	end
	-- One node: the tasks are --ntasks or --ntasks-per-node, whichever asks for more.
	local tasks = set(job_desc.num_tasks, NO_VAL) and job_desc.num_tasks or 1
	if set(job_desc.ntasks_per_node, NO_VAL16) then
		tasks = math.max(tasks, job_desc.ntasks_per_node)
	end
	local cpus = set(job_desc.min_cpus, NO_VAL) and job_desc.min_cpus or 1
	if set(job_desc.pn_min_cpus, NO_VAL16) then
		cpus = math.max(cpus, job_desc.pn_min_cpus)
	end
	local per_task = set(job_desc.cpus_per_task, NO_VAL16) and job_desc.cpus_per_task or 1
	cpus = math.max(cpus, tasks * per_task)
	if cpus > p.max_cpus then
		return "at most " .. p.max_cpus .. " CPUs"
	end
	if (set(job_desc.min_nodes, NO_VAL) and job_desc.min_nodes > p.max_nodes) or
		(set(job_desc.max_nodes, NO_VAL) and job_desc.max_nodes > p.max_nodes) then
		return "at most " .. p.max_nodes .. " node(s)"
	end
	local shared = job_desc.shared
	if shared == 0 or shared == 2 or shared == 3 then
		return "no --exclusive: it gives the job a whole node"
	end
	local per_job, per_node = tres_gpus(job_desc.tres_per_job), tres_gpus(job_desc.tres_per_node)
	local per_gpu_task = tres_gpus(job_desc.tres_per_task)
	if per_job == nil or per_node == nil or per_gpu_task == nil or
		(job_desc.tres_per_socket ~= nil and job_desc.tres_per_socket ~= "") then
		return "GPUs asked for as --gres=gpu:N, --gpus, --gpus-per-node or --gpus-per-task"
	end
	local gpus = math.max(per_job, per_node, per_gpu_task * tasks)
	if gpus > p.max_gpus then
		return "at most " .. p.max_gpus .. " GPUs"
	end
	local mem = job_desc.min_mem_per_node
	if mem == nil and job_desc.min_mem_per_cpu ~= nil then
		mem = job_desc.min_mem_per_cpu * cpus
	end
	local per_gpu = job_desc.mem_per_tres and job_desc.mem_per_tres:match("gpu:(%d+)$")
	if mem == nil and per_gpu ~= nil then
		mem = tonumber(per_gpu) * math.max(gpus, 1)
	end
	if mem ~= nil and (mem == 0 or mem > p.max_mem_mib) then
		return "at most " .. p.max_mem_mib .. " MiB of memory (0 means a whole node)"
	end
	local array = job_desc.array_inx
	if array ~= nil and array ~= "" then
		local count = array_tasks(array, p.max_array_tasks)
		if count == nil or count > p.max_array_tasks then
			return "at most " .. p.max_array_tasks .. " array tasks"
		end
	end
	return nil
end

-- Fields a user writes that `scontrol show job` prints on lines of their own. A line break
-- (or a character a parser may take for one: other controls, U+0085, U+2028, U+2029) in
-- them could make Slurm's record of the job read two ways; the prolog refuses such a job
-- anyway, and this says so at submission, where the user sees it at once.
local FREE_TEXT_FIELDS = {"name", "comment", "std_out", "std_err", "std_in", "work_dir", "mail_user"}

local function line_breaking(value)
	if type(value) ~= "string" then
		return false
	end
	return value:find("%c") ~= nil or value:find("\194\133", 1, true) ~= nil or
		value:find("\226\128\168", 1, true) ~= nil or value:find("\226\128\169", 1, true) ~= nil
end

local function line_breaking_field(job_desc)
	for _, name in ipairs(FREE_TEXT_FIELDS) do
		if line_breaking(job_desc[name]) then
			return name
		end
	end
	return nil
end

-- One road (bridge/jobfile/routing.py decides the same): a job without #K8S_IMAGE runs in a
-- Pod with the site's default image, or on the bare host only for the configured accounts
-- and partitions (and root's own jobs), or is refused with the reason. POLICY == nil is a
-- plugin nobody rendered: it leaves such jobs alone, as before.
local NO_IMAGE = "slurm-k8s-bridge: this job has no #K8S_IMAGE= line and this site runs every job in a " ..
	"Kubernetes Pod with an image it names: add #K8S_IMAGE=<registry>/<name>:<tag> below the #SBATCH lines " ..
	"(`skbridge init` writes a job file to start from)"
local INTERACTIVE = "slurm-k8s-bridge: interactive allocations (salloc, srun outside a batch job) would run " ..
	"on the bare host, and this site runs every job in a Kubernetes Pod: submit a batch job instead " ..
	"(`skbridge init` writes one, `skbridge submit --follow` shows its output live)"

local function host_allowed(job_desc, submit_uid)
	if submit_uid == 0 then
		return true
	end
	if job_desc.account ~= nil and POLICY.host_accounts[job_desc.account] then
		return true
	end
	if job_desc.partition ~= nil then
		for name in (job_desc.partition .. ","):gmatch("([^,]*),") do
			if POLICY.host_partitions[name] then
				return true
			end
		end
	end
	return false
end

local function job_submit(job_desc, part_list, submit_uid)
	local script = job_desc.script
	if script == nil or script == "" then
		if POLICY == nil or host_allowed(job_desc, submit_uid) then
			return slurm.SUCCESS
		end
		slurm.log_user(INTERACTIVE)
		return slurm.ERROR
	end
	local lines = split_lines(script)
	if not is_bridge_job(lines) then
		if POLICY == nil or host_allowed(job_desc, submit_uid) then
			return slurm.SUCCESS
		end
		if not POLICY.default_image then
			slurm.log_user(NO_IMAGE)
			return slurm.ERROR
		end
		-- on to the Pod, with the default image (the prolog reads it from the same config)
	end
	local field = line_breaking_field(job_desc)
	if field ~= nil then
		slurm.log_user("slurm-k8s-bridge: the job's " .. field .. " holds a line break or control character; " ..
			"a bridge job's name, comment, paths and mail user must be one plain line")
		return slurm.ERROR
	end
	if not shell_interpreter(lines[1]) then
		slurm.log_user("slurm-k8s-bridge: a job that runs in a Pod must start with #!/bin/bash (or /bin/sh, " ..
			"/usr/bin/env bash; one option such as -e at most), so that it runs only in its Pod")
		return slurm.ERROR
	end
	if POLICY ~= nil then
		local why = over_limit(job_desc)
		if why ~= nil then
			slurm.log_user("slurm-k8s-bridge: this job asks for more than the site allows: " .. why)
			return slurm.ERROR
		end
	end
	neutralise_environment(job_desc)
	job_desc.admin_comment = BRIDGE_JOB_MARK
	local config = ""
	if SKBRIDGE_CONFIG ~= "" then
		config = " --config " .. shell_quote(SKBRIDGE_CONFIG)
	end
	local launcher = "exec " .. shell_quote(SKBRIDGE) .. " attach" .. config .. "  " .. MARKER
	local at = header_end(lines)
	-- Idempotent only for the exact line at the exact place: a user's line that merely ends
	-- with the marker is one of the user's commands and gets the launcher in front of it.
	if lines[at] == launcher then
		return slurm.SUCCESS
	end
	if at == #lines + 1 and lines[#lines] == "" then
		at = #lines -- keep the file's final newline last
	end
	table.insert(lines, at, launcher)
	job_desc.script = table.concat(lines, "\n")
	slurm.log_info("slurm-k8s-bridge: launcher added to job from uid %u", submit_uid)
	return slurm.SUCCESS
end

local function unset(value, no_val)
	return value == nil or value == "" or (no_val ~= nil and value >= no_val)
end

-- A user's `scontrol update` of a pending bridge job would go around the maxima checked at
-- submission (MinMemoryNode=0, Gres=gpu:8, NumCPUs=...): resources stay as submitted, only a
-- shorter, non-zero time limit is taken. Root and SlurmUser (the bridge's own hooks) may.
local function job_modify(job_desc, job_rec, part_list, modify_uid)
	if modify_uid == 0 or job_rec == nil then
		return slurm.SUCCESS
	end
	local mark = job_rec.admin_comment
	if mark == nil or mark:sub(1, #BRIDGE_JOB_MARK) ~= BRIDGE_JOB_MARK then
		return slurm.SUCCESS
	end
	local field = line_breaking_field(job_desc)
	if field ~= nil then
		slurm.log_user("slurm-k8s-bridge: a bridge job's " .. field .. " must be one plain line")
		return slurm.ERROR
	end
	local t = job_desc.time_limit
	local changed = (t ~= nil and t ~= NO_VAL and (t == 0 or (POLICY ~= nil and t > POLICY.max_time_minutes)))
	for _, name in ipairs({"min_mem_per_node", "min_mem_per_cpu", "mem_per_tres", "tres_per_job", "tres_per_node",
		"tres_per_task", "tres_per_socket", "array_inx"}) do
		changed = changed or not unset(job_desc[name])
	end
	for _, name in ipairs({"min_cpus", "num_tasks", "min_nodes", "max_nodes"}) do
		changed = changed or not unset(job_desc[name], NO_VAL)
	end
	for _, name in ipairs({"cpus_per_task", "pn_min_cpus", "ntasks_per_node", "shared"}) do
		changed = changed or not unset(job_desc[name], NO_VAL16)
	end
	if changed then
		slurm.log_user("slurm-k8s-bridge: a bridge job's resources stay as submitted (a shorter time limit is " ..
			"fine); cancel it and submit it again")
		return slurm.ERROR
	end
	return slurm.SUCCESS
end

-- A Lua error must refuse the job, never let it through: slurmctld would otherwise take the
-- job as submitted, without the launcher line, and run the script on the bare host.
local function refuse_on_error(what, body, ...)
	local ok, result = pcall(body, ...)
	if ok then
		return result
	end
	slurm.log_error("slurm-k8s-bridge: job_submit.lua failed in %s: %s", what, tostring(result))
	slurm.log_user("slurm-k8s-bridge: the job could not be checked (an error in the site's job_submit.lua); " ..
		"it was not submitted: tell the administrators")
	return slurm.ERROR
end

function slurm_job_submit(job_desc, part_list, submit_uid)
	return refuse_on_error("slurm_job_submit", job_submit, job_desc, part_list, submit_uid)
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
	return refuse_on_error("slurm_job_modify", job_modify, job_desc, job_rec, part_list, modify_uid)
end

return slurm.SUCCESS
