"""The Pod template renders a reference job into exactly the pinned objects (golden file)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from bridge.errors import ConfigError
from bridge.kubernetes.render import ANNOTATION_SPEC_HASH, render_job
from bridge.settings import Settings
from bridge.slurm.jobinfo import JobAllocation, NodeAllocation

GOLDEN = Path(__file__).parent / "golden" / "reference-job.yaml"


@dataclass(frozen=True)
class Mount:
    name: str
    container_path: str
    read_only: bool


@dataclass(frozen=True)
class Directives:
    image: str = "registry.lab:5000/pytorch:2.4"
    workdir: str = "/workspace"
    env: tuple[tuple[str, str], ...] = (("WANDB_MODE", "offline"), ("QUOTE", 'a "b" \\n: {c}'))
    mounts: tuple[Mount, ...] = (Mount("datasets", "/data", True),)
    shm: str | None = "16Gi"
    results: str | None = "/workspace/outputs"
    sbatch_options: tuple[object, ...] = field(default_factory=tuple)


def reference_settings(**kube: object) -> Settings:
    return Settings(
        nas={"root": "/mnt/nas", "shared_volumes": {"datasets": {"path": "shared/datasets", "read_only": True}}},
        kubernetes={"namespace": "slurm-bridge", **kube},
    )


REFERENCE = JobAllocation(
    job_id="4242", name="train-resnet", user="alice", uid=1501, gid=1501, groups=(1501, 2000), partition="gpu",
    restart_count=0, time_limit_minutes=1440, state="CONFIGURING", submit_time=0, start_time=0,
    nodes=(NodeAllocation(node="gpu01", cpus=8, memory_mib=32768, gpus=2, gpu_type="a100", gpu_indices=(1, 3)),),
)
SCRIPT = "#!/bin/bash\n#SBATCH --gres=gpu:a100:2\n#K8S_IMAGE=registry.lab:5000/pytorch:2.4\npython train.py\n"


def _render(settings: Settings) -> list[dict[str, object]]:
    return render_job(settings, REFERENCE, Directives(), SCRIPT).objects


def test_reference_job_matches_golden_file() -> None:
    rendered = yaml.safe_dump_all(_render(reference_settings()), sort_keys=True)
    if os.environ.get("SKBRIDGE_UPDATE_GOLDEN"):
        GOLDEN.write_text(rendered)
    assert rendered == GOLDEN.read_text(), "rendered objects changed; review, then SKBRIDGE_UPDATE_GOLDEN=1 pytest"


def test_pod_pins_node_resources_and_identity() -> None:
    pod = next(o for o in _render(reference_settings()) if o["kind"] == "Pod")
    spec = pod["spec"]
    container = spec["containers"][0]
    assert container["resources"]["requests"] == container["resources"]["limits"] == {
        "cpu": "8", "memory": "32768Mi", "nvidia.com/gpu": "2"}
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchFields"][0]["values"] == ["gpu01"]
    assert spec["securityContext"]["runAsUser"] == 1501 and spec["securityContext"]["supplementalGroups"] == [1501, 2000]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["QUOTE"] == 'a "b" \\n: {c}', "user values must survive YAML quoting unchanged"
    assert env["SLURM_JOB_ID"] == "4242" and env["SLURM_JOB_GPUS"] == "1,3"
    assert spec["restartPolicy"] == "Never" and spec["terminationGracePeriodSeconds"] == 20


def test_indices_mode_passes_slurm_gpu_indices_instead_of_a_count() -> None:
    pod = next(o for o in _render(reference_settings(gpu_mode="indices")) if o["kind"] == "Pod")
    container = pod["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "1,3"} in container["env"]


def test_node_map_translates_slurm_node_names() -> None:
    pod = next(o for o in _render(reference_settings(node_map={"gpu01": "k8s-gpu-01"})) if o["kind"] == "Pod")
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchFields"][0]["values"] == ["k8s-gpu-01"]


def test_pv_and_pvc_are_bound_to_each_other_only() -> None:
    objects = _render(reference_settings())
    pvs = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolume"}
    pvcs = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}
    assert set(pvs) == set(pvcs) == {"skb-4242-r0-home", "skb-4242-r0-vol-datasets"}
    for name, pv in pvs.items():
        assert pv["spec"]["claimRef"] == {"namespace": "slurm-bridge", "name": name}
        assert pvcs[name]["spec"]["volumeName"] == name
    assert pvs["skb-4242-r0-home"]["spec"]["hostPath"]["path"] == "/mnt/nas/home/alice"


def test_spec_hash_is_deterministic() -> None:
    first = [o["metadata"]["annotations"][ANNOTATION_SPEC_HASH] for o in _render(reference_settings())]
    second = [o["metadata"]["annotations"][ANNOTATION_SPEC_HASH] for o in _render(reference_settings())]
    assert first == second


def test_broken_template_names_its_line(tmp_path: Path) -> None:
    template = tmp_path / "broken.yaml"
    template.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {{ job.nope.deeper }}\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:4"):
        _render(reference_settings(pod_template=str(template)))
    template.write_text("apiVersion: v1\n{% if %}\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:2: template syntax error"):
        _render(reference_settings(pod_template=str(template)))


def _env(allocation: JobAllocation, **kube: object) -> dict[str, str]:
    pod = next(o for o in render_job(reference_settings(**kube), allocation, Directives(), SCRIPT).objects
               if o["kind"] == "Pod")
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}  # type: ignore[index]


def test_gpu_variables_name_the_jobs_gpus_and_a_cpu_job_sees_none() -> None:
    import dataclasses

    for mode in ("count", "indices"):
        env = _env(REFERENCE, gpu_mode=mode)
        # Inside the container only the job's GPUs exist; CUDA numbers them 0..N-1.
        assert (env["SLURM_JOB_GPUS"], env["CUDA_VISIBLE_DEVICES"]) == ("1,3", "0,1")
        assert env.get("NVIDIA_VISIBLE_DEVICES") == ("1,3" if mode == "indices" else None)
        cpu_only = dataclasses.replace(REFERENCE, nodes=(NodeAllocation(node="gpu01", cpus=2, memory_mib=1024),))
        env = _env(cpu_only, gpu_mode=mode)
        assert env["NVIDIA_VISIBLE_DEVICES"] == "void", "images defaulting to NVIDIA_VISIBLE_DEVICES=all must see none"
        assert "CUDA_VISIBLE_DEVICES" not in env and env["SLURM_JOB_GPUS"] == ""


@pytest.mark.parametrize(("work_dir", "given", "expected"), [
    ("/nas/home/alice/proj/run1", False, "/workspace/proj/run1"),   # sbatch's own working directory, in the Pod
    ("/nas/home/alice", False, "/workspace"),
    ("/tmp", False, "/workspace"),                                   # outside the NAS folder: the home mount
    ("/nas/home/alicex/p", False, "/workspace"),                     # a prefix is not a parent
    ("/nas/home/alice/../bob", False, "/workspace"),
    ("", False, "/workspace"),
    ("/nas/home/alice/proj", True, "/data/explicit"),              # #K8S_WORKDIR wins
])
def test_the_pod_starts_where_sbatch_would_have(work_dir: str, given: bool, expected: str) -> None:
    import dataclasses

    from bridge.kubernetes.render import pod_workdir

    spec = type("Spec", (), {"workdir": "/data/explicit" if given else "/workspace", "workdir_given": given})()
    allocation = dataclasses.replace(REFERENCE, work_dir=work_dir)
    assert pod_workdir(spec, allocation, Path("/nas/home/alice")) == expected


def test_the_pods_start_gate_and_script_use_the_annotations_the_prolog_sets() -> None:
    from bridge.kubernetes.render import ANNOTATION_SCRIPT, ANNOTATION_START, START_GATE_OPEN

    pod = next(obj for obj in _render(reference_settings()) if obj["kind"] == "Pod")
    assert pod["metadata"]["annotations"][ANNOTATION_SCRIPT] == SCRIPT  # type: ignore[index]
    gate = next(v for v in pod["spec"]["volumes"] if "downwardAPI" in v)  # type: ignore[index]
    paths = {item["fieldRef"]["fieldPath"] for item in gate["downwardAPI"]["items"]}
    assert paths == {f"metadata.annotations['{ANNOTATION_START}']", f"metadata.annotations['{ANNOTATION_SCRIPT}']"}
    command = pod["spec"]["containers"][0]["command"]  # type: ignore[index]
    assert f'[ "$go" = {START_GATE_OPEN} ]' in command[2] and command[3] == "/skb/script.sh"
