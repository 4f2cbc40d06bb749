"""A production install carries no sandbox dependency: the CLI works without `cryptography`."""

from __future__ import annotations

import subprocess
import sys

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
    assert "slurm-k8s-bridge[sandbox]" in done.stderr and "cryptography" in done.stderr
