"""The systemd units in systemd/: ``systemd-analyze verify`` has nothing to say about them, and they keep the hardening.

``systemd-analyze verify`` runs with ``--root`` on a throwaway file-system root that holds our units unchanged in
/etc/systemd/system, a stub executable at the path ExecStart names (verify checks that it exists and is
executable; the real program is not installed here) and a copy of this machine's system units (sysinit.target,
network-online.target, ...: every service depends on them by default, and with ``--root`` verify looks for them
only inside the root). ``--man=no``: no Documentation= check against installed man pages. ``--generators=no``:
no generators of this machine (they describe its own mounts and need privileges). ``--recursive-errors=no``: the
exit code reflects our units only, not the machine's. The exit code alone is not enough: an unknown key or a bad
value is printed and ignored, and the exit code stays 0. So every printed line fails the test unless it is
clearly about some other unit of the machine (it starts with that unit's name or file and names none of ours).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.tools import require_tool

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
SERVE = "pacs-node.service"
WORKER = "pacs-node-worker@.service"
WORKER_1 = "pacs-node-worker@1.service"  # a template is verified through an instance
OURS = (SERVE, WORKER, WORKER_1)
PROGRAM = "/opt/pacs-node/.venv/bin/pacs-node"
CONFIG = "/etc/pacs-node/node.toml"
DATA = "/var/lib/pacs-node"
SYSTEM_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
# "<unit or unit file>:" at the start of a line says which unit a systemd-analyze message is about.
UNIT_PREFIX = re.compile(
    r"^(?P<who>[^\s:]+\.(?:service|socket|target|mount|automount|swap|path|timer|slice|scope|device)):"
)

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Section -> key -> every value assigned, in order (a key may be given more than once, e.g. Environment=)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"line {number}: continuation lines are not used in our units"
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None and "=" in line, f"line {number}: {raw!r} is not 'Key=value' inside a section"
        key, value = line.split("=", 1)
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def load(name: str) -> Unit:
    return parse_unit((UNITS / name).read_text(encoding="utf-8"))


def value(unit: Unit, section: str, key: str) -> str:
    """The one value of ``key`` (the test wants each such key given exactly once)."""
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}= is given {len(values)} times, expected once: {values}"
    return values[0]


def about_another_unit(line: str) -> bool:
    """Whether a systemd-analyze line is about a unit of the machine, not ours (and names none of ours)."""
    if any(name in line for name in OURS):
        return False
    match = UNIT_PREFIX.match(line)
    return match is not None and Path(match["who"]).name not in OURS


def make_root(tmp_path: Path, units: dict[str, str]) -> Path:
    """A file-system root for ``systemd-analyze verify --root``: our units, a stub program, the machine's units."""
    system_units = next((d for d in SYSTEM_UNIT_DIRS if (d / "sysinit.target").is_file()), None)
    if system_units is None:
        pytest.fail(f"systemd-analyze is installed but no system units are (no sysinit.target in {SYSTEM_UNIT_DIRS})")
    root = tmp_path / "root"
    shutil.copytree(system_units, root / system_units.relative_to("/"), symlinks=True)
    ours = root / "etc/systemd/system"
    ours.mkdir(parents=True)
    for name, text in units.items():
        (ours / name).write_text(text, encoding="utf-8")
    program = root / PROGRAM.lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    program.chmod(0o755)
    return root


def verify(tmp_path: Path, units: dict[str, str]) -> tuple[int, list[str], list[str]]:
    """(exit code, lines about our units, every line) of ``systemd-analyze verify`` on the service and worker 1."""
    tool = require_tool("systemd-analyze", "systemd")
    root = make_root(tmp_path, units)
    cwd = tmp_path / "cwd"  # empty: the unit names below must be found in the root, not as files here
    cwd.mkdir()
    options = ["--root", str(root), "--man=no", "--generators=no", "--recursive-errors=no"]
    run = subprocess.run(
        [tool, "verify", *options, SERVE, WORKER_1],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "cat", "LC_ALL": "C"},
        timeout=120,
        check=False,
    )
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    return run.returncode, [line for line in lines if not about_another_unit(line)], lines


def shipped() -> dict[str, str]:
    return {name: (UNITS / name).read_text(encoding="utf-8") for name in (SERVE, WORKER)}


def test_systemd_analyze_verify_has_nothing_to_say_about_our_units(tmp_path: Path) -> None:
    code, ours, lines = verify(tmp_path, shipped())
    assert ours == [], "systemd-analyze verify complains about our units:\n" + "\n".join(ours)
    assert code == 0, f"systemd-analyze verify exited {code}:\n" + "\n".join(lines)


