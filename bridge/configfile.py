"""The config file and the NAS paths derived from it, without the settings model's cost.

`bridge.settings` (pydantic, ~0.15 s of CPU to import) is the one settings model. Every
bridge job's batch step (`skbridge attach`) needs a single value from it, `nas.results_root`,
to find the job's folder; paying for the whole model per job is most of attach's start-up.

One source of truth, not a second parser: this module holds what both need, and
`bridge.settings` uses it: which file is read (`config_file`), how it is read
(`read_config_mapping`), the NAS defaults, and the rule that joins a relative folder to
`nas.root` (`under_root`). `results_root` applies pydantic-settings' own environment rules
(`SKBRIDGE_NAS__ROOT`, `SKBRIDGE_NAS` as JSON, names in any case, environment over file) to
the two keys it reads; a unit test holds it equal to `load_settings(...).nas.results_root`.
A disagreement could cost attach only its fast path, never a wrong job: attach checks that
the credential it finds there names its own job and attempt, and otherwise loads the full
settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/slurm-k8s-bridge/config.yaml")
CONFIG_ENV = "SKBRIDGE_CONFIG"
ENV_PREFIX = "SKBRIDGE_"
ENV_NESTED_DELIMITER = "__"
DEFAULT_NAS_ROOT = Path("/mnt/nas")
DEFAULT_RESULTS_DIR = Path("results")


def config_file(path: Path | None = None) -> Path | None:
    """The YAML file the settings come from: `path`, $SKBRIDGE_CONFIG, or the default if present."""
    if path is not None:
        return path
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def read_config_mapping(path: Path | None) -> dict[str, Any]:
    """The file's top-level mapping ({} for no file or an empty one); ConfigError names the problem."""
    if path is None:
        return {}
    import yaml  # ~15 ms with the C loader; only when there is a file

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def under_root(root: Path, path: Path) -> Path:
    """A NAS folder setting: absolute as given, otherwise below `nas.root`."""
    return path if path.is_absolute() else root / path


def env_section(environ: Mapping[str, str], section: str) -> dict[str, Any]:
    """pydantic-settings' reading of one section from the environment: `SKBRIDGE_<SECTION>` as a
    JSON object, then `SKBRIDGE_<SECTION>__<KEY>` over it; names match in any case."""
    lowered = {name.lower(): value for name, value in environ.items()}
    prefix = f"{ENV_PREFIX}{section}".lower()
    found: dict[str, Any] = {}
    whole = lowered.get(prefix)
    if whole:
        try:
            parsed = json.loads(whole)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            found.update(parsed)
    nested = prefix + ENV_NESTED_DELIMITER.lower()
    for name, value in lowered.items():
        if name.startswith(nested) and ENV_NESTED_DELIMITER not in name[len(nested):]:
            found[name[len(nested):]] = value
    return found


def results_root(raw: Mapping[str, Any], environ: Mapping[str, str]) -> Path:
    """`nas.results_root` from the config file's mapping and the environment, as the model derives it."""
    section = raw.get("nas")
    nas: dict[str, Any] = dict(section) if isinstance(section, Mapping) else {}
    nas.update(env_section(environ, "nas"))
    root = Path(nas.get("root") or DEFAULT_NAS_ROOT)
    return under_root(root, Path(nas.get("results_dir") or DEFAULT_RESULTS_DIR))
