"""The user commands, run as lab users (never root) against the real sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Sandbox
from tests.jobs.conftest import Jobs, jobs  # noqa: F401

SKBRIDGE = str(Path(sys.executable).parent / "skbridge")


@dataclass
class Cli:
    """`skbridge ...` as a lab user, from the user's NAS folder, with the sandbox's environment."""

    sandbox: Sandbox
    jobs: Jobs

    def run(self, user: str, *args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", user, "--", SKBRIDGE, *args], env={**self.sandbox.env, "COLUMNS": "200"},
                              cwd=str(cwd or self.jobs.home(user)), capture_output=True, text=True, timeout=timeout,
                              check=False)

    def json(self, user: str, *args: str) -> Any:
        done = self.run(user, *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def submit(self, user: str, name: str, text: str, *args: str) -> str:
        self.jobs.write_script(user, name, text)
        done = self.run(user, "submit", "--parsable", *args, name)
        assert done.returncode == 0, done.stderr + done.stdout
        job_id = done.stdout.strip()
        assert job_id.isdigit(), done.stdout
        self.jobs.submitted.append(job_id)
        return job_id


@pytest.fixture
def cli(sandbox: Sandbox, jobs: Jobs) -> Cli:  # noqa: F811
    return Cli(sandbox=sandbox, jobs=jobs)
