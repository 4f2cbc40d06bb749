"""The hook programs' stdlib fast path reads the same settings as everything else (issue 13):
its defaults are the model's, and it agrees with load_settings on a config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.configfile import DEFAULT_CONFIG_PATH
from bridge.hooks import fastpath
from bridge.settings import SlurmSettings, load_settings


def test_the_fast_paths_defaults_are_the_settings_models() -> None:
    assert fastpath.DEFAULT_CONFIG == DEFAULT_CONFIG_PATH
    assert SlurmSettings.model_fields["hook_socket_path"].default == fastpath.DEFAULT_HOOK_SOCKET


@pytest.mark.parametrize("socket_line", ["", "  hook_socket_path: /tmp/x.sock\n", "  hook_socket_path: null\n"])
def test_the_fast_path_reads_what_load_settings_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      socket_line: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"slurm:\n  conf_path: /etc/other/slurm.conf\n  bin_dir: /opt/slurm/bin\n{socket_line}")
    monkeypatch.setenv("SKBRIDGE_CONFIG", str(config))
    section = fastpath._slurm_section()
    settings = load_settings(config)
    assert Path(section["conf_path"]) == settings.slurm.conf_path
    assert Path(section["bin_dir"]) == settings.slurm.bin_dir
    assert fastpath._socket_path(section) == settings.slurm.hook_socket_path


@pytest.mark.parametrize("env", [
    {"SKBRIDGE_SLURM__HOOK_SOCKET_PATH": "/run/other.sock"},
    {"skbridge_slurm__bin_dir": "/usr/local/slurm/bin", "SKBRIDGE_SLURM__CONF_PATH": "/etc/x/slurm.conf"},
    {"SKBRIDGE_SLURM": '{"bin_dir": "/srv/slurm/bin", "hook_socket_path": "/run/json.sock"}'},
    {"SKBRIDGE_SLURM": '{"bin_dir": "/srv/slurm/bin"}', "SKBRIDGE_SLURM__BIN_DIR": "/srv/nested/bin"},
])
def test_environment_overrides_reach_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("slurm:\n  bin_dir: /opt/slurm/bin\n  conf_path: /etc/file/slurm.conf\n")
    monkeypatch.setenv("SKBRIDGE_CONFIG", str(config))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    section = fastpath._slurm_section()
    settings = load_settings(config)
    assert fastpath._socket_path(section) == settings.slurm.hook_socket_path
    assert Path(section["bin_dir"]) == settings.slurm.bin_dir
    assert Path(section["conf_path"]) == settings.slurm.conf_path


@pytest.mark.parametrize(("script", "bridge"), [
    ("#!/bin/bash\n#K8S_IMAGE=registry.lab:5000/x:1\necho hi\n", True),
    ("#!/bin/bash\necho hi\n", False),
    ("#!/bin/bash\necho x\x85#K8S_IMAGE=registry.lab:5000/x:1\n", False),  # job_submit.lua sees one line
    ("#!/bin/bash\necho x\u2028#K8S_IMAGE=registry.lab:5000/x:1\n", False),
    ("#!/bin/bash\necho x\x1c#K8S_IMAGE=registry.lab:5000/x:1\n", False),
])
def test_bridge_jobs_are_told_apart_as_job_submit_lua_does(script: str, bridge: bool) -> None:
    assert fastpath.is_bridge_script(script) is bridge
