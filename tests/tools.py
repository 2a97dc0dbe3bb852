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


PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
# OpenJDK 17's XPath limits stop pixelmed's validators half-way without these (see PITFALLS.md).
_JAVA_FLAGS = ["-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0"]


def pixelmed_errors(path: Path, kind: str | None = None) -> tuple[list[str], list[str]]:
    """(error lines, all lines) of pixelmed's validator on one file.

    ``kind`` "sr" runs ``DicomSRValidator`` (IOD and SR templates), anything else
    ``DicomInstanceValidator`` (IOD); by default SR files (Modality SR) get the SR validator. Like
    dciodvfy it exits 0 whatever it finds, so the lines starting with "Error" are the verdict.
    """
    java = require_tool("java", "default-jre-headless")
    if not PIXELMED_JAR.is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{PIXELMED_JAR} is missing in CI: install the Debian package pixelmed-apps")
        pytest.skip(f"{PIXELMED_JAR} (Debian package pixelmed-apps) is not installed")
    if kind is None:
        from pydicom import dcmread

        kind = "sr" if str(dcmread(path, stop_before_pixels=True).get("Modality", "")) == "SR" else "instance"
    validator = "DicomSRValidator" if kind == "sr" else "DicomInstanceValidator"
    run = subprocess.run(
        [java, *_JAVA_FLAGS, "-cp", str(PIXELMED_JAR), f"com.pixelmed.validate.{validator}", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = (run.stdout + run.stderr).splitlines()
    if not any(line.startswith("Found ") for line in lines):
        # It did not get as far as recognising the IOD: that is a failure of the check, not a pass.
        lines.append(f"Error: pixelmed {validator} did not validate {path.name} (exit {run.returncode})")
    return [line for line in lines if line.startswith("Error")], lines


def validator_errors(path: Path) -> list[str]:
    """Every error line that dciodvfy or pixelmed reports for one result file, each prefixed by its tool.

    The two validators are independent implementations of PS3.3 (and pixelmed of the SR templates):
    a SEG or SR the node writes must satisfy both. Other objects (the optional secondary capture) get
    dciodvfy only: Debian's pixelmed answers "IOD (SOP Class) unrecognized" for Secondary Capture.
    """
    from pydicom import dcmread

    dciodvfy_errors, _ = dciodvfy(path)
    errors = [f"dciodvfy: {e}" for e in dciodvfy_errors]
    modality = str(dcmread(path, stop_before_pixels=True).get("Modality", ""))
    if modality in ("SEG", "SR"):
        pixelmed, _ = pixelmed_errors(path, "sr" if modality == "SR" else "instance")
        errors += [f"pixelmed: {e}" for e in pixelmed]
    return errors
