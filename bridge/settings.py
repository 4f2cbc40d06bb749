"""The bridge's one settings model.

Loaded from a YAML file (`/etc/slurm-k8s-bridge/config.yaml`, or `$SKBRIDGE_CONFIG`), with
environment overrides such as `SKBRIDGE_INGEST__POLL_INTERVAL_S=0.5` (double underscore
between levels). Every field states its unit in its name and has a safe default; a bad
value fails at start with a message naming the key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.configfile import (
    DEFAULT_NAS_ROOT,
    DEFAULT_RESULTS_DIR,
    config_file,
    read_config_mapping,
    under_root,
)
from bridge.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SharedVolume(_Section):
    """A named NAS directory users may mount with `#K8S_MOUNT=NAME:/path[:ro|rw]`."""

    path: Path = Field(description="Directory on the NAS, absolute or relative to nas.root")
    read_only: bool = Field(default=True, description="Force read-only whatever the job asks")


class NasSettings(_Section):
    root: Path = Field(default=DEFAULT_NAS_ROOT, description="Mount point of the lab's NAS on this host")
    jobs_dir: Path = Field(default=Path("slurm-jobs"), description="Drop-folder tree, relative to root")
    results_dir: Path = Field(default=DEFAULT_RESULTS_DIR, description="results/<user>/<jobid>/, relative to root")
    home_dir: Path = Field(default=Path("home"), description="Per-user NAS directories home/<user>, relative to root")
    shared_volumes: dict[str, SharedVolume] = Field(
        default_factory=dict, description="Named NAS directories jobs may mount with #K8S_MOUNT=NAME:/path[:ro|rw]")
    server: str | None = Field(default=None, description="NFS server for PVs; None = hostPath (single host)")

    def _abs(self, path: Path) -> Path:
        # The same rule `skbridge attach` applies without this model (bridge.configfile).
        return under_root(self.root, path)

    @property
    def jobs_root(self) -> Path:
        return self._abs(self.jobs_dir)

    @property
    def submit_dir(self) -> Path:
        return self.jobs_root / "submit"

    @property
    def processing_dir(self) -> Path:
        return self.jobs_root / "processing"

    @property
    def accepted_dir(self) -> Path:
        return self.jobs_root / "accepted"

    @property
    def failed_dir(self) -> Path:
        return self.jobs_root / "failed"

    @property
    def results_root(self) -> Path:
        return self._abs(self.results_dir)

    @property
    def home_root(self) -> Path:
        return self._abs(self.home_dir)

    def shared_volume_path(self, name: str) -> Path:
        return self._abs(self.shared_volumes[name].path)


class SlurmSettings(_Section):
    conf_path: Path | None = Field(default=None, description="slurm.conf for the bridge's Slurm commands; None = Slurm's default")
    bin_dir: Path = Field(default=Path("/usr/bin"), description="Where sbatch, scontrol, squeue and sacct live")
    command_timeout_s: float = Field(default=30.0, gt=0, description="Deadline for one Slurm command (sbatch, scontrol, ...)")
    partition: str | None = Field(default=None, description="Partition for jobs that name none; None = Slurm's default")
    skbridge_path: Path = Field(default=Path("/opt/slurm-k8s-bridge/bin/skbridge"),
                                description="Absolute path of skbridge on every node; the launcher line runs it")
    attach_config_path: Path | None = Field(
        default=None, description="Config file the launcher line hands to `skbridge attach`; None = its default path")
    hook_socket_path: Path | None = Field(
        default=Path("/run/slurm-k8s-bridge/hooks.sock"),
        description="Root-only socket on which the watcher runs the Slurm hooks warm (no Python start-up per job); "
                    "the hooks run as their own processes when it is absent. None = the watcher does not serve it")
    hooks_at_once: int = Field(
        default=16, ge=1,
        description="How many prologs, and apart from them how many epilogs, the watcher runs at once; more wait "
                    "their turn. Past what the API server and this host's CPUs carry, more at once only makes "
                    "every one slower, until API requests time out and jobs are requeued for nothing")

    def env(self) -> dict[str, str]:
        env = {"PATH": f"{self.bin_dir}:/usr/bin:/bin", "LANG": "C.UTF-8"}
        if self.conf_path is not None:
            env["SLURM_CONF"] = str(self.conf_path)
        return env


class KubernetesSettings(_Section):
    kubeconfig: Path = Field(default=Path("/etc/slurm-k8s-bridge/kubeconfig"), description="The bridge's root-only kubeconfig")
    namespace: str = Field(default="slurm-bridge", description="Namespace of every per-job object; must match deploy/kubernetes")
    pod_template: Path | None = Field(default=None, description="Jinja2 Pod template; None = the shipped pod-template.yaml")
    node_map: dict[str, str] = Field(default_factory=dict, description="Slurm node -> Kubernetes node; identity when absent")
    node_label: str | None = Field(
        default=None, description="A Kubernetes node label whose value is the Slurm node's name (e.g. "
                                  "slurm.schedmd.com/node): a Slurm node without a node_map entry maps to the one "
                                  "Kubernetes node carrying it; null: same name")
    gpu_resource: str = Field(default="nvidia.com/gpu", description="Extended resource name of GPUs on the nodes")
    gpu_mode: Literal["count", "indices"] = Field(
        default="count", description="count: request N GPUs from the device plugin; indices: pass Slurm's indices")
    pod_ready_timeout_s: float = Field(default=90.0, gt=0, description="Must stay below Slurm's PrologEpilogTimeout")
    termination_grace_period_s: int = Field(default=20, ge=0, description="Must stay below Slurm's KillWait")
    api_timeout_s: float = Field(default=10.0, gt=0, description="Deadline for one Kubernetes API request")
    unschedulable_grace_s: float = Field(default=10.0, ge=0, description="How long Unschedulable may last before requeue")
    max_prolog_attempts: int = Field(default=5, ge=1, description="After this many requeues the job is failed, not requeued")
    teardown_timeout_s: float = Field(default=60.0, gt=0, description="Epilog: wait this long for objects to be gone")
    test_image: str | None = Field(default=None, description="Image for `skbridge test-suite`'s hello job; the nodes "
                                   "should hold it (default: busybox:1.36 from the first allowed registry)")

    def kube_node(self, slurm_node: str) -> str:
        return self.node_map.get(slurm_node, slurm_node)


class IngestSettings(_Section):
    poll_interval_s: float = Field(default=2.0, gt=0, description="scandir period; the rule on NFS")
    settle_s: float = Field(default=2.0, ge=0, description="size/mtime/inode stable this long = complete")
    hint_settle_s: float = Field(default=0.25, ge=0,
                                 description="With inotify: a file written in place (not renamed in) is complete once "
                                 "its writer closed it and nothing touched it for this long")
    absence_confirm_s: float = Field(default=5.0, ge=0,
                                     description="After an ambiguous sbatch failure, the tag must be missing from two "
                                     "complete Slurm lookups this far apart before the file is submitted again")
    user_folders_refresh_s: float = Field(default=60.0, gt=0,
                                          description="How often the watcher creates missing submit/<user>/ folders")
    use_inotify: bool = Field(default=True, description="inotify as a hint to shorten the delay where it works")
    max_concurrent_sbatch: int = Field(default=4, ge=1, description="sbatch calls in flight at once (back-pressure on slurmctld)")
    retry_initial_s: float = Field(default=5.0, gt=0, description="First wait before retrying a file after a temporary failure")
    retry_max_s: float = Field(default=300.0, gt=0, description="Longest wait between retries (exponential back-off)")
    journal_path: Path = Field(default=Path("/var/lib/slurm-k8s-bridge/journal.sqlite"),
                               description="Write-ahead journal of dropped files (SQLite WAL, local disk)")
    lock_path: Path = Field(default=Path("/run/slurm-k8s-bridge/watcher.lock"), description="One watcher per host")
    reaper_interval_s: float = Field(default=60.0, gt=0, description="How often the reaper looks for leftovers")
    reaper_grace_s: float = Field(default=300.0, ge=0,
                                  description="Leave a just-ended job to its epilog this long (> PrologEpilogTimeout)")


class RetentionSettings(_Section):
    """How long finished things are kept. Applied by the watcher every `interval_s` (and on
    demand by `skbridge admin retention`); a job still queued or running is never touched.
    null keeps forever."""

    accepted_days: float | None = Field(default=90, gt=0, description="Archived job files in accepted/")
    failed_days: float | None = Field(default=30, gt=0, description="Rejected files in failed/, with their .error")
    journal_days: float | None = Field(default=30, gt=0, description="Finished entries of the drop journal")
    results_days: float | None = Field(default=None, gt=0, description="Job folders in results/<user>/ (null: keep)")
    results_max_gib_per_user: float | None = Field(
        default=None, gt=0, description="Per user: oldest finished job folders go first above this size (null: no cap)")
    history_days: float | None = Field(default=365, gt=0, description="Finished jobs in the job history (history.path)")
    interval_s: float = Field(default=3600.0, gt=0, description="How often the watcher applies retention")


class PolicySettings(_Section):
    """What a job file may ask for. Checked by `skbridge validate`, the watcher and the prolog."""

    uid_min: int = Field(default=1000, ge=1, description="Lowest uid that may own a job (system accounts stay out)")
    uid_max: int = Field(default=60000, ge=1, description="Highest uid that may own a job")
    max_file_bytes: int = Field(default=1 << 20, gt=0, description="Largest job file the watcher reads")
    allowed_registries: list[str] = Field(default_factory=lambda: ["registry.lab:5000"],
                                          description="#K8S_IMAGE must come from one of these")
    max_cpus_per_task: int = Field(default=64, ge=1, description="Site maximum of CPUs per job")
    max_mem_mib: int = Field(default=512 * 1024, ge=1, description="Site maximum of memory per job")
    max_gpus: int = Field(default=8, ge=0, description="Site maximum of GPUs per job (every GPU option counts)")
    max_time_minutes: int = Field(default=7 * 24 * 60, ge=1, description="Site maximum time limit; unlimited is refused")
    max_array_tasks: int = Field(default=100, ge=0, description="Site maximum of tasks in one job array")
    default_image: str | None = Field(
        default=None, description="Image for a job without #K8S_IMAGE (a plain script, sbatch --wrap); null: such a "
                                  "job is refused with a reason the user sees")
    host_accounts: list[str] = Field(
        default_factory=list, description="Slurm accounts whose jobs without #K8S_IMAGE may run on the bare host "
                                          "(admins' maintenance); everyone else's always run in a Pod")
    host_partitions: list[str] = Field(
        default_factory=list, description="Partitions whose jobs without #K8S_IMAGE may run on the bare host")
    max_nodes: int = Field(default=4, ge=1, description="Most nodes one job may span (one Pod per node, all Ready "
                                                        "before any starts its script)")


def _yaml_file() -> Path | None:
    return config_file(None)


class _YamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return read_config_mapping(self._path)


class ServiceSettings(_Section):
    """`skbridge serve`: the REST API for authenticated lab users (optional; see systemd/skbridge-serve.service)."""

    bind_host: str = Field(default="127.0.0.1", description="Address the service listens on; loopback unless a "
                           "TLS-terminating proxy is in front")
    port: int = Field(default=8642, ge=1, le=65535, description="TCP port of the service")
    admin_group: str | None = Field(default=None, description="Unix group whose members see every user's jobs "
                                    "(null: nobody does)")
    token_ttl_s: float = Field(default=600.0, gt=0, le=900, description="Lifetime of a bearer token from "
                               "POST /api/v1/token (at most 15 minutes)")
    unmunge_path: Path = Field(default=Path("/usr/bin/unmunge"), description="unmunge, which checks a client's "
                               "MUNGE credential with the local munged")
    default_since: str = Field(default="now-7days", description="GET /api/v1/jobs without `since`: jobs from this "
                               "Slurm time on")
    session_ttl_s: float = Field(default=28800.0, gt=0, le=86400, description="Lifetime of a dashboard sign-in "
                                 "(the browser's session cookie; a restart of the service ends every session)")
    login_ticket_ttl_s: float = Field(default=60.0, gt=0, le=300, description="How long the one-time sign-in link "
                                      "that `skbridge dashboard` prints stays valid")


class MetricsSettings(_Section):
    """The watcher's Prometheus endpoint (`/metrics`); `skbridge serve` exports its own on the service's port."""

    listen_address: str = Field(default="127.0.0.1", description="Address the watcher's /metrics listens on "
                                "(loopback unless Prometheus scrapes from another host); empty: no endpoint")
    port: int = Field(default=9642, ge=0, le=65535, description="TCP port of the watcher's /metrics; 0: no endpoint")


class HistorySettings(_Section):
    """The job history `skbridge serve` lists jobs from, fed by the watcher, the hooks and the service."""

    path: Path = Field(default=Path("/var/lib/slurm-k8s-bridge/history.sqlite"),
                       description="Job history (SQLite WAL, local disk of the controller host, root's alone)")
    busy_timeout_s: float = Field(default=0.5, gt=0, le=10, description="Longest wait for another writer's lock; "
                                  "a hook or the watcher then goes on without writing (the job never waits on it)")
    live_refresh_s: float = Field(default=2.0, ge=0, description="GET /api/v1/jobs: how old the live Slurm state "
                                  "merged into unfinished jobs may be (one squeue per user at most this often)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SKBRIDGE_", env_nested_delimiter="__", extra="forbid", frozen=True)

    nas: NasSettings = Field(default_factory=NasSettings)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Least severe level logged")
    hook_log_path: Path = Field(default=Path("/var/log/slurm-k8s-bridge/hooks.log"),
                                description="JSON log of the Slurm hooks (slurmctld discards their output)")
    job_records_dir: Path = Field(
        default=Path("/var/lib/slurm-k8s-bridge/jobs"),
        description="Root-only record of each job's attempts (local disk of the controller host); what the epilog "
                    "and the reaper trust, unlike anything in the user's results folder")

    @field_validator("policy")
    @classmethod
    def _uid_range(cls, value: PolicySettings) -> PolicySettings:
        if value.uid_min > value.uid_max:
            raise ValueError("uid_min must not exceed uid_max")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then environment, then the YAML file.
        return (init_settings, env_settings, _YamlSource(settings_cls, _YAML_PATH_OVERRIDE or _yaml_file()))


_YAML_PATH_OVERRIDE: Path | None = None


def config_file_in_effect(path: Path | None = None) -> Path | None:
    """The YAML file `load_settings(path)` reads: `path`, $SKBRIDGE_CONFIG, or the default if present."""
    return path or _yaml_file()


def config_digest(path: Path | None) -> str | None:
    """sha256 of the config file's bytes (None: no file), to tell a stale running watcher."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def load_settings(path: Path | None = None) -> Settings:
    """Load settings; raises ConfigError naming the offending key on any problem."""
    global _YAML_PATH_OVERRIDE  # noqa: PLW0603 - pydantic-settings sources take no arguments
    _YAML_PATH_OVERRIDE = path
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"])
            problems.append(f"{key}: {err['msg']}")
        source = path or _yaml_file() or "defaults/environment"
        raise ConfigError(f"invalid configuration ({source}):\n  " + "\n  ".join(problems)) from exc
    finally:
        _YAML_PATH_OVERRIDE = None
