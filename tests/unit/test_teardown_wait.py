"""wait_gone: how often the epilog asks the API server whether a job's objects are gone."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from bridge.kubernetes.client import Kube
from bridge.kubernetes.objects import ObjectRef, wait_gone

pytestmark = pytest.mark.unit


class _GoingAway:
    """Answers GETs as an API server would while objects go, each at its own moment."""

    def __init__(self, gone_after_s: dict[str, float]) -> None:
        self._started = time.monotonic()
        self._gone_after_s = gone_after_s
        self.asked: list[str] = []

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        self.asked.append(path)
        return None if time.monotonic() - self._started >= self._gone_after_s[path] else {"metadata": {}}


REFS = [ObjectRef("PersistentVolume", "v", None), ObjectRef("Pod", "p", "ns"),
        ObjectRef("PersistentVolumeClaim", "c", "ns"), ObjectRef("Role", "r", "ns")]


def test_only_the_first_object_left_is_asked_about_in_dependency_order() -> None:
    # The Pod takes 0.6 s to stop; its claim and volume follow at once; the Role went at once.
    api = _GoingAway({REFS[1].path: 0.6, REFS[3].path: 0.0, REFS[2].path: 0.65, REFS[0].path: 0.7})
    assert wait_gone(cast(Kube, api), REFS, timeout_s=5) == []
    pod_asks = api.asked.count(REFS[1].path)
    assert 3 <= pod_asks <= 8, api.asked  # 50 ms doubling to 0.5 s, not every 0.2 s for all four
    assert api.asked[:pod_asks] == [REFS[1].path] * pod_asks, "nothing else is asked while the Pod is there"
    assert len(api.asked) <= pod_asks + 3 + 4, api.asked


def test_what_is_left_at_the_deadline_is_named() -> None:
    api = _GoingAway({REFS[1].path: 60.0, REFS[3].path: 0.0, REFS[2].path: 60.0, REFS[0].path: 60.0})
    started = time.monotonic()
    left = wait_gone(cast(Kube, api), REFS, timeout_s=0.5)
    assert time.monotonic() - started < 1.5
    assert left == [REFS[1], REFS[2], REFS[0]], "the Role went; the Pod, its claim and volume are still there"
