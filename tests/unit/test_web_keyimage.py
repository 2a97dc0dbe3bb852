"""Key images from real results: the encode stage's SEG and findings.json on a small phantom series; each
finding's outline is drawn in its label colour around its centroid on its key slice, and nowhere else."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from pydicom import dcmread

from node.encode import encode_results, write_datasets
from node.encode.findings import findings_json
from node.web.keyimage import KeyImageError, render
from tests.encode_fixtures import lung_card, make_result, write_phantom

COLOUR = (230, 60, 60)


def colour_pixels(png: bytes) -> tuple[NDArray[np.intp], NDArray[np.intp], tuple[int, ...]]:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    ys, xs = np.where((image[:, :, 2] == COLOUR[0]) & (image[:, :, 1] == COLOUR[1]) & (image[:, :, 0] == COLOUR[2]))
    return xs, ys, image.shape


def test_each_findings_outline_surrounds_its_centroid_on_its_key_slice(tmp_path: Path) -> None:
    volume = write_phantom(tmp_path / "ct", count=2)
    card = lung_card()
    result = make_result(volume, count=2)
    datasets = encode_results(result, card)
    written = write_datasets(datasets, tmp_path / "out")
    data = json.loads(json.dumps(findings_json(result, card, datasets, written)))
    seg = next(p for p in written if p.name.startswith("SEG"))
    sources = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in (tmp_path / "ct").iterdir()}
    assert len(data["findings"]) == 2
    for finding in data["findings"]:
        source = sources[finding["key_slice"]["sop_instance_uid"]]
        png = render(finding, source, seg, (-400.0, 1600.0), COLOUR)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        xs, ys, shape = colour_pixels(png)
        ds = dcmread(source, stop_before_pixels=True)
        scale = shape[1] / int(ds.Columns)
        assert scale == 4  # a 128-pixel slice is shown at 512
        x0, y0 = float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1])
        spacing = float(ds.PixelSpacing[0])
        cx = (finding["centroid_mm"][0] - x0) / spacing * scale
        cy = (finding["centroid_mm"][1] - y0) / spacing * scale
        radius = finding["longest_axial_diameter_mm"] / 2 / spacing * scale
        distance = np.hypot(xs - cx, ys - cy)
        assert len(xs) > 20
        # The outline lies on the finding's edge: within a pixel or two (enlarged) of its radius.
        assert np.all(np.abs(distance - radius) <= 2.5 * scale), (distance.min(), distance.max(), radius)


def test_a_finding_without_a_key_slice_has_no_key_image(tmp_path: Path) -> None:
    with pytest.raises(KeyImageError, match="no key slice"):
        render({"label": "Nodule", "number": 1}, tmp_path / "missing.dcm", None, (40.0, 400.0), COLOUR)
