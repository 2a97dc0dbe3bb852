"""The phantom writer's CT files pass dciodvfy (dicom3tools) without errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from node.synth.dicom_writer import write_ct_series
from tests.tools import dciodvfy

pytestmark = pytest.mark.interop


@pytest.mark.parametrize(
    ("slices", "size", "low"),
    [(4, 64, -1024), (1, 512, -1024), (2, 64, -2048)],
    ids=["4x64x64-unsigned", "1x512x512-unsigned", "2x64x64-signed"],
)
def test_phantom_ct_files_pass_dciodvfy(tmp_path: Path, slices: int, size: int, low: int) -> None:
    hu = np.random.default_rng(1).integers(low, 2000, (slices, size, size)).astype(np.int16)
    paths = write_ct_series(hu, tmp_path, pixel_spacing=(0.75, 0.75), slice_thickness=1.25, seed=3)
    for path in paths:
        errors, lines = dciodvfy(path)
        assert not errors, f"{path.name}:\n" + "\n".join(lines)
        print(path.name, "\n".join(line for line in lines if line.startswith("Warning")))
