"""The service as its users meet it: `skbridge serve` started as a real process on a free
loopback port, against the real sandbox (munged, Slurm, the kubelet node, the NAS)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import Sandbox

# The job fixtures (real sbatch as a lab user, the users' NAS folders, scancel at the end).
from tests.jobs.conftest import jobs  # noqa: F401

SKBRIDGE = Path(sys.executable).parent / "skbridge"


def munge_credential(user: str) -> str:
    """A fresh credential made by the user, as `munge -n` run by them would be."""
    done = subprocess.run(["runuser", "-u", user, "--", "munge", "-n"], capture_output=True, text=True, timeout=10,
                          check=True)
    return done.stdout.strip()


def munge_header(user: str) -> dict[str, str]:
    return {"Authorization": f"MUNGE {munge_credential(user)}"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MungeAuth(httpx.Auth):
    """A fresh `munge -n` credential of the user on every request (munged refuses a replayed one)."""

    def __init__(self, user: str) -> None:
        self.user = user

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"MUNGE {munge_credential(self.user)}"
        yield request


@dataclass
class Service:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def client(self, user: str | None = None, *, timeout_s: float = 30.0) -> httpx.Client:
        """A client authenticated as `user` by MUNGE (None: anonymous)."""
        return httpx.Client(base_url=self.url, auth=MungeAuth(user) if user else None, timeout=timeout_s)

    def token(self, user: str) -> str:
        answer = httpx.post(f"{self.url}/api/v1/token", headers=munge_header(user), timeout=30)
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["token"]
        return token

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_service(sandbox: Sandbox, tmp_path: Path, **settings: str) -> Service:
    port = free_port()
    env = {**sandbox.env, "SKBRIDGE_CONFIG": str(sandbox.layout.bridge_config),
           **{f"SKBRIDGE_SERVICE__{key.upper()}": value for key, value in settings.items()}}
    log_path = tmp_path / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(SKBRIDGE), "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    service = Service(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"skbridge serve exited {proc.returncode}: {service.log()}")
        try:
            if httpx.get(f"{service.url}/healthz", timeout=2).status_code == 200:
                return service
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_service(service)
    raise AssertionError(f"skbridge serve did not answer within 30 s: {service.log()}")


def stop_service(service: Service) -> None:
    if service.proc.poll() is None:
        service.proc.terminate()
        try:
            service.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.proc.kill()
            service.proc.wait(timeout=5)


@pytest.fixture
def service(sandbox: Sandbox, users: dict[str, object], tmp_path: Path) -> Iterator[Service]:
    """The service with a short token lifetime (3 s), so expiry is testable."""
    tmp_path.chmod(0o755)
    running = start_service(sandbox, tmp_path, token_ttl_s="3")
    yield running
    stop_service(running)
