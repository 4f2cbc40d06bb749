"""A production install carries neither the sandbox nor its dependencies: the CLI works without
`cryptography`, and a built wheel holds no `bridge/sandbox`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

BLOCK_CRYPTOGRAPHY = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'cryptography' or name.startswith('cryptography.'):\n"
    "            raise ImportError(name=name)\n"
    "        return None\n"
    "sys.meta_path.insert(0, Block())\n"
    "sys.argv = ['skbridge'] + sys.argv[1:]\n"
    "from bridge.cli.main import app\n"
    "app()\n"
)


def _skbridge_without_cryptography(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK_CRYPTOGRAPHY, *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_the_cli_runs_without_the_sandbox_extra() -> None:
    done = _skbridge_without_cryptography("--help")
    assert done.returncode == 0, done.stderr
    assert "validate" in done.stdout and "sandbox" in done.stdout


def test_the_sandbox_command_says_what_is_missing() -> None:
    done = _skbridge_without_cryptography("sandbox", "status")
    assert done.returncode == 2
    assert "pip install -e '.[sandbox]'" in done.stderr and "cryptography" in done.stderr


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                           str(REPO)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    [built] = out.glob("slurm_k8s_bridge-*.whl")
    return built


def test_a_built_package_leaves_the_sandbox_out(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert not [name for name in names if name.startswith("bridge/sandbox/")]
    assert "bridge/cli/sandbox.py" in names and "bridge/hooks/attach.py" in names
    assert any(name.startswith("bridge/data/dashboard/templates/") for name in names), "package data still ships"


def test_without_the_sandbox_package_the_command_says_so() -> None:
    block = BLOCK_CRYPTOGRAPHY.replace("name == 'cryptography' or name.startswith('cryptography.')",
                                      "name == 'bridge.sandbox' or name.startswith('bridge.sandbox.')")
    done = subprocess.run([sys.executable, "-c", block, "sandbox", "up"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2
    assert "development tool" in done.stderr and "git checkout" in done.stderr
