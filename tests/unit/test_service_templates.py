"""Job templates render in Jinja2's sandbox and cannot change a job file's lines; the listing's
`since` takes Slurm's time forms; history rows keep the Slurm-backed listing's shape."""

from __future__ import annotations

from datetime import datetime

import pytest

from bridge.errors import PermanentError
from bridge.history.store import JobRecord
from bridge.service.joblist import row_json, since_epoch
from bridge.service.template import TemplateProblem, render_all
from bridge.userview.listing import JobRow

TEMPLATE = "#!/bin/bash\n#SBATCH --job-name=lr-{{ lr }}\n#K8S_IMAGE=img\nn=${#items[@]}; printf '{%s}' x\necho {{ lr }}\n"


def test_one_file_per_parameter_set_with_bash_left_alone() -> None:
    rendered = render_all(TEMPLATE, "train-{{ index }}.sh", [{"lr": 0.1}, {"lr": "0.01"}, {"lr": 1}])
    assert [r.name for r in rendered] == ["train-1.sh", "train-2.sh", "train-3.sh"]
    assert rendered[1].script == ("#!/bin/bash\n#SBATCH --job-name=lr-0.01\n#K8S_IMAGE=img\n"
                                  "n=${#items[@]}; printf '{%s}' x\necho 0.01\n")


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "x\x00", "tab\there", "a\u2028b", "a\x85b", "a\x1eb"])
def test_a_value_that_would_break_lines_is_refused(value: str) -> None:
    with pytest.raises(TemplateProblem) as caught:
        render_all(TEMPLATE, "t.sh", [{"lr": "0.1"}, {"lr": value}])
    assert caught.value.index == 2 and caught.value.code == "value-breaks-lines"


@pytest.mark.parametrize(("template", "params", "code"), [
    ("{{ lr }} {{ missing }}", {"lr": 1}, "template-render"),  # StrictUndefined
    ("{{ lr.__class__.__mro__ }}", {"lr": "x"}, "template-render"),  # the sandbox
    ('{{ "x" * 100000000 }}', {}, "template-render"),
    ('{{ lr ~ "\n#SBATCH --uid=0" }}', {"lr": 1}, "value-breaks-lines"),  # an expression's own line break
    ("{{ lr ", {"lr": 1}, "template-syntax"),
    ("{{ x }}", {"bad-name": 1, "x": 1}, "bad-parameter-name"),
])
def test_templates_that_cannot_make_a_job_file(template: str, params: dict[str, str | int], code: str) -> None:
    with pytest.raises(TemplateProblem) as caught:
        render_all(template, "t.sh", [params])
    assert caught.value.code == code


def test_since_takes_slurms_forms() -> None:
    now = 1_800_000_000.0
    assert since_epoch("now-7days", now=now) == now - 7 * 86400
    assert since_epoch("now-3hours", now=now) == now - 3 * 3600
    assert since_epoch("now-90", now=now) == now - 90
    assert since_epoch("now", now=now) == now
    assert since_epoch("2026-11-20") == datetime(2026, 11, 20).astimezone().timestamp()
    assert since_epoch("2026-11-20T10:00") == datetime(2026, 11, 20, 10, 0).astimezone().timestamp()
    assert since_epoch("today", now=now) <= now
    for bad in ("yesterday-ish", "now-3fortnights", "20261120x"):
        with pytest.raises(PermanentError):
            since_epoch(bad, now=now)


def test_a_history_row_has_the_listings_shape() -> None:
    record = JobRecord(job_id="12", uid=1501, user="alice", name="a.sh", partition="gpu", state="FAILED",
                       submit_time=1_800_000_000.0, start_time=1_800_000_010.0, end_time=1_800_000_070.0,
                       exit_code=3, signal=0, gpus=1, node="vm", results_dir="/nas/results/alice/12",
                       updated_at=1_800_000_070.0)
    row = row_json(record, now=1_800_000_100.0)
    assert set(JobRow.__dataclass_fields__) <= set(row)
    assert (row["exit_code"], row["elapsed_s"], row["start"]) == ("3:0", 60, "2027-01-15T08:00:10Z")
