"""The site's rules for `#SBATCH` options: the allow-list, owner paths and site maxima.

Options arrive as sbatch applies them (bridge/jobfile/sbatch_grammar.py): canonical names,
in order, the last of a kind winning. Every occurrence is checked; the totals the maxima
apply to are worked out from the values that win, the way slurmctld combines them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict

from bridge.jobfile import sbatch_values as values
from bridge.jobfile.problems import Problem
from bridge.jobfile.sbatch_grammar import Option
from bridge.settings import NasSettings, PolicySettings

# Options a bridge job may carry. Everything else is refused: the Pod, not the host, runs the
# work, so host-side knobs (uid, environment, container, binding, ...) mean nothing or worse.
ALLOWED_SBATCH = frozenset({
    "job-name", "cpus-per-task", "mem", "mem-per-cpu", "mem-per-gpu", "gres", "gpus", "gpus-per-node",
    "gpus-per-task", "time", "time-min", "output", "error", "open-mode", "partition", "account", "qos",
    "nodes", "ntasks", "ntasks-per-node", "array", "dependency", "mail-type", "mail-user", "constraint",
    "nodelist", "exclude", "begin", "deadline", "hold", "requeue", "no-requeue", "signal", "nice",
    "reservation", "licenses", "tmp", "wckey", "kill-on-invalid-dep", "export", "chdir",
    "quiet", "parsable", "oversubscribe",
})
FORBIDDEN_WHY = {
    "uid": "jobs always run as the file's owner",
    "gid": "jobs always run with the owner's own groups",
    "comment": "the bridge uses the job comment to find the job again after a crash",
    "wrap": "a bridge job's commands come from the file, not from --wrap",
    "get-user-env": "the Pod's environment comes from #K8S_ENV lines",
    "container": "the Pod is the container: use #K8S_IMAGE",
    "input": "a bridge job has no standard input on the host",
    "export-file": "the Pod's environment comes from #K8S_ENV lines",
    "propagate": "host resource limits do not apply to the Pod",
    "wait": "the watcher cannot wait for a job to finish",
    "exclusive": "it gives the job every CPU of a node, beyond the site's maxima",
    "batch": "it selects node features on the host, which the Pod does not use",
}
_GPU_OPTIONS = ("gres", "gpus", "gpus-per-node", "gpus-per-task")
_MEM_OPTIONS = ("mem", "mem-per-cpu", "mem-per-gpu")


class SbatchOption(BaseModel):
    model_config = ConfigDict(frozen=True)

    line: int
    name: str  # canonical long name without dashes, e.g. "cpus-per-task"
    value: str | None


class SbatchChecks:
    """Checks each option, then the job's totals; problems go to `report`."""

    def __init__(self, policy: PolicySettings, nas: NasSettings, owner: str | None, owner_home: Path | None,
                 report: Callable[[Problem], None]) -> None:
        self.policy = policy
        self.nas = nas
        self.owner = owner
        self.owner_home = owner_home
        self.report = report
        self.options: list[SbatchOption] = []

    def problem(self, line: int | None, code: str, message: str, expected: str, fix: str) -> None:
        self.report(Problem(line=line, code=code, message=message, expected=expected, fix=fix))

    def check(self, option: Option) -> None:
        name, value, number = option.name, option.value, option.line
        shown = f"--{name}" if option.spelled in {f"--{name}", ""} else f"{option.spelled} (--{name})"
        if name in FORBIDDEN_WHY:
            self.problem(number, "forbidden-option", f"{shown} is not allowed: {FORBIDDEN_WHY[name]}",
                         "only options from the bridge's allow-list", f"remove {option.spelled}")
            return
        if name not in ALLOWED_SBATCH:
            self.problem(number, "forbidden-option", f"{shown} is not allowed in a bridge job",
                         "one of: " + ", ".join(sorted(ALLOWED_SBATCH)), f"remove {option.spelled} or ask an administrator")
            return
        check: Callable[[int, str], None] | None = getattr(self, "_check_" + name.replace("-", "_"), None)
        if check is not None:
            if not value:
                self.problem(number, "option-value", f"--{name} needs a value", f"--{name}=VALUE",
                             f"give a value, e.g. #SBATCH --{name}=...")
                return
            check(number, value)
        self.options.append(SbatchOption(line=number, name=name, value=value))

    # -- one option at a time ---------------------------------------------------------------

    def _check_export(self, number: int, value: str) -> None:
        if value.upper() != "NONE":
            self.problem(number, "forbidden-option", f"--export={value} would hand the submitting daemon's environment"
                         " to the job", "--export=NONE or no --export at all",
                         "remove --export; set variables for the Pod with #K8S_ENV=NAME=value")

    def _check_cpus_per_task(self, number: int, value: str) -> None:
        self._check_count(number, "cpus-per-task", value, self.policy.max_cpus_per_task, "CPUs per task")

    def _check_ntasks(self, number: int, value: str) -> None:
        self._check_count(number, "ntasks", value, self.policy.max_cpus_per_task, "tasks")

    def _check_ntasks_per_node(self, number: int, value: str) -> None:
        self._check_count(number, "ntasks-per-node", value, self.policy.max_cpus_per_task, "tasks")

    def _check_nodes(self, number: int, value: str) -> None:
        top = values.node_range_max(value)
        self._check_count(number, "nodes", str(top) if top is not None else value, self.policy.max_nodes, "nodes")

    def _check_count(self, number: int, name: str, value: str, maximum: int, what: str) -> None:
        given = values.count(value)
        if given is None or given < 1:
            self.problem(number, "option-value", f"--{name}={value} is not a positive whole number",
                         f"--{name}=N with 1 <= N <= {maximum}", f"write e.g. --{name}=1")
        elif given > maximum:
            self.problem(number, "over-limit", f"--{name}={value} asks for more {what} than this site allows",
                         f"at most {maximum}", f"lower --{name} to {maximum} or less")

    def _check_mem(self, number: int, value: str) -> None:
        self._check_size(number, "mem", value)

    def _check_mem_per_cpu(self, number: int, value: str) -> None:
        self._check_size(number, "mem-per-cpu", value)

    def _check_mem_per_gpu(self, number: int, value: str) -> None:
        self._check_size(number, "mem-per-gpu", value)

    def _check_tmp(self, number: int, value: str) -> None:
        if values.mbytes(value) is None:
            self._bad_size(number, "tmp", value)

    def _check_size(self, number: int, name: str, value: str) -> None:
        mib = values.mbytes(value)
        if mib is None:
            self._bad_size(number, name, value)
        elif mib == 0:
            self.problem(number, "over-limit", f"--{name}={value} means all of a node's memory",
                         f"an explicit size of at most {self.policy.max_mem_mib} MiB", f"write e.g. --{name}=16G")

    def _bad_size(self, number: int, name: str, value: str) -> None:
        self.problem(number, "option-value", f"--{name}={value} is not a memory size",
                     "a whole number with an optional unit K, M, G or T (M when none), e.g. 32G",
                     f"write e.g. --{name}=16G")

    def _check_time(self, number: int, value: str) -> None:
        minutes = values.time_minutes(value)
        if minutes is None:
            self.problem(number, "option-value", f"--time={value} is not a time limit",
                         "minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS", "write e.g. --time=24:00:00")
        elif minutes > self.policy.max_time_minutes:
            unlimited = " (no limit at all)" if minutes == values.UNLIMITED else ""
            self.problem(number, "over-limit", f"--time={value}{unlimited} is longer than this site allows",
                         f"at most {self.policy.max_time_minutes} minutes", "lower --time, or checkpoint and resubmit")

    def _check_time_min(self, number: int, value: str) -> None:
        if values.time_minutes(value) is None:
            self.problem(number, "option-value", f"--time-min={value} is not a time limit",
                         "minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS", "write e.g. --time-min=1:00:00")

    def _check_array(self, number: int, value: str) -> None:
        tasks = values.array_tasks(value)
        if tasks is None:
            self.problem(number, "option-value", f"--array={value} is not an index list",
                         "e.g. 0-15, 1,3,5, 0-20:2, optionally with %N", "write e.g. --array=0-9%2")
        elif tasks > self.policy.max_array_tasks:
            self.problem(number, "over-limit", f"--array={value} makes {tasks} tasks, more than this site allows",
                         f"at most {self.policy.max_array_tasks} array tasks", "split the array or lower its size")

    def _check_gres(self, number: int, value: str) -> None:
        if values.gres_gpus(value) is None:
            self.problem(number, "option-value", f"--gres={value} is not a GPU request the bridge can give a Pod",
                         "gpu, gpu:N, gpu:TYPE or gpu:TYPE:N", "write e.g. --gres=gpu:a100:2")

    def _check_gpus(self, number: int, value: str) -> None:
        if values.typed_count(value) is None:
            self.problem(number, "option-value", f"--gpus={value} is not a GPU count", "N or TYPE:N with N >= 1",
                         "write e.g. --gpus=2 or --gpus=a100:2")

    _check_gpus_per_node = _check_gpus
    _check_gpus_per_task = _check_gpus

    def _check_output(self, number: int, value: str) -> None:
        self._check_owner_path(number, "output", value)

    def _check_error(self, number: int, value: str) -> None:
        self._check_owner_path(number, "error", value)

    def _check_chdir(self, number: int, value: str) -> None:
        self._check_owner_path(number, "chdir", value)

    def _check_owner_path(self, number: int, name: str, value: str) -> None:
        if value in {"/dev/null", "none"} and name != "chdir":
            return
        path = PurePosixPath(value)
        areas = self._owner_areas()
        if ".." in path.parts:
            self.problem(number, "path-escape", f"--{name}={value} climbs out with '..'",
                         "a path inside your own home or NAS folder, without '..'",
                         f"write the full path, e.g. --{name}={areas[0] if areas else '/mnt/nas/home/USER'}/...")
        elif path.is_absolute() and areas and not any(path == area or area in path.parents for area in areas):
            self.problem(number, "path-escape", f"--{name}={value} is outside your own area",
                         "a path under " + " or ".join(str(a) for a in areas),
                         f"use a relative path or one under {areas[0]}")

    def _owner_areas(self) -> list[PurePosixPath]:
        if self.owner is None:
            return []
        areas = [PurePosixPath(self.nas.home_root / self.owner), PurePosixPath(self.nas.results_root / self.owner)]
        if self.owner_home is not None and str(self.owner_home) not in {"/", ""}:
            areas.insert(0, PurePosixPath(self.owner_home))
        return areas

    # -- the job as a whole -----------------------------------------------------------------

    def _last(self, name: str) -> SbatchOption | None:
        return next((o for o in reversed(self.options) if o.name == name), None)

    def derived(self) -> dict[str, Any]:
        """Totals the site maxima apply to, combined the way slurmctld combines the options."""
        last = {o.name: o for o in self.options}
        cpus = values.count(last["cpus-per-task"].value or "") if "cpus-per-task" in last else None
        # One node: tasks are --ntasks, or --ntasks-per-node, whichever asks for more.
        tasks = max([values.count(last[n].value or "") or 1 for n in ("ntasks", "ntasks-per-node") if n in last] or [1])
        total_cpus = (cpus or 1) * tasks
        limit = self.policy.max_cpus_per_task
        if total_cpus > limit and (cpus or 1) <= limit and tasks <= limit:  # else already refused per option
            line = max(o.line for o in self.options if o.name in {"cpus-per-task", "ntasks", "ntasks-per-node"})
            self.problem(line, "over-limit", f"the job asks for {total_cpus} CPUs in all, more than this site allows",
                         f"at most {self.policy.max_cpus_per_task} CPUs (tasks x CPUs per task)",
                         "lower --ntasks or --cpus-per-task")
        gpus, gpu_type = self._gpus(last, tasks)
        mem = self._memory(last, (cpus or 1) * tasks, gpus)
        time_minutes = values.time_minutes(last["time"].value or "") if "time" in last else None
        array = values.array_tasks(last["array"].value or "") if "array" in last else None
        nodes = values.node_range_max(last["nodes"].value or "") if "nodes" in last else None
        return {"cpus_per_task": cpus, "gpus": gpus, "gpu_type": gpu_type, "mem_mib": mem,
                "time_limit_minutes": time_minutes, "array_tasks": array, "nodes": nodes}

    def _gpus(self, last: dict[str, SbatchOption], tasks: int) -> tuple[int | None, str | None]:
        given = [last[name] for name in _GPU_OPTIONS if name in last]
        if len(given) > 1:
            self.problem(max(o.line for o in given), "option-value",
                         "GPUs are asked for in more than one way: " + ", ".join(f"--{o.name}" for o in given),
                         "one of --gres=gpu:..., --gpus, --gpus-per-node or --gpus-per-task",
                         "keep one GPU option")
            return None, None
        if not given:
            return None, None
        option = given[0]
        parsed = (values.gres_gpus if option.name == "gres" else values.typed_count)(option.value or "")
        if parsed is None:
            return None, None
        count, kind = parsed
        total = count * tasks if option.name == "gpus-per-task" else count
        if total > self.policy.max_gpus:
            self.problem(option.line, "over-limit", f"the job asks for {total} GPUs, more than this site allows",
                         f"at most {self.policy.max_gpus} GPUs", "lower the GPU count")
        return total, kind

    def _memory(self, last: dict[str, SbatchOption], cpus: int, gpus: int | None) -> int | None:
        given = [last[name] for name in _MEM_OPTIONS if name in last]
        if len(given) > 1:
            # sbatch itself stops here ("--mem, --mem-per-cpu, and --mem-per-gpu are mutually exclusive").
            self.problem(max(o.line for o in given), "option-value",
                         "memory is asked for in more than one way: " + ", ".join(f"--{o.name}" for o in given),
                         "one of --mem, --mem-per-cpu or --mem-per-gpu", "keep one memory option")
            return None
        if not given:
            return None
        option = given[0]
        mib = values.mbytes(option.value or "")
        if not mib:
            return None
        if option.name == "mem-per-gpu" and not gpus:
            self.problem(option.line, "option-value", "--mem-per-gpu without a GPU request",
                         "--mem-per-gpu together with a GPU count", "use --mem instead, or ask for GPUs")
            return None
        total = mib * {"mem": 1, "mem-per-cpu": cpus, "mem-per-gpu": gpus or 1}[option.name]
        if total > self.policy.max_mem_mib:
            self.problem(option.line, "over-limit", f"the job asks for {total} MiB of memory, more than this site allows",
                         f"at most {self.policy.max_mem_mib} MiB ({self.policy.max_mem_mib // 1024}G)",
                         "lower --mem (or --mem-per-cpu / --mem-per-gpu)")
        return total
