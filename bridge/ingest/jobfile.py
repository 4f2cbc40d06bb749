"""The job file format (DESIGN section 2): parse and check a job script's header.

One function, `parse_job_text`, serves `skbridge validate`, the watcher and the prolog, so a
user sees the same verdict everywhere. It never raises on any input: every problem becomes
a `Problem` with the line it is on, what was expected there and how to fix it.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from bridge.ingest.launcher import has_launcher
from bridge.settings import NasSettings, PolicySettings

DEFAULT_WORKDIR = "/workspace"
K8S_KEYS = ("IMAGE", "WORKDIR", "ENV", "MOUNT", "SHM", "RESULTS")
_REPEATABLE_K8S_KEYS = {"ENV", "MOUNT"}

# sbatch's one-letter options, mapped to the long names every check below uses.
SHORT_OPTIONS = {
    "A": "account", "a": "array", "B": "extra-node-info", "C": "constraint", "c": "cpus-per-task",
    "D": "chdir", "d": "dependency", "e": "error", "F": "nodefile", "G": "gpus", "H": "hold", "i": "input",
    "J": "job-name", "k": "no-kill", "L": "licenses", "M": "clusters", "m": "distribution", "N": "nodes",
    "n": "ntasks", "O": "overcommit", "o": "output", "p": "partition", "Q": "quiet", "q": "qos",
    "S": "core-spec", "s": "oversubscribe", "t": "time", "W": "wait", "w": "nodelist", "x": "exclude",
}
_FLAG_OPTIONS = {"hold", "no-kill", "overcommit", "oversubscribe", "quiet", "requeue", "no-requeue",
                 "exclusive", "contiguous", "kill-on-invalid-dep", "parsable", "wait"}

# Options a bridge job may carry. Everything else is refused: the Pod, not the host, runs the
# work, so host-side knobs (uid, environment, container, binding, ...) mean nothing or worse.
ALLOWED_SBATCH = frozenset({
    "job-name", "cpus-per-task", "mem", "mem-per-cpu", "mem-per-gpu", "gres", "gpus", "gpus-per-node",
    "gpus-per-task", "time", "time-min", "output", "error", "open-mode", "partition", "account", "qos",
    "nodes", "ntasks", "ntasks-per-node", "array", "dependency", "mail-type", "mail-user", "constraint",
    "nodelist", "exclude", "begin", "deadline", "hold", "requeue", "no-requeue", "signal", "nice",
    "reservation", "licenses", "tmp", "wckey", "kill-on-invalid-dep", "export", "chdir", "exclusive",
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
}

_K8S_LINE = re.compile(r"^#K8S_([A-Za-z0-9_]*)(=?)(.*)$")
_SBATCH_LINE = re.compile(r"^#SBATCH(\s|$)(.*)$")
_SBATCH_LOOKALIKE = re.compile(r"^#\s*sbatch\b", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MOUNT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_SLURM_SIZE = re.compile(r"^([0-9]+)([KMGTkmgt])?[Bb]?$")
_SIZE_MIB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
_IMAGE_REF = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
_RESERVED_ENV_PREFIXES = ("SLURM_", "SKBRIDGE_", "KUBERNETES_")
_RESERVED_ENV = {"HOME", "USER", "NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"}


class Problem(BaseModel):
    """One thing wrong with a job file, phrased for the person who wrote it."""

    model_config = ConfigDict(frozen=True)

    line: int | None
    code: str
    message: str
    expected: str
    fix: str
    severity: Literal["error", "warning"] = "error"


class SbatchOption(BaseModel):
    model_config = ConfigDict(frozen=True)

    line: int
    name: str  # long name without dashes, e.g. "cpus-per-task"
    value: str | None


class Mount(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    container_path: str
    read_only: bool


class JobSpec(BaseModel):
    """What a valid job file asks for."""

    model_config = ConfigDict(frozen=True)

    image: str
    workdir: str = DEFAULT_WORKDIR
    env: list[tuple[str, str]] = []
    mounts: list[Mount] = []
    shm: str | None = None
    results: str | None = None
    sbatch_options: list[SbatchOption] = []
    cpus_per_task: int | None = None
    mem_mib: int | None = None
    gpus: int | None = None
    gpu_type: str | None = None
    time_limit_minutes: int | None = None
    array_tasks: int | None = None
    nodes: int | None = None

    def option(self, name: str) -> str | None:
        found = [o.value for o in self.sbatch_options if o.name == name]
        return found[-1] if found else None


def parse_job_text(
    text: str,
    policy: PolicySettings,
    nas: NasSettings,
    *,
    owner: str | None = None,
    owner_home: Path | None = None,
) -> tuple[JobSpec | None, list[Problem]]:
    """Check a job script; returns the spec (None when it has errors) and every problem found."""
    try:
        spec, problems = _Parser(policy, nas, owner, owner_home).parse(text)
        return spec, sorted(problems, key=lambda p: p.line or 0)
    except Exception as exc:
        return None, [Problem(line=None, code="internal", message=f"the validator failed on this file: {exc!r}",
                              expected="a file the validator can read",
                              fix="report this to the administrators with the file attached")]


def render_report(problems: Iterable[Problem], *, file_name: str) -> str:
    """The human-readable explanation written next to a rejected file (`NAME.error`)."""
    problems = list(problems)
    errors = [p for p in problems if p.severity == "error"]
    head = (f"{file_name} was not submitted: {len(errors)} problem{'s' if len(errors) != 1 else ''} found.\n"
            if errors else f"{file_name}: no errors.\n")
    blocks = []
    for problem in problems:
        where = f"line {problem.line}" if problem.line else "file"
        blocks.append(f"{where}: {problem.severity}: {problem.message}\n"
                      f"  expected: {problem.expected}\n"
                      f"  fix:      {problem.fix}\n")
    tail = ("\nFix the file, check it with `skbridge validate FILE`, then copy it into the submit folder again.\n"
            if errors else "")
    return head + "\n" + "\n".join(blocks) + tail


class _Parser:
    def __init__(self, policy: PolicySettings, nas: NasSettings, owner: str | None, owner_home: Path | None) -> None:
        self.policy = policy
        self.nas = nas
        self.owner = owner
        self.owner_home = owner_home
        self.problems: list[Problem] = []
        self.options: list[SbatchOption] = []
        self.k8s: dict[str, list[tuple[int, str]]] = {}

    def problem(self, line: int | None, code: str, message: str, expected: str, fix: str,
                severity: Literal["error", "warning"] = "error") -> None:
        self.problems.append(Problem(line=line, code=code, message=message, expected=expected, fix=fix,
                                     severity=severity))

    # -- the text as a whole ----------------------------------------------------------------

    def parse(self, text: str) -> tuple[JobSpec | None, list[Problem]]:
        if not text.strip():
            self.problem(None, "empty", "the file is empty", "a bash script starting with #!/bin/bash",
                         "write the job script, starting with the line #!/bin/bash")
            return None, self.problems
        if "\x00" in text:
            line = text.count("\n", 0, text.index("\x00")) + 1
            self.problem(line, "binary", "the file contains NUL bytes: it is binary, not a text script",
                         "a plain-text bash script", "copy the job's .sh file, not a compiled or archived file")
            return None, self.problems
        lines = text.split("\n")
        crlf = [n for n, line in enumerate(lines, 1) if line.endswith("\r")]
        if crlf:
            self.problem(crlf[0], "crlf", f"Windows line endings (CRLF) on {len(crlf)} line(s)",
                         "Unix line endings (LF)", "convert the file with `dos2unix FILE` or save it with LF endings")
            lines = [line.rstrip("\r") for line in lines]
        if not lines[0].startswith("#!"):
            self.problem(1, "no-shebang", "the first line is not an interpreter line",
                         "#!/bin/bash as the very first line", "add #!/bin/bash as the first line")
        self._scan_lines(lines)
        return self._build()

    def _scan_lines(self, lines: list[str]) -> None:
        in_header = True
        for number, raw in enumerate(lines, 1):
            if number == 1 and raw.startswith("#!"):
                continue
            line = raw.strip()
            if has_launcher(raw):
                in_header = False  # the launcher line a plain `sbatch` job carries ends the header
                continue
            if in_header and line and not line.startswith("#"):
                in_header = False
            is_directive = raw.startswith(("#SBATCH", "#K8S"))
            if is_directive and not in_header:
                self.problem(number, "directive-after-command",
                             f"{raw.split()[0]} after the first command is ignored by Slurm",
                             "every #SBATCH and #K8S_ line before the first command",
                             "move this line up into the header, above the first command")
                continue
            if raw.startswith("#K8S"):
                self._k8s_line(number, raw)
            elif _SBATCH_LINE.match(raw):
                self._sbatch_line(number, _SBATCH_LINE.match(raw).group(2))  # type: ignore[union-attr]
            elif in_header and _SBATCH_LOOKALIKE.match(line):
                self.problem(number, "sbatch-lookalike", f"{line.split()[0]!r} is not read by Slurm",
                             "#SBATCH exactly, upper case, at the start of the line",
                             "write it as #SBATCH --option=value", severity="warning")

    # -- #K8S_ directives -------------------------------------------------------------------

    def _k8s_line(self, number: int, raw: str) -> None:
        match = _K8S_LINE.match(raw)
        if match is None:
            self.problem(number, "k8s-syntax", f"cannot read {raw[:40]!r}", "#K8S_KEY=VALUE",
                         "write the directive as #K8S_IMAGE=..., #K8S_ENV=NAME=value, ...")
            return
        key, equals, value = match.group(1), match.group(2), _strip_comment(match.group(3))
        if key not in K8S_KEYS:
            guess = difflib.get_close_matches(key.upper(), K8S_KEYS, n=1, cutoff=0.5)
            hint = f"did you mean #K8S_{guess[0]}?" if guess else "remove the line"
            self.problem(number, "unknown-k8s-key", f"unknown directive #K8S_{key}",
                         "one of " + ", ".join(f"#K8S_{k}" for k in K8S_KEYS), hint)
            return
        if not equals or not value:
            self.problem(number, "k8s-empty", f"#K8S_{key} has no value", f"#K8S_{key}=VALUE",
                         f"give a value after #K8S_{key}=, or remove the line")
            return
        seen = self.k8s.setdefault(key, [])
        if seen and key not in _REPEATABLE_K8S_KEYS:
            self.problem(number, "k8s-repeated", f"#K8S_{key} is given twice (first on line {seen[0][0]})",
                         f"one #K8S_{key} line", "keep only one of the lines")
            return
        seen.append((number, value))

    # -- #SBATCH lines ----------------------------------------------------------------------

    def _sbatch_line(self, number: int, rest: str) -> None:
        try:
            words = shlex.split(rest, comments=True)
        except ValueError as exc:
            self.problem(number, "sbatch-syntax", f"cannot read this #SBATCH line: {exc}",
                         "#SBATCH --option=value with balanced quotes", "close the quote or remove it")
            return
        index = 0
        while index < len(words):
            word = words[index]
            index += 1
            name, value = _split_option(word)
            if name is None:
                self.problem(number, "sbatch-syntax", f"{word!r} is not an sbatch option",
                             "#SBATCH --option=value", "start each option with -- (long) or - (short)")
                continue
            if value is None and name not in _FLAG_OPTIONS and index < len(words) and not words[index].startswith("-"):
                value = words[index]
                index += 1
            self._sbatch_option(number, name, value)

    def _sbatch_option(self, number: int, name: str, value: str | None) -> None:
        if name in FORBIDDEN_WHY:
            self.problem(number, "forbidden-option", f"--{name} is not allowed: {FORBIDDEN_WHY[name]}",
                         "only options from the bridge's allow-list", f"remove --{name}")
            return
        if name not in ALLOWED_SBATCH:
            self.problem(number, "forbidden-option", f"--{name} is not allowed in a bridge job",
                         "one of: " + ", ".join(sorted(ALLOWED_SBATCH)), f"remove --{name} or ask an administrator")
            return
        if name not in _FLAG_OPTIONS and not value:
            self.problem(number, "option-value", f"--{name} needs a value", f"--{name}=VALUE",
                         f"give a value, e.g. #SBATCH --{name}=...")
            return
        check: Callable[[int, str], None] | None = getattr(self, "_check_" + name.replace("-", "_"), None)
        if check is not None and value is not None:
            check(number, value)
        self.options.append(SbatchOption(line=number, name=name, value=value))

    def _check_export(self, number: int, value: str) -> None:
        if value.upper() != "NONE":
            self.problem(number, "forbidden-option", f"--export={value} would hand the submitting daemon's environment"
                         " to the job", "--export=NONE or no --export at all",
                         "remove --export; set variables for the Pod with #K8S_ENV=NAME=value")

    def _check_cpus_per_task(self, number: int, value: str) -> None:
        self._check_count(number, "cpus-per-task", value, self.policy.max_cpus_per_task, "CPUs per task")

    def _check_ntasks(self, number: int, value: str) -> None:
        self._check_count(number, "ntasks", value, self.policy.max_cpus_per_task, "tasks")

    def _check_nodes(self, number: int, value: str) -> None:
        high = value.rsplit("-", maxsplit=1)[-1] if "-" in value else value
        self._check_count(number, "nodes", high, self.policy.max_nodes, "nodes")

    def _check_count(self, number: int, name: str, value: str, maximum: int, what: str) -> None:
        if not value.isdigit() or int(value) < 1:
            self.problem(number, "option-value", f"--{name}={value} is not a positive whole number",
                         f"--{name}=N with 1 <= N <= {maximum}", f"write e.g. --{name}=1")
        elif int(value) > maximum:
            self.problem(number, "over-limit", f"--{name}={value} asks for more {what} than this site allows",
                         f"at most {maximum}", f"lower --{name} to {maximum} or less")

    def _check_mem(self, number: int, value: str) -> None:
        self._check_size(number, "mem", value)

    def _check_mem_per_cpu(self, number: int, value: str) -> None:
        self._check_size(number, "mem-per-cpu", value)

    def _check_mem_per_gpu(self, number: int, value: str) -> None:
        self._check_size(number, "mem-per-gpu", value)

    def _check_size(self, number: int, name: str, value: str) -> None:
        if _slurm_size_mib(value) is None:
            self.problem(number, "option-value", f"--{name}={value} is not a memory size",
                         "a number with an optional unit K, M, G or T (M when none), e.g. 32G",
                         f"write e.g. --{name}=16G")

    def _check_time(self, number: int, value: str) -> None:
        if _time_minutes(value) is None:
            self.problem(number, "option-value", f"--time={value} is not a time limit",
                         "minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS", "write e.g. --time=24:00:00")

    def _check_array(self, number: int, value: str) -> None:
        if _array_tasks(value) is None:
            self.problem(number, "option-value", f"--array={value} is not an index list",
                         "e.g. 0-15, 1,3,5, 0-20:2, optionally with %N", "write e.g. --array=0-9%2")

    def _check_gres(self, number: int, value: str) -> None:
        if _gres_gpus(value) is None:
            self.problem(number, "option-value", f"--gres={value} is not a GPU request the bridge can give a Pod",
                         "gpu, gpu:N or gpu:TYPE:N", "write e.g. --gres=gpu:a100:2")

    def _check_gpus(self, number: int, value: str) -> None:
        if _typed_count(value) is None:
            self.problem(number, "option-value", f"--gpus={value} is not a GPU count", "N or TYPE:N",
                         "write e.g. --gpus=2 or --gpus=a100:2")

    _check_gpus_per_node = _check_gpus

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
        elif path.is_absolute() and areas and not any(_is_within(path, area) for area in areas):
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

    # -- the whole job ----------------------------------------------------------------------

    def _build(self) -> tuple[JobSpec | None, list[Problem]]:
        image = self._image()
        workdir = self._single_path("WORKDIR", DEFAULT_WORKDIR)
        results = self._single_path("RESULTS", None)
        env = self._env()
        mounts = self._mounts()
        shm = self._shm()
        derived = self._derived()
        if image is None or any(p.severity == "error" for p in self.problems):
            return None, self.problems
        spec = JobSpec(image=image, workdir=workdir or DEFAULT_WORKDIR, env=env, mounts=mounts, shm=shm,
                       results=results, sbatch_options=self.options, **derived)
        return spec, self.problems

    def _image(self) -> str | None:
        given = self.k8s.get("IMAGE")
        if not given:
            registry = self.policy.allowed_registries[0] if self.policy.allowed_registries else "registry"
            self.problem(None, "missing-image", "no #K8S_IMAGE line: the bridge does not know what to run",
                         "one #K8S_IMAGE=REGISTRY/NAME:TAG line in the header",
                         f"add e.g. #K8S_IMAGE={registry}/pytorch:2.4 below the #SBATCH lines")
            return None
        number, image = given[0]
        match = _IMAGE_REF.match(image)
        if match is None:
            self.problem(number, "bad-image", f"{image!r} is not an image reference",
                         "REGISTRY/NAME:TAG in lower case, e.g. registry.lab:5000/pytorch:2.4",
                         "fix the spelling; image names are lower case and contain no spaces")
            return None
        full = normalize_image(image)
        allowed = self.policy.allowed_registries
        if not any(full.startswith(prefix.rstrip("/") + "/") for prefix in map(normalize_registry, allowed)):
            self.problem(number, "registry-not-allowed", f"image {image!r} comes from a registry this site does not allow",
                         "an image from " + ", ".join(allowed), "push the image to an allowed registry and use that name")
            return None
        return image

    def _single_path(self, key: str, default: str | None) -> str | None:
        given = self.k8s.get(key)
        if not given:
            return default
        number, value = given[0]
        path = PurePosixPath(value)
        if not path.is_absolute() or ".." in path.parts or any(c in value for c in "\n\t"):
            self.problem(number, "bad-path", f"#K8S_{key}={value} is not an absolute path inside the Pod",
                         "an absolute path without '..', e.g. /workspace/outputs", f"write e.g. #K8S_{key}=/workspace/...")
            return default
        return str(path)

    def _env(self) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        for number, value in self.k8s.get("ENV", []):
            name, sep, content = value.partition("=")
            if not sep or not _ENV_NAME.match(name):
                self.problem(number, "bad-env", f"#K8S_ENV={value} is not NAME=value",
                             "NAME=value with NAME made of letters, digits and _", "write e.g. #K8S_ENV=WANDB_MODE=offline")
            elif name.startswith(_RESERVED_ENV_PREFIXES) or name in _RESERVED_ENV:
                self.problem(number, "reserved-env", f"{name} is set by the bridge and cannot be overridden",
                             "a variable name not starting with SLURM_, SKBRIDGE_ or KUBERNETES_",
                             "rename the variable")
            else:
                pairs.append((name, content))
        return pairs

    def _mounts(self) -> list[Mount]:
        mounts: list[Mount] = []
        volumes = self.nas.shared_volumes
        for number, value in self.k8s.get("MOUNT", []):
            parts = value.split(":")
            mode = parts[2] if len(parts) == 3 else "ro"
            if len(parts) not in {2, 3} or mode not in {"ro", "rw"} or not _MOUNT_NAME.match(parts[0]):
                self.problem(number, "bad-mount", f"#K8S_MOUNT={value} cannot be read",
                             "NAME:/path/in/pod[:ro|rw]", "write e.g. #K8S_MOUNT=datasets:/data:ro")
                continue
            name, target = parts[0], PurePosixPath(parts[1])
            if name not in volumes:
                guess = difflib.get_close_matches(name, list(volumes), n=1)
                self.problem(number, "unknown-volume", f"there is no shared volume named {name!r}",
                             "one of: " + (", ".join(sorted(volumes)) or "(this site defines none)"),
                             f"did you mean {guess[0]!r}?" if guess else "ask an administrator to add the volume")
                continue
            if not target.is_absolute() or ".." in target.parts or str(target) in {"/", DEFAULT_WORKDIR}:
                self.problem(number, "bad-mount", f"#K8S_MOUNT target {parts[1]!r} is not a usable path in the Pod",
                             f"an absolute path other than / and {DEFAULT_WORKDIR}", "mount it at e.g. /data")
                continue
            if any(m.container_path == str(target) for m in mounts):
                self.problem(number, "bad-mount", f"two volumes are mounted at {target}", "one volume per path",
                             "choose a different path for one of them")
                continue
            read_only = volumes[name].read_only or mode == "ro"
            if volumes[name].read_only and mode == "rw":
                self.problem(number, "read-only-volume", f"{name!r} is read-only at this site; it is mounted read-only",
                             f"{name}:{target}:ro", "write results under /workspace instead", severity="warning")
            mounts.append(Mount(name=name, container_path=str(target), read_only=read_only))
        return mounts

    def _shm(self) -> str | None:
        given = self.k8s.get("SHM")
        if not given:
            return None
        number, value = given[0]
        match = _QUANTITY.match(value)
        mib = _quantity_mib(value) if match else None
        if mib is None or mib < 1:
            self.problem(number, "bad-shm", f"#K8S_SHM={value} is not a size", "a size like 512Mi or 16Gi",
                         "write e.g. #K8S_SHM=16Gi")
            return None
        limit = self.policy.max_mem_mib
        if mib > limit:
            self.problem(number, "over-limit", f"#K8S_SHM={value} is larger than this site's memory limit",
                         f"at most {limit} MiB", "lower #K8S_SHM")
            return None
        return value

    def _derived(self) -> dict[str, Any]:
        """Resource totals the site maxima apply to, worked out the way Slurm reads the options."""
        opt = {o.name: o.value for o in self.options}
        derived: dict[str, Any] = {}
        cpus_text = opt.get("cpus-per-task") or ""
        cpus = int(cpus_text) if cpus_text.isdigit() else None
        derived["cpus_per_task"] = cpus
        gpus, gpu_type = _gpu_request(opt)
        derived["gpus"], derived["gpu_type"] = gpus, gpu_type
        mem = _total_mem_mib(opt, cpus or 1, gpus or 0)
        derived["mem_mib"] = mem
        if mem is not None and mem > self.policy.max_mem_mib:
            line = next(o.line for o in reversed(self.options) if o.name.startswith("mem"))
            self.problem(line, "over-limit", f"the job asks for {mem} MiB of memory, more than this site allows",
                         f"at most {self.policy.max_mem_mib} MiB ({self.policy.max_mem_mib // 1024}G)",
                         "lower --mem (or --mem-per-cpu / --mem-per-gpu)")
        if gpus is not None and gpus > self.policy.max_gpus:
            line = next(o.line for o in reversed(self.options) if o.name in {"gres", "gpus", "gpus-per-node"})
            self.problem(line, "over-limit", f"the job asks for {gpus} GPUs, more than this site allows",
                         f"at most {self.policy.max_gpus} GPUs", "lower the GPU count")
        time_text = opt.get("time")
        minutes = _time_minutes(time_text) if time_text else None
        derived["time_limit_minutes"] = minutes
        if minutes is not None and minutes > self.policy.max_time_minutes:
            line = next(o.line for o in reversed(self.options) if o.name == "time")
            self.problem(line, "over-limit", f"--time={time_text} is longer than this site allows",
                         f"at most {self.policy.max_time_minutes} minutes", "lower --time, or checkpoint and resubmit")
        array_text = opt.get("array")
        tasks = _array_tasks(array_text) if array_text else None
        derived["array_tasks"] = tasks
        if tasks is not None and tasks > self.policy.max_array_tasks:
            line = next(o.line for o in reversed(self.options) if o.name == "array")
            self.problem(line, "over-limit", f"--array={array_text} makes {tasks} tasks, more than this site allows",
                         f"at most {self.policy.max_array_tasks} array tasks", "split the array or lower its size")
        nodes = opt.get("nodes")
        derived["nodes"] = int(nodes.split("-")[-1]) if nodes and nodes.split("-")[-1].isdigit() else None
        return derived


# -- small parsers, each total: they return None instead of raising --------------------------


def _strip_comment(value: str) -> str:
    """`#K8S_SHM=16Gi   # for loaders` -> `16Gi`: a comment starts at whitespace + '#'."""
    match = re.search(r"\s+#", value)
    return (value[: match.start()] if match else value).strip()


def _split_option(word: str) -> tuple[str | None, str | None]:
    if word.startswith("--") and len(word) > 2:
        name, sep, value = word[2:].partition("=")
        return name.lower(), (value if sep else None)
    if word.startswith("-") and len(word) > 1 and word[1] != "-":
        long = SHORT_OPTIONS.get(word[1], f"-{word[1]}")
        rest = word[2:]
        return long, (rest.removeprefix("=") if rest else None)
    return None, None


def _is_within(path: PurePosixPath, area: PurePosixPath) -> bool:
    return path == area or area in path.parents


def _slurm_size_mib(value: str) -> int | None:
    match = _SLURM_SIZE.match(value.strip())
    if match is None:
        return None
    unit = (match.group(2) or "M").upper()
    return max(1, int(int(match.group(1)) * _SIZE_MIB[unit])) if int(match.group(1)) else 0


def _quantity_mib(value: str) -> int | None:
    match = _QUANTITY.match(value)
    if match is None:
        return None
    factors = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024, "K": 1000 / 1024 / 1024,
               "M": 1000 * 1000 / 1024 / 1024, "G": 1000**3 / 1024**2, "T": 1000**4 / 1024**2}
    unit = match.group(2)
    if unit is None:
        return int(match.group(1)) // (1024 * 1024)
    return int(int(match.group(1)) * factors[unit])


def _time_minutes(value: str) -> int | None:
    """Slurm's time formats; UNLIMITED counts as longer than any site maximum."""
    value = value.strip()
    if value.upper() in {"UNLIMITED", "INFINITE"}:
        return 10**9
    days = 0
    if "-" in value:
        day_text, _, value = value.partition("-")
        if not day_text.isdigit():
            return None
        days = int(day_text)
        parts = value.split(":")
        if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
            return None
        hours, minutes, seconds = ([*map(int, parts), 0, 0])[:3]
    else:
        parts = value.split(":")
        if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
            return None
        numbers = list(map(int, parts))
        if len(numbers) == 1:
            hours, minutes, seconds = 0, numbers[0], 0
        elif len(numbers) == 2:
            hours, minutes, seconds = 0, numbers[0], numbers[1]
        else:
            hours, minutes, seconds = numbers
    total_s = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    return -(-total_s // 60)


def _array_tasks(value: str) -> int | None:
    spec = value.split("%", maxsplit=1)[0]
    if "%" in value and not value.split("%", 1)[1].isdigit():
        return None
    count = 0
    for part in spec.split(","):
        rng, _, step_text = part.partition(":")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else (1 if not step_text else None)
        if step is None:
            return None
        low, dash, high = rng.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            return None
        if dash:
            if int(high) < int(low):
                return None
            count += (int(high) - int(low)) // step + 1
        else:
            count += 1
    return count


def _typed_count(value: str) -> tuple[int, str | None] | None:
    kind, _, count = value.rpartition(":")
    if not count.isdigit() or int(count) < 1 or (kind and not re.match(r"^[A-Za-z0-9_.-]+$", kind)):
        return None
    return int(count), kind or None


def _gres_gpus(value: str) -> tuple[int, str | None] | None:
    """Total GPUs of a --gres list; only GPUs are a resource a Pod can be given."""
    total, gpu_type = 0, None
    for item in value.split(","):
        parts = item.split(":")
        if parts[0] != "gpu" or len(parts) > 3:
            return None
        if len(parts) == 1:
            total += 1
        elif len(parts) == 2:
            if parts[1].isdigit():
                total += int(parts[1])
            else:
                gpu_type, total = parts[1], total + 1
        else:
            if not parts[2].isdigit():
                return None
            gpu_type, total = parts[1], total + int(parts[2])
    return total, gpu_type


def _gpu_request(opt: dict[str, str | None]) -> tuple[int | None, str | None]:
    for name, parse in (("gres", _gres_gpus), ("gpus", _typed_count), ("gpus-per-node", _typed_count)):
        value = opt.get(name)
        parsed = parse(value) if value else None
        if parsed is not None:
            return parsed
    return None, None


def _total_mem_mib(opt: dict[str, str | None], cpus: int, gpus: int) -> int | None:
    for name, factor in (("mem", 1), ("mem-per-cpu", cpus), ("mem-per-gpu", max(gpus, 1))):
        value = opt.get(name)
        mib = _slurm_size_mib(value) if value else None
        if mib is not None:
            return mib * factor
    return None


def normalize_registry(prefix: str) -> str:
    """Allow-list entries use Docker's defaults too: `docker.io` means `docker.io/...` in full form."""
    prefix = prefix.strip().rstrip("/")
    return "docker.io" + prefix[len("index.docker.io"):] if prefix.startswith("index.docker.io") else prefix


def normalize_image(image: str) -> str:
    """`ubuntu` -> `docker.io/library/ubuntu`, `user/app` -> `docker.io/user/app`, as the runtime pulls them."""
    first, slash, rest = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return normalize_registry(first) + "/" + rest
    if not slash:
        return "docker.io/library/" + image
    return "docker.io/" + image
