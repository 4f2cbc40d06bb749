"""Each benchmark runs in its --quick mode against the sandbox and prints its ratio line.

Benchmarks measure, they do not judge: this smoke test only keeps them runnable. Full runs
and their figures are in bench/RESULTS.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Sandbox

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("script", ["drop_burst.py", "pickup_latency.py", "prolog.py", "end_to_end.py", "idle.py",
                                    "queue_scale.py", "soak.py"])
def test_benchmark_runs_in_quick_mode(script: str, sandbox: Sandbox) -> None:
    done = subprocess.run([sys.executable, str(BENCH / script), "--quick"], capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "ratio" in done.stdout, done.stdout
