"""The synthetic ECG writer's 12-lead ECG files pass dciodvfy (dicom3tools) without errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.synth.ecg import RHYTHMS, make_ecg
from tests.tools import dciodvfy

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("rhythm", RHYTHMS)
def test_synthetic_ecg_files_pass_dciodvfy(tmp_path: Path, rhythm: str) -> None:
    path = make_ecg(21, rhythm).write_dicom(tmp_path / "ecg.dcm")
    errors, lines = dciodvfy(path)
    assert not errors, "\n".join(lines)
