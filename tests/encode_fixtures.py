"""Synthetic inputs for the encode tests: a small CT series on disk, its label map and a result.

The phantom is deliberately crude (an elliptical body, two air-ish lungs, two soft-tissue spheres in
the lungs) so that labels and measurements are known exactly; it holds no patient data. The series is
written by ``node.synth.dicom_writer`` and read back by ``node.analyse.volume``, so the SEG and SR are
built on the same headers the pipeline would give them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from node.analyse.card import ModelCard, load_card
from node.analyse.measure import describe
from node.analyse.postprocess import bounding_box
from node.analyse.types import AnalysisResult, Priority, Volume
from node.analyse.volume import load_series
from node.synth.dicom_writer import write_ct_series

REPO = Path(__file__).resolve().parents[1]
CARD_DIR = REPO / "models" / "lung-nodule-ct"

LUNG, NODULE = 1, 2
SLICE_MM, PIXEL_MM = 2.0, 0.8
NODULE_HU, LUNG_HU = 30, -850


def lung_card() -> ModelCard:
    """The shipped lung-nodule card; its ONNX file need not exist for encoding."""
    return load_card(CARD_DIR, verify=False)


def _grid(shape: tuple[int, int, int]) -> tuple[NDArray[np.float64], ...]:
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return k.astype(np.float64), j.astype(np.float64), i.astype(np.float64)


def spheres(shape: tuple[int, int, int], count: int = 2) -> list[tuple[tuple[float, float, float], float]]:
    """The first ``count`` (up to 4) nodules as ((k, j, i) centre in voxels, radius in mm): 10, 7, 9 and
    6 mm across, each in a lung and apart from the others. Largest first is not their order here."""
    s, r, c = shape
    all_four = [
        ((s * 0.4, r * 0.5, c * 0.30), 5.0),
        ((s * 0.6, r * 0.45, c * 0.70), 3.5),
        ((s * 0.55, r * 0.62, c * 0.25), 4.5),
        ((s * 0.35, r * 0.38, c * 0.74), 3.0),
    ]
    return all_four[:count]


def sphere_mask(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> NDArray[np.bool_]:
    k, j, i = _grid(shape)
    ck, cj, ci = centre
    d2 = ((k - ck) * SLICE_MM) ** 2 + ((j - cj) * PIXEL_MM) ** 2 + ((i - ci) * PIXEL_MM) ** 2
    return np.asarray(d2 <= radius**2)


def phantom_hu(shape: tuple[int, int, int], *, nodules: bool = True, count: int = 2) -> NDArray[np.int16]:
    """HU volume (k, j, i): air, an elliptical body, two lungs (not on the two end slices), nodules."""
    s, r, c = shape
    k, j, i = _grid(shape)
    hu = np.full(shape, -1000, dtype=np.int16)
    body = ((j - r / 2) / (r * 0.45)) ** 2 + ((i - c / 2) / (c * 0.47)) ** 2 <= 1
    hu[np.broadcast_to(body, shape)] = 40
    for ci in (c * 0.30, c * 0.70):
        lung = (((j - r / 2) / (r * 0.30)) ** 2 + ((i - ci) / (c * 0.15)) ** 2 <= 1) & (k >= 2) & (k < s - 2)
        hu[lung] = LUNG_HU
    if nodules:
        for centre, radius in spheres(shape, count):
            hu[sphere_mask(shape, centre, radius)] = NODULE_HU
    return hu


def write_phantom(
    out_dir: Path, shape: tuple[int, int, int] = (24, 128, 128), *, nodules: bool = True, count: int = 2
) -> Volume:
    """Write the phantom (with ``count`` nodules) as a CT series in ``out_dir`` and load it back as a volume."""
    write_ct_series(
        phantom_hu(shape, nodules=nodules, count=count),
        out_dir,
        pixel_spacing=(PIXEL_MM, PIXEL_MM),
        slice_thickness=SLICE_MM,
        seed=7,
    )
    return load_series(out_dir)


def make_result(volume: Volume, *, nodules: bool = True, count: int = 2) -> AnalysisResult:
    """A result as the analysis stage would make it: lungs by threshold, nodules from the known spheres."""
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[(volume.voxels > -900) & (volume.voxels < -700)] = LUNG
    findings = []
    if nodules:
        # Numbered largest first, as the analysis numbers them.
        ordered = sorted(spheres(volume.shape, count), key=lambda sphere: -sphere[1])
        for number, (centre, radius) in enumerate(ordered, start=1):
            mask = sphere_mask(volume.shape, centre, radius)
            labels[mask] = NODULE
            box = bounding_box(mask)
            assert box is not None
            found = describe(mask[box], box, volume, label=NODULE, label_name="Nodule", number=number)
            # The sphere's exact diameter, not the measured one: the encode tests compare with it.
            findings.append(replace(found, longest_axial_diameter_mm=2 * radius))
    high = any(f.longest_axial_diameter_mm >= 6.0 for f in findings)
    return AnalysisResult(
        volume=volume,
        labels=labels,
        findings=tuple(findings),
        priority=Priority.HIGH if high else Priority.ROUTINE,
        priority_reason="Nodule 1: 10.0 mm >= 6.0 mm" if high else "no triage rule matched",
        present={label: bool(np.any(labels == label)) for label in (LUNG, NODULE)},
    )
