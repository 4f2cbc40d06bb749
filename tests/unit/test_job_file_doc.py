"""docs/job-file.md stays true to the parser: every #K8S_ directive, every allowed #SBATCH
option and every refused one (with its reason) is the code's own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.jobfile.sbatch_policy import ALLOWED_SBATCH, FORBIDDEN_WHY
from bridge.jobfile.spec import K8S_KEYS

pytestmark = pytest.mark.unit

DOC = (Path(__file__).resolve().parents[2] / "docs" / "job-file.md").read_text()


def test_every_directive_is_documented_and_no_other() -> None:
    documented = set(re.findall(r"^\| `#K8S_([A-Z]+)=", DOC, flags=re.MULTILINE))
    assert documented == set(K8S_KEYS)


def test_the_allowed_options_are_the_policys() -> None:
    section = DOC.split("These are allowed:", 1)[1].split("These are refused", 1)[0]
    assert set(re.findall(r"`--([a-z-]+)`", section)) == set(ALLOWED_SBATCH)


def test_every_refused_option_has_the_policys_reason() -> None:
    rows = dict(re.findall(r"^\| `--([a-z-]+)` \| (.+?) \|$", DOC, flags=re.MULTILINE))
    assert rows == FORBIDDEN_WHY
