"""The optional service's systemd unit: systemd accepts it, it is hardened, install.sh installs it
without enabling it."""

from __future__ import annotations

from pathlib import Path

from tests.systemd_units import UNITS, unit_settings, verify_unit

REPO = Path(__file__).resolve().parents[2]
UNIT = UNITS / "skbridge-serve.service"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    done = verify_unit(UNIT, "serve", tmp_path)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_unit_is_hardened_and_runs_the_service() -> None:
    settings = unit_settings(UNIT)
    assert settings["ExecStart"].endswith("skbridge serve")
    assert settings["NoNewPrivileges"] == "yes" and settings["PrivateTmp"] == "yes"
    assert settings["ProtectSystem"] == "strict"
    capabilities = settings["CapabilityBoundingSet"].split()
    assert {"CAP_SETUID", "CAP_SETGID"} <= set(capabilities)
    assert not {"CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_CHOWN", "CAP_KILL"} & set(capabilities)


def test_install_sh_installs_but_does_not_enable_it() -> None:
    script = (REPO / "install.sh").read_text()
    assert "systemd/skbridge-serve.service" in script
    assert "enable skbridge-serve" not in script.replace("enable --now skbridge-serve`", "")
    assert "disable --now skbridge-serve.service" in script
