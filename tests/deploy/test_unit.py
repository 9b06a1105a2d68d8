"""deploy/reverser.service: systemd accepts it (alone and with each drop-in) and it scores SAFE or OK."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "reverser.service"
INSTALLED = "/opt/reverser/.venv/bin/reverser"   # where the README installs the command
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed here (Debian: apt-get install systemd)")


def directives(text: str) -> dict[str, list[str]]:
    """Key -> every value it is given in [Service] and [Unit] (systemd keys repeat)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2).strip())
    return out


def installed_copy(tmp_path: Path, dropins: tuple[str, ...] = ()) -> Path:
    """The unit as installed, but with ExecStart pointing at this checkout's command.

    verify refuses a unit whose ExecStart binary does not exist; the README's
    /opt/reverser is not on a test machine, so only that path is substituted.
    """
    command = Path(sys.executable).parent / "reverser"
    if not command.exists():  # the venv was made without installing the package: any executable will do
        command = tmp_path / "reverser"
        command.write_text("#!/bin/sh\nexit 0\n")
        command.chmod(0o755)
    unit = tmp_path / "reverser.service"
    text = UNIT.read_text()
    assert INSTALLED in text
    unit.write_text(text.replace(INSTALLED, str(command)))
    for name in dropins:
        (tmp_path / "reverser.service.d").mkdir(exist_ok=True)
        shutil.copy(DEPLOY / name, tmp_path / "reverser.service.d" / name)
    return unit


def verify(unit: Path) -> list[str]:
    """systemd-analyze verify's complaints about our files (it exits 0 even for unknown keys, so read them)."""
    r = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    ours = [line for line in (r.stdout + r.stderr).splitlines() if str(unit.parent) in line]
    if r.returncode != 0:
        ours.append(f"exit status {r.returncode}: {r.stderr.strip()}")
    return ours


def exposure(unit: Path) -> tuple[float, str]:
    r = subprocess.run([ANALYZE, "security", "--offline=true", str(unit.name)], cwd=unit.parent,
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for reverser\.service: ([\d.]+) (\w+)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1)), m.group(2)


@needs_systemd
@pytest.mark.parametrize("dropins", [(), ("metrics.conf",), ("web.conf",), ("gpu.conf",), ("metrics.conf", "gpu.conf"),
                                     ("web.conf", "gpu.conf")],
                         ids=["unit", "with metrics.conf", "with web.conf", "with gpu.conf", "with both",
                              "with web.conf and gpu.conf"])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path, dropins):
    assert verify(installed_copy(tmp_path, dropins)) == []


@needs_systemd
def test_verify_would_catch_a_mistake(tmp_path):
    unit = installed_copy(tmp_path)
    unit.write_text(unit.read_text().replace("WatchdogSec=60s", "WatchdogSec=60s\nWatchdogSecs=60s"))
    assert any("WatchdogSecs" in line for line in verify(unit))


@needs_systemd
@pytest.mark.parametrize("dropins", [(), ("metrics.conf", "gpu.conf"), ("web.conf", "gpu.conf")],
                         ids=["unit", "with both drop-ins", "with web.conf and gpu.conf"])
def test_security_exposure_is_safe_or_ok(tmp_path, dropins):
    score, level = exposure(installed_copy(tmp_path, dropins))
    assert level in ("SAFE", "OK"), f"exposure {score} {level}"


def test_the_unit_says_what_the_service_relies_on():
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert d["ExecStart"] == [f"{INSTALLED} run --config /etc/reverser/config.toml"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["Restart"] == ["on-failure"]
    assert d["RestartPreventExitStatus"] == ["78"]  # the CLI's exit status for a bad configuration
    assert d["WatchdogSec"] and d["User"] == ["reverser"]
    assert d["CapabilityBoundingSet"] == [""]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert d["ReadWritePaths"] == ["/var/lib/reverser/inbox /var/lib/reverser/outbox /var/lib/reverser/state"]
    assert "MemoryDenyWriteExecute" not in d, "PyTorch's CPU convolutions write and run machine code"
    from daemon.core.config import WebConfig
    assert int(d["LimitNOFILE"][0]) >= 16 * WebConfig().max_connections, "web clients never take every handle"


def test_the_drop_ins_are_valid_ini():
    for name in ("metrics.conf", "web.conf", "gpu.conf"):
        ini = configparser.ConfigParser(strict=False)
        ini.optionxform = str
        ini.read_string((DEPLOY / name).read_text())
        assert ini.sections() == ["Service"]
