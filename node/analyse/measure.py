"""Findings and their measurements in millimetres, and the suggested priority from the card's triage rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from node.analyse.card import ModelCard
from node.analyse.postprocess import bounding_box, components, longest_axial_diameter_mm
from node.analyse.types import Finding, Priority, Volume


def findings(
    labels: NDArray[np.uint8],
    card: ModelCard,
    volume: Volume,
    confidence: Mapping[int, NDArray[np.uint8]] | None = None,
) -> tuple[Finding, ...]:
    """One :class:`Finding` per 3-D component of each label whose card sets ``findings = true``.

    Numbered per label from 1, largest volume first. ``confidence`` maps a label index to its probability
    volume as uint8 (255 = 1.0, see :meth:`node.analyse.runtime.Model.segment_with_confidence`); labels
    without one get findings without confidence.
    """
    out: list[Finding] = []
    for label in card.labels:
        if not label.findings:
            continue
        present = labels == label.index
        outer = bounding_box(present)
        if outer is None:
            continue
        comp, _ = components(present[outer])
        origin = [s.start for s in outer]
        probability = None if confidence is None else confidence.get(label.index)
        measured = []
        for n, box in enumerate(ndimage.find_objects(comp), start=1):
            if box is None:
                continue
            where = tuple(slice(b.start + o, b.stop + o) for b, o in zip(box, origin, strict=True))
            region = (where[0], where[1], where[2])
            measured.append(describe(comp[box] == n, region, volume, probability))
        measured.sort(key=lambda f: -f.voxel_count)
        out += [replace(f, label=label.index, label_name=label.name, number=k) for k, f in enumerate(measured, 1)]
    return tuple(out)


def describe(
    mask: NDArray[np.bool_],
    box: tuple[slice, slice, slice],
    volume: Volume,
    probability: NDArray[np.uint8] | None = None,
    *,
    label: int = 0,
    label_name: str = "",
    number: int = 0,
) -> Finding:
    """Measure one finding: ``mask`` holds its voxels inside ``box`` of ``volume``.

    The key slice is the one with the most voxels of the finding (its largest cross-section; the
    lowest index wins a tie), and its z is that slice's Image Position (Patient) z.
    """
    offset = np.array([b.start for b in box], dtype=np.float64)
    idx = np.argwhere(mask).astype(np.float64) + offset
    centroid = volume.to_patient(idx.mean(axis=0))
    per_slice = mask.sum(axis=(1, 2))
    key = int(box[0].start + int(np.argmax(per_slice)))
    pixel_area = volume.spacing[1] * volume.spacing[2]
    conf_mean = conf_max = None
    if probability is not None:
        inside = probability[box][mask]
        conf_mean = round(float(inside.mean()) / 255.0, 4)
        conf_max = round(float(inside.max()) / 255.0, 4)
    count = int(mask.sum())
    return Finding(
        label=label,
        label_name=label_name,
        number=number,
        voxel_count=count,
        volume_mm3=count * volume.voxel_volume_mm3,
        longest_axial_diameter_mm=longest_axial_diameter_mm(mask, (volume.spacing[1], volume.spacing[2])),
        centroid_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
        mean_value=float(volume.voxels[box][mask].mean()),
        slice_indices=tuple(int(k) + box[0].start for k in np.flatnonzero(per_slice)),
        confidence_mean=conf_mean,
        confidence_max=conf_max,
        key_slice=key,
        key_slice_z_mm=float(volume.positions[key][2]),
        key_slice_area_mm2=float(per_slice.max()) * pixel_area,
        box=box,
        mask=mask,
    )


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
