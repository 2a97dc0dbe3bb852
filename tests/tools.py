"""Third-party tools the interop tests drive: found, or failed in CI / skipped elsewhere with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def require_tool(name: str, package: str) -> str:
    """Path of ``name``; fails under CI=true when missing (CI must install it), else skips the test."""
    tool = shutil.which(name)
    if tool is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is missing in CI: install the Debian package {package}")
        pytest.skip(f"{name} (Debian package {package}) is not installed")
    return tool


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(error lines, all lines) of dciodvfy on one file. It exits 0 even when it reports errors."""
    tool = require_tool("dciodvfy", "dicom3tools")
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120, check=False)
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")], lines
