"""The profile file: `skbridge-profiles.yaml` (or `skbridge.yaml`) in the project, else the user's
`~/.config/skbridge/profiles.yaml`. A pydantic model, so a typo names its key."""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.errors import ConfigError

PROJECT_FILES = ("skbridge-profiles.yaml", "skbridge.yaml")
USER_FILE = Path("skbridge") / "profiles.yaml"
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_GPUS = re.compile(r"^(?:(?P<type>[A-Za-z0-9_-]+):)?(?P<count>\d+)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_SNAPSHOT_CAP_MIB = 200


def _no_line_breaks(value: str, what: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{what} must be one line")
    return value


class Profile(BaseModel):
    """One named run. Every field overrides the base job file's line of the same meaning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    base: str | None = Field(default=None, description="Job file (relative to the project) whose lines are the start")
    command: str | None = Field(default=None, description="What runs in the container, from the snapshot's folder")
    image: str | None = None
    gpus: str | None = Field(default=None, description="COUNT or TYPE:COUNT")
    cpus: int | None = Field(default=None, ge=1)
    mem: str | None = Field(default=None, description="512M, 8G, ...")
    time: str | None = Field(default=None, description="MM, HH:MM:SS or D-HH:MM:SS")
    partition: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    mounts: list[str] = Field(default_factory=list, description="NAME:/path[:ro|rw], shared NAS volumes")
    code: list[str] = Field(default_factory=list, description="Paths or globs to snapshot; empty: the whole project")
    results: str | None = Field(default=None, description="Folder (relative to the snapshot) collected after the run")
    collect_to: str = Field(default="skbridge-results/{profile}/{job_id}",
                            description="Local folder (relative to the project) results are copied into")
    snapshot_cap_mib: int = Field(default=DEFAULT_SNAPSHOT_CAP_MIB, ge=1)

    @field_validator("gpus", "mem", "time", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        # YAML reads `gpus: 2` and `time: 30` as numbers; they are Slurm's notations, kept as text.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: str | None) -> str | None:
        if value is not None and not _GPUS.match(str(value)):
            raise ValueError("expected COUNT or TYPE:COUNT, such as 2 or a100:2")
        return None if value is None else str(value)

    @field_validator("image", "mem", "time", "partition")
    @classmethod
    def _one_word(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c.isspace() for c in value)):
            raise ValueError("must be one word without spaces")
        return value

    @field_validator("command", "description")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        return value if value is None else value.replace("\r\n", "\n")

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, content in value.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a variable name")
            _no_line_breaks(str(content), f"env {name}")
        return {name: str(content) for name, content in value.items()}

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, value: list[str]) -> list[str]:
        return [_no_line_breaks(item, "a mount") for item in value]

    @field_validator("code", "results", "base", "collect_to")
    @classmethod
    def _relative(cls, value: Any) -> Any:
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            path = PurePosixPath(_no_line_breaks(item, "a path"))
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(f"{item!r} must be a path inside the project (relative, without '..')")
        return value


class ProfileFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str | None = Field(default=None, description="Project folder (user file only; default: where you are)")
    defaults: dict[str, Any] = Field(default_factory=dict, description="Fields every profile starts from")
    profiles: dict[str, Profile]

    @field_validator("profiles", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in value:
                if not isinstance(name, str) or not PROFILE_NAME.match(name):
                    raise ValueError(f"profile name {name!r}: letters, digits, '.', '_', '-' (at most 64)")
        return value


class Loaded(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    project: Path
    profiles: dict[str, Profile]

    def get(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles)) or "(none)"
            raise ConfigError(f"no profile {name!r} in {self.path}; profiles: {known}") from None


def user_config_dir() -> Path:
    """$XDG_CONFIG_HOME, else the account's own home (not $HOME: `runuser`/`sudo -u` keep the caller's)."""
    base = os.environ.get("XDG_CONFIG_HOME")
    return Path(base) if base else Path(pwd.getpwuid(os.getuid()).pw_dir) / ".config"


def find_profile_file(start: Path) -> Path | None:
    """The nearest project file from `start` upwards, else the user's file, else None."""
    for folder in (start, *start.parents):
        for name in PROJECT_FILES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    user_file = user_config_dir() / USER_FILE
    return user_file if user_file.is_file() else None


def parse_profiles(text: str, path: Path, cwd: Path) -> Loaded:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'profiles:' key")
    defaults = raw.get("defaults") or {}
    profiles = raw.get("profiles")
    if isinstance(profiles, dict) and isinstance(defaults, dict):
        raw = {**raw, "profiles": {name: {**defaults, **(body or {})} for name, body in profiles.items()}}
    try:
        parsed = ProfileFile.model_validate(raw)
    except ValidationError as exc:
        problems = [".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors()]
        raise ConfigError(f"{path}:\n  " + "\n  ".join(problems)) from exc
    in_project = path.name in PROJECT_FILES
    if in_project:
        project = path.parent
    elif parsed.project:
        project = Path(os.path.expanduser(parsed.project))
    else:
        project = cwd
    return Loaded(path=path, project=project.resolve(), profiles=parsed.profiles)


def load_profiles(explicit: Path | None, cwd: Path | None = None) -> Loaded:
    where = (cwd or Path.cwd()).resolve()
    path = explicit or find_profile_file(where)
    if path is None:
        raise ConfigError(f"no profile file: write {PROJECT_FILES[0]} in your project (or "
                          f"{user_config_dir() / USER_FILE}), or pass --profiles FILE")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_profiles(text, path, where)
