"""Issue 17: Slurm node -> Kubernetes node mapping, against the sandbox's real node and API server.

The config's node map and node label are honoured by the prolog's lookup, `skbridge nodes` and
the test-suite; a node on one side only, or a stale map entry, is flagged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.kubernetes.nodemap import NodeMappingError, kube_node_for
from bridge.settings import load_settings
from tests.conftest import Sandbox
from tests.jobs.conftest import Jobs, job_script

SKBRIDGE = str(Path(sys.executable).parent / "skbridge")
NODE_CHECK = "Slurm nodes map to Kubernetes nodes with the same CPUs, memory and GPUs"
SANDBOX_LABEL = "slurm.schedmd.com/node"  # the sandbox's kubelet node carries it with its Slurm name


def config_with(sandbox: Sandbox, tmp_path: Path, **kubernetes: Any) -> Path:
    data = yaml.safe_load(sandbox.layout.bridge_config.read_text())
    data["kubernetes"].update(kubernetes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def node_check(config: Path) -> dict[str, Any]:
    out = subprocess.run([SKBRIDGE, "test-suite", "--json", "--only", "kubernetes", "--config", str(config)],
                         capture_output=True, text=True, timeout=120, check=False)
    return next(r for r in json.loads(out.stdout)["results"] if r["name"] == NODE_CHECK)


def nodes_view(config: Path) -> dict[str, Any]:
    out = subprocess.run([SKBRIDGE, "nodes", "--json", "--config", str(config)], capture_output=True, text=True,
                         timeout=60, check=True)
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def test_a_map_entry_to_itself_passes_and_a_stale_entry_is_flagged(sandbox: Sandbox, tmp_path: Path) -> None:
    node = sandbox.node_name
    good = node_check(config_with(sandbox, tmp_path, node_map={node: node}))
    assert good["outcome"] == "PASS", good
    assert f"{node}->{node}(16 CPUs, 4 GPUs)" in good["detail"]
    stale = node_check(config_with(sandbox, tmp_path, node_map={node: node, "ghost07": "ghost07"}))
    assert stale["outcome"] == "FAIL"
    assert stale["detail"] == "kubernetes.node_map names Slurm node ghost07, which Slurm does not have"


def test_a_node_mapped_to_nowhere_is_flagged_on_both_sides(sandbox: Sandbox, tmp_path: Path) -> None:
    node = sandbox.node_name
    config = config_with(sandbox, tmp_path, node_map={node: "no-such-node"})
    result = node_check(config)
    assert result["outcome"] == "FAIL"
    assert f"Slurm node {node} has no Kubernetes node (kubernetes.node_map names no-such-node)" in result["detail"]
    assert f"Kubernetes node {node} has no Slurm node" in result["detail"]
    view = nodes_view(config)
    assert [row["kubernetes"] for row in view["nodes"] if row["name"] == node] == ["missing"]
    assert node in view["kubernetes_only"]


def test_the_node_label_maps_by_the_real_nodes_label(sandbox: Sandbox, tmp_path: Path, jobs: Jobs) -> None:
    node = sandbox.node_name
    config = config_with(sandbox, tmp_path, node_label=SANDBOX_LABEL)
    assert node_check(config)["outcome"] == "PASS"
    view = nodes_view(config)
    assert [(row["kubernetes"], row["kubernetes_node"], row["disagreements"]) for row in view["nodes"]
            if row["name"] == node] == [("Ready", node, [])]
    # The prolog's lookup: one label-selected GET against the real API server.
    settings = load_settings(config).kubernetes
    assert kube_node_for(settings, node, jobs.kube) == node
    with pytest.raises(NodeMappingError, match=f"0 Kubernetes nodes carry {SANDBOX_LABEL}=ghost07"):
        kube_node_for(settings, "ghost07", jobs.kube)
    wrong = config_with(sandbox, tmp_path, node_label="skbridge.io/no-such-label")
    assert f"Slurm node {node} has no Kubernetes node (no single node labelled" in node_check(wrong)["detail"]


def test_the_prolog_pins_the_pod_to_the_mapped_node(jobs: Jobs, sandbox: Sandbox) -> None:
    """The watcher's own config (identity): the Pod lands on the node and the record says which."""
    job_id = jobs.sbatch("skbalice", job_script(env=("SANDBOX_RUN_DURATION=1s",)))
    assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")
    jobs.wait_no_objects(job_id)  # the epilog collects before it tears down
    summary = json.loads((jobs.results("skbalice", job_id) / "summary.json").read_text())
    # Whichever of the sandbox's nodes Slurm chose (the host's own while it is completing
    # another job, Slurm may pick the second): the Kubernetes node of the same name.
    allocated = sandbox.slurm("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "NodeList").stdout.strip()
    assert allocated in {node.name for node in sandbox.layout.nodes}
    assert summary["node"] == allocated
    assert summary["kubernetes_node"] == allocated
    assert summary["attempts"][-1]["kube_node"] == allocated
