"""docs/configuration.md is generated from the settings model; this keeps it in step."""

from __future__ import annotations

from pathlib import Path

from bridge.admin.config_example import config_reference
from bridge.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_configuration_reference_matches_the_settings_model() -> None:
    assert (DOCS / "configuration.md").read_text(encoding="utf-8") == config_reference(), \
        "regenerate it: skbridge config reference > docs/configuration.md"


def test_every_setting_says_what_it_means() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not field.description
               and not hasattr(field.annotation, "model_fields")]
    for name, field in Settings.model_fields.items():
        section = field.annotation
        if hasattr(section, "model_fields"):
            missing += [f"{name}.{key}" for key, sub in section.model_fields.items() if not sub.description]
    assert not missing, f"settings without a description: {missing}"
