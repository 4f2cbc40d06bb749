"""Unit tests are hermetic: no sandbox, and no SKBRIDGE_* variable or config file of the
machine they run on leaks into the settings they build."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _hermetic_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SKBRIDGE_") and name != "SKBRIDGE_UPDATE_GOLDEN":  # a test switch, not a setting
            monkeypatch.delenv(name)
    monkeypatch.setenv("SKBRIDGE_CONFIG", os.devnull)  # an empty file: defaults only, not /etc's config
