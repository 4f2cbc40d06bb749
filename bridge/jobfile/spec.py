"""The job file format (DESIGN section 2): parse and check a job script's header.

One function, `parse_job_text`, serves `skbridge validate`, the watcher and the prolog, so a
user sees the same verdict everywhere. It never raises on any input: every problem becomes
a `Problem` with the line it is on, what was expected there and how to fix it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict

from bridge.jobfile.launcher import SHELL_INTERPRETER
from bridge.jobfile.problems import Problem
from bridge.jobfile.sbatch_grammar import C_SPACE, magic_word, read_header
from bridge.jobfile.sbatch_policy import ALLOWED_SBATCH, FORBIDDEN_WHY, SbatchChecks, SbatchOption
from bridge.settings import NasSettings, PolicySettings

__all__ = ["ALLOWED_SBATCH", "DEFAULT_WORKDIR", "FORBIDDEN_WHY", "JobSpec", "Mount", "Problem", "SbatchOption",
           "normalize_image", "normalize_registry", "parse_job_text", "render_report"]

DEFAULT_WORKDIR = "/workspace"
K8S_KEYS = ("IMAGE", "WORKDIR", "ENV", "MOUNT", "SHM", "RESULTS")
_REPEATABLE_K8S_KEYS = {"ENV", "MOUNT"}

_K8S_LINE = re.compile(r"^#K8S_([A-Za-z0-9_]*)(=?)(.*)$")
_SBATCH_LOOKALIKE = re.compile(r"^#\s*sbatch\b", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MOUNT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_IMAGE_REF = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
_RESERVED_ENV_PREFIXES = ("SLURM_", "SKBRIDGE_", "KUBERNETES_")
_RESERVED_ENV = {"HOME", "USER", "NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"}


class Mount(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    container_path: str
    read_only: bool


class JobSpec(BaseModel):
    """What a valid job file asks for."""

    model_config = ConfigDict(frozen=True)

    image: str
    image_is_default: bool = False  # no #K8S_IMAGE: the site's policy.default_image (one road)
    workdir: str = DEFAULT_WORKDIR
    workdir_given: bool = False  # #K8S_WORKDIR was written; else the job's own working directory decides
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
        self.sbatch = SbatchChecks(policy, nas, owner, owner_home, self.problems.append)
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
        elif not SHELL_INTERPRETER.match(lines[0]):
            self.problem(1, "interpreter", f"{lines[0]!r}: a bridge job's script must be a bash or sh script",
                         "#!/bin/bash (or /bin/sh, /usr/bin/env bash; one option such as -e or -x at most)",
                         "start the file with #!/bin/bash; run other languages from the script, e.g. python3 x.py")
        self._scan_lines(lines)
        return self._build()

    def _scan_lines(self, lines: list[str]) -> None:
        header = read_header(lines)
        self.problems.extend(header.problems)
        for option in header.options:
            self.sbatch.check(option)
        for index, raw in enumerate(lines):
            number = index + 1
            if index >= header.end:
                if raw.startswith(("#SBATCH", "#SLURM", "#K8S")):
                    self.problem(number, "directive-after-command",
                                 f"{raw.split()[0] if raw.split() else raw} after the first command is ignored by Slurm",
                                 "every #SBATCH and #K8S_ line before the first command",
                                 "move this line up into the header, above the first command")
                continue
            lead = raw.lstrip(" \t")
            if lead and not lead.startswith("#"):
                # sbatch reads this as blank or a comment (\v, \f, \r are spaces to C), bash as a
                # command: it would run on the bare host before the launcher line.
                self.problem(number, "header-whitespace",
                             f"line starts with {lead[0]!r}: Slurm reads it as part of the header, bash as a command",
                             "header lines that are blank or start with # (spaces and tabs before it are fine)",
                             "remove the vertical tab, form feed or carriage return from the start of the line")
            if raw.startswith("#K8S"):
                self._k8s_line(number, raw)
            elif magic_word(raw) == "#SLURM":
                self.problem(number, "slurm-directive", "sbatch reads #SLURM lines like #SBATCH (and warns)",
                             "#SBATCH", "write #SBATCH instead of #SLURM", severity="warning")
            elif number not in header.directive_lines and _SBATCH_LOOKALIKE.match(raw.lstrip("".join(C_SPACE))):
                self.problem(number, "sbatch-lookalike", f"{raw.split()[0]!r} is not read by Slurm",
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

    # -- the whole job ----------------------------------------------------------------------

    def _build(self) -> tuple[JobSpec | None, list[Problem]]:
        image = self._image()
        workdir = self._single_path("WORKDIR", DEFAULT_WORKDIR)
        results = self._single_path("RESULTS", None)
        env = self._env()
        mounts = self._mounts()
        shm = self._shm()
        derived = self.sbatch.derived()
        if image is None or any(p.severity == "error" for p in self.problems):
            return None, self.problems
        spec = JobSpec(image=image, image_is_default=not self.k8s.get("IMAGE"), workdir=workdir or DEFAULT_WORKDIR,
                       workdir_given=bool(self.k8s.get("WORKDIR")), env=env, mounts=mounts, shm=shm,
                       results=results, sbatch_options=self.sbatch.options, **derived)
        return spec, self.problems

    def _image(self) -> str | None:
        given = self.k8s.get("IMAGE")
        if not given and self.policy.default_image:
            return self.policy.default_image  # one road: the site's image for a plain script
        if not given:
            registry = self.policy.allowed_registries[0] if self.policy.allowed_registries else "registry"
            self.problem(None, "missing-image", "no #K8S_IMAGE line, and this site sets no default image: every job "
                         "runs in a Kubernetes Pod with an image it names",
                         "one #K8S_IMAGE=REGISTRY/NAME:TAG line in the header",
                         f"add e.g. #K8S_IMAGE={registry}/pytorch:2.4 below the #SBATCH lines (skbridge init writes one)")
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

# -- small parsers, each total: they return None instead of raising --------------------------


def _strip_comment(value: str) -> str:
    """`#K8S_SHM=16Gi   # for loaders` -> `16Gi`: a comment starts at whitespace + '#'."""
    match = re.search(r"\s+#", value)
    return (value[: match.start()] if match else value).strip()


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
