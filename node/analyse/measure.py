"""Findings and their measurements in millimetres, and the suggested priority from the card's triage rules."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from node.analyse.card import ModelCard
from node.analyse.postprocess import bounding_box, components, longest_axial_diameter_mm
from node.analyse.types import Finding, Priority, Volume


def findings(labels: NDArray[np.uint8], card: ModelCard, volume: Volume) -> tuple[Finding, ...]:
    """One :class:`Finding` per 3-D component of each label whose card sets ``findings = true``.

    Numbered per label from 1, largest volume first.
    """
    out: list[Finding] = []
    spacing2d = (volume.spacing[1], volume.spacing[2])
    for label in card.labels:
        if not label.findings:
            continue
        present = labels == label.index
        outer = bounding_box(present)
        if outer is None:
            continue
        comp, _ = components(present[outer])
        origin = np.array([s.start for s in outer], dtype=np.float64)
        voxels = volume.voxels[outer]
        measured = []
        for n, box in enumerate(ndimage.find_objects(comp), start=1):
            if box is None:
                continue
            sub = comp[box] == n
            idx = np.argwhere(sub).astype(np.float64) + np.array([b.start for b in box], dtype=np.float64) + origin
            centroid = volume.to_patient(idx.mean(axis=0))
            values = voxels[box][sub]
            measured.append(
                (
                    int(sub.sum()),
                    longest_axial_diameter_mm(sub, spacing2d),
                    (float(centroid[0]), float(centroid[1]), float(centroid[2])),
                    float(values.mean()),
                    tuple(int(k) for k in np.unique(idx[:, 0].astype(int))),
                )
            )
        measured.sort(key=lambda m: -m[0])
        for number, (count_vox, diameter, centre, mean, slices) in enumerate(measured, start=1):
            out.append(
                Finding(
                    label=label.index,
                    label_name=label.name,
                    number=number,
                    voxel_count=count_vox,
                    volume_mm3=count_vox * volume.voxel_volume_mm3,
                    longest_axial_diameter_mm=diameter,
                    centroid_mm=centre,
                    mean_value=mean,
                    slice_indices=slices,
                )
            )
    return tuple(out)


def triage(found: tuple[Finding, ...], card: ModelCard) -> tuple[Priority, str]:
    """The highest priority that the card's default or any triage rule gives, with a one-line reason."""
    priority, reason = card.triage.default, "no finding meets a triage rule"
    for rule in card.triage.rules:
        for f in found:
            if (
                f.label_name == rule.label
                and f.longest_axial_diameter_mm >= rule.min_diameter_mm
                and f.volume_mm3 >= rule.min_volume_mm3
                and rule.priority.rank > priority.rank
            ):
                priority = rule.priority
                reason = (
                    f"{f.label_name} {f.number}: longest axial diameter {f.longest_axial_diameter_mm:.1f} mm "
                    f">= {rule.min_diameter_mm:g} mm, volume {f.volume_mm3:.0f} mm3"
                )
    return priority, reason
