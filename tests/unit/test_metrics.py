"""bridge.metrics: closed label sets, the reason table kept complete, and the endpoint's switches."""

from __future__ import annotations

import re
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge import metrics
from bridge.jobfile.problems import Problem

# The drop folder's checks: its own (ingest) and the job file's (jobfile).
CHECKS = (Path(metrics.__file__).parent / "ingest", Path(metrics.__file__).parent / "jobfile")
# The ways bridge/ingest and bridge/jobfile name a problem: problem(LINE, "code", ...), problem("code", ...),
# _problem("code", ...), code="code".
CODE = re.compile(r'(?:\bproblem\(\s*(?:(?:[\w.\[\]]+|max\([^)]*\))\s*,\s*)?|\b_problem\(\s*|\bcode=)"([a-z0-9-]+)"')


def _problem(code: str, severity: str = "error") -> Problem:
    return Problem(line=None, code=code, message="m", expected="e", fix="f", severity=severity)  # type: ignore[arg-type]


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_problem_code_of_the_drop_folder_checks_has_a_reason() -> None:
    codes = {code for folder in CHECKS for path in folder.glob("*.py") for code in CODE.findall(path.read_text())}
    assert {"too-big", "registry-not-allowed", "not-your-folder", "slurm-rejected", "unknown-option"} <= codes
    assert sorted(codes - set(metrics.REJECT_REASONS)) == []
    assert set(metrics.REJECT_REASONS.values()) <= set(metrics.REJECT_REASON_VALUES)


def test_the_reason_is_the_first_errors_kind() -> None:
    assert metrics.rejection_reason([_problem("crlf", "warning"), _problem("registry-not-allowed")]) == "image"
    assert metrics.rejection_reason([_problem("not-your-folder"), _problem("too-big")]) == "folder"
    assert metrics.rejection_reason([_problem("something-new")]) == "other"
    assert metrics.rejection_reason([]) == "other"
    before = _value("skbridge_drop_files_rejected_total", reason="policy")
    metrics.file_rejected([_problem("over-limit")])
    assert _value("skbridge_drop_files_rejected_total", reason="policy") == before + 1


def test_a_skipped_prolog_is_counted_but_its_stages_are_not() -> None:
    stage = {"stage": "slurm_script"}
    before = _value("skbridge_prolog_stage_seconds_count", **stage)
    metrics.prolog_done("skipped", None, {"slurm_script": 0.01}, 0.02)
    assert _value("skbridge_prolog_stage_seconds_count", **stage) == before
    requeues = _value("skbridge_prolog_requeues_total", cause="kube_error")
    metrics.prolog_done("requeued", "kube_error", {"slurm_script": 0.01}, 0.02)
    assert _value("skbridge_prolog_stage_seconds_count", **stage) == before + 1
    assert _value("skbridge_prolog_requeues_total", cause="kube_error") == requeues + 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(("address", "port"), [("127.0.0.1", 0), ("", 9642)])
def test_port_zero_or_no_address_serves_nothing(address: str, port: int) -> None:
    with metrics.serving_metrics(address, port) as server:
        assert server is None


def test_the_endpoint_serves_the_registry_and_a_taken_port_is_not_fatal() -> None:
    port = _free_port()
    with metrics.serving_metrics("127.0.0.1", port) as server:
        assert server is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        names = {family.name for family in text_string_to_metric_families(text)}
        assert {"skbridge_drop_files_seen", "skbridge_prolog_stage_seconds", "process_cpu_seconds"} <= names
        with metrics.serving_metrics("127.0.0.1", port) as second:
            assert second is None  # the same port again: logged, and the caller goes on
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
