"""Shared fixtures: the real sandbox (Slurm + Kubernetes), started once per test session.

Tests never mock Slurm or Kubernetes; they talk to the sandbox that `skbridge sandbox up`
runs. A running sandbox is reused; a stopped one is started (and left running, so the next
run starts in seconds).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from bridge.sandbox import k8s_build, kube_cluster, manager
from bridge.sandbox.layout import SandboxLayout

UNIT_DIR = Path(__file__).parent / "unit"


# Suites that take minutes each: faults injected into the shared sandbox (daemons stopped,
# disks filled, jobs ending every way) and the benchmarks' quick runs. `make test` leaves them
# out to stay well under CI's 40 minutes; `make test-slow` runs them (CI with CI_SLOW=1).
SLOW_DIRS = (Path(__file__).parent / "faults", Path(__file__).parent / "bench")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`-m unit` selects tests/unit (no sandbox); everything else is marked `sandbox`; the
    fault and benchmark suites (and tests marked so themselves) are also `slow`."""
    for item in items:
        parents = Path(str(item.fspath)).parents
        in_unit = UNIT_DIR in parents
        item.add_marker(pytest.mark.unit if in_unit else pytest.mark.sandbox)
        if any(folder in parents for folder in SLOW_DIRS):
            item.add_marker(pytest.mark.slow)


@dataclass
class Sandbox:
    layout: SandboxLayout
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.layout.env()}

    @property
    def node_name(self) -> str:
        return self.layout.node.name

    @property
    def kubectl(self) -> str:
        return str(k8s_build.bin_dir() / "kubectl")

    def slurm(self, *argv: str, check: bool = True, user: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = list(argv) if user is None else ["runuser", "-u", user, "--", *argv]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60, check=check)


def wait_for(check: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


TEST_USERS = {"skbalice": 1501, "skbbob": 1502}


def ensure_user(name: str, uid: int) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--uid", str(uid), "--create-home", "--shell", "/bin/bash", name], check=True)
        return pwd.getpwnam(name)


@pytest.fixture(scope="session")
def users() -> dict[str, pwd.struct_passwd]:
    """Lab users that own job files and run jobs (the bridge refuses root)."""
    return {name: ensure_user(name, uid) for name, uid in TEST_USERS.items()}


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    layout = SandboxLayout.default()
    manager.up(layout, lambda message: None)
    return Sandbox(layout=layout, api=kube_cluster.admin_api(layout))


@pytest.fixture
def test_namespace(sandbox: Sandbox) -> Iterator[str]:
    """A throwaway namespace for tests that create raw Pods outside the bridge's namespace."""
    name = f"skbtest-{uuid.uuid4().hex[:8]}"
    sandbox.core.create_namespace({"metadata": {"name": name}})
    # The ServiceAccount controller creates `default` asynchronously; Pods need it.
    wait_for(lambda: any(sa.metadata.name == "default" for sa in sandbox.core.list_namespaced_service_account(name).items),
             timeout_s=30, what="default service account")
    yield name
    sandbox.core.delete_namespace(name)


@pytest.fixture
def tmp_job_dir(tmp_path: Path) -> Path:
    # Slurm runs batch scripts as their user; make the directory reachable for any uid.
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:
        if parent == Path("/"):
            break
        try:
            parent.chmod(parent.stat().st_mode | 0o011)
        except PermissionError:
            break
    return tmp_path
