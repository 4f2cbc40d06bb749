"""Where the launcher line goes, and that the Pod gets the user's script back unchanged."""

from __future__ import annotations

from pathlib import Path

from bridge.ingest.launcher import LAUNCHER_MARKER, has_launcher, insert_launcher, strip_launcher

SKB = Path("/opt/slurm-k8s-bridge/bin/skbridge")
SCRIPT = """#!/bin/bash
#SBATCH --mem=1G

# a comment in the header
#K8S_IMAGE=registry.lab:5000/x:1
python train.py
#SBATCH --ignored-by-slurm
echo done
"""


def test_launcher_goes_right_after_the_header() -> None:
    lines = insert_launcher(SCRIPT, SKB).split("\n")
    at = next(i for i, line in enumerate(lines) if LAUNCHER_MARKER in line)
    assert lines[at] == f"exec /opt/slurm-k8s-bridge/bin/skbridge attach  {LAUNCHER_MARKER}"
    assert lines[at + 1] == "python train.py"
    assert lines[at - 1] == "#K8S_IMAGE=registry.lab:5000/x:1"


def test_insertion_is_idempotent_and_reversible() -> None:
    once = insert_launcher(SCRIPT, SKB)
    assert insert_launcher(once, SKB) == once
    assert has_launcher(once) and not has_launcher(SCRIPT)
    assert strip_launcher(once) == SCRIPT


def test_header_only_script_keeps_its_final_newline() -> None:
    text = "#!/bin/bash\n#K8S_IMAGE=r/x:1\n"
    inserted = insert_launcher(text, SKB)
    assert inserted.endswith(f"{LAUNCHER_MARKER}\n")
    assert strip_launcher(inserted) == text


def test_paths_with_spaces_are_quoted() -> None:
    inserted = insert_launcher(SCRIPT, Path("/opt/my tools/skbridge"))
    assert "exec '/opt/my tools/skbridge' attach" in inserted