def test_the_verify_check_sees_unknown_keys_bad_values_and_a_wrong_program(tmp_path: Path) -> None:
    """The check above is not blind: a typo, a bad value and a wrong ExecStart path each give a line."""
    units = shipped()
    units[SERVE] = units[SERVE].replace("ProtectSystem=strict", "ProtectSystem=strikt\nProtectSystm=strict")
    units[WORKER] = units[WORKER].replace(PROGRAM, PROGRAM + "-missing")
    _, ours, lines = verify(tmp_path, units)
    everything = "\n".join(lines)
    assert any(f"{SERVE}:" in line and "Unknown key 'ProtectSystm'" in line for line in ours), everything
    assert any(f"{SERVE}:" in line and "strikt" in line for line in ours), everything
    assert any(line.startswith(f"{WORKER_1}:") and "-missing is not executable" in line for line in ours), everything


def test_lines_about_other_units_are_the_only_ones_ignored() -> None:
    assert about_another_unit("/usr/lib/systemd/system/foo.service:3: Unknown key 'X' in section [Unit], ignoring.")
    assert about_another_unit("foo.target: Failed to ...")
    assert not about_another_unit(f"/tmp/root/etc/systemd/system/{SERVE}:7: Unknown key 'X' in section [Service]")
    assert not about_another_unit(f"{WORKER_1}: Command {PROGRAM} is not executable: No such file or directory")
    assert not about_another_unit(f"foo.target: Found ordering cycle on {SERVE}/start")
    assert not about_another_unit("Unit pacs-node.service not found.")
    assert not about_another_unit("Failed to initialize manager: Permission denied")


# Both units: same user, files and hardening (the worker restricts sockets further, see below).
HARDENING = {
    "User": "pacs-node",
    "Group": "pacs-node",
    "ProtectSystem": "strict",
    "ReadWritePaths": DATA,
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "WorkingDirectory": DATA,
    "KillSignal": "SIGTERM",
    "KillMode": "mixed",
    "Restart": "on-failure",
    "RestartSec": "5",
}


@pytest.mark.parametrize("name", [SERVE, WORKER])
def test_both_units_run_hardened_as_pacs_node_and_write_only_the_data_folder(name: str) -> None:
    unit = load(name)
    service = unit["Service"]
    for key, expected in HARDENING.items():
        assert value(unit, "Service", key) == expected, f"{name}: [Service] {key}="
    assert value(unit, "Service", "Type") in ("exec", "simple")
    # The data folder and its tmp/ are created (owned by pacs-node) by systemd, and TMPDIR points there.
    assert value(unit, "Service", "StateDirectory").split() == ["pacs-node", "pacs-node/tmp"]
    assert f"TMPDIR={DATA}/tmp" in service["Environment"]
    # An ambient capability outside the bounding set makes the start fail (EPERM from the kernel).
    bounding = set(value(unit, "Service", "CapabilityBoundingSet").split())
    assert set(value(unit, "Service", "AmbientCapabilities").split()) <= bounding
    # Left off on purpose (onnxruntime, libffi): see the comment in the unit.
    assert "MemoryDenyWriteExecute" not in service


def test_the_node_unit() -> None:
    unit = load(SERVE)
    assert value(unit, "Service", "ExecStart") == f"{PROGRAM} serve --config {CONFIG}"
    assert value(unit, "Service", "RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    # The drain lets open associations finish for 30 s; systemd must wait longer before SIGKILL.
    assert value(unit, "Service", "TimeoutStopSec") == "45"
    assert value(unit, "Service", "LimitNOFILE") == "65536"
    assert value(unit, "Unit", "After") == value(unit, "Unit", "Wants") == "network-online.target"
    assert value(unit, "Install", "WantedBy") == "multi-user.target"


def test_the_worker_unit() -> None:
    unit = load(WORKER)
    assert value(unit, "Service", "ExecStart") == f"{PROGRAM} worker --config {CONFIG}"
    assert "%i" in value(unit, "Unit", "Description")
    assert value(unit, "Unit", "PartOf") == value(unit, "Unit", "After") == SERVE
    assert value(unit, "Service", "TimeoutStopSec") == "60"
    # It talks to no DICOM node: local sockets only.
    assert value(unit, "Service", "RestrictAddressFamilies") == "AF_UNIX"
    # Enabled workers start with the node.
    assert value(unit, "Install", "WantedBy") == SERVE
