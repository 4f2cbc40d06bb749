"""The optional service's systemd unit: systemd accepts it, it is hardened, install.sh installs it
without enabling it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "skbridge-serve.service"


def _settings() -> dict[str, str]:
    found = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key] = value
    return found


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / UNIT.name
    skbridge = Path(sys.executable).parent / "skbridge"
    lines = [f"ExecStart={skbridge} serve" if line.startswith("ExecStart=") else line
             for line in UNIT.read_text().splitlines()]
    unit.write_text("\n".join(lines) + "\n")
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_unit_is_hardened_and_runs_the_service() -> None:
    settings = _settings()
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
