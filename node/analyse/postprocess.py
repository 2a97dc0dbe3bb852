"""Clean-up of the network's label volume, per label as the card says.

Morphology and hole filling are done slice by slice with OpenCV (the physical kernel size follows the
in-plane spacing); connected components are 3-D (scipy.ndimage, 26-connectivity) because a nodule spans
slices. Voxels removed from a label become background; hole filling only claims background voxels, so
a nodule inside the lung is never painted over by the lung.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from node.analyse.card import Label, ModelCard
from node.analyse.types import Volume

_CONNECTIVITY = np.ones((3, 3, 3), bool)


def _kernel(radius_mm: float, spacing: tuple[float, float]) -> NDArray[np.uint8]:
    ry = max(1, round(radius_mm / spacing[0]))
    rx = max(1, round(radius_mm / spacing[1]))
    return np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rx + 1, 2 * ry + 1)), dtype=np.uint8)


def fill_holes_2d(mask: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Fill every region of a binary slice that the mask encloses (outer contours drawn filled)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def components(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int32], int]:
    """3-D connected components (26-connectivity): (component map, count)."""
    labelled, count = ndimage.label(mask, structure=_CONNECTIVITY)
    return labelled.astype(np.int32, copy=False), int(count)


def longest_axial_diameter_mm(mask: NDArray[np.bool_], spacing: tuple[float, float]) -> float:
    """Longest in-plane distance across a component, over all its slices, in mm.

    Distances are taken between the convex-hull pixel centres and one pixel is added, because the
    object extends half a pixel beyond the outermost centres on each side.
    """
    best = 0.0
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        points = np.argwhere(mask[k]).astype(np.float64)
        if len(points) > 2:
            hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
        else:
            hull = points
        mm = hull * np.array(spacing)
        diff = mm[:, None, :] - mm[None, :, :]
        best = max(best, float(np.sqrt((diff**2).sum(-1)).max()))
    return best + float(np.mean(spacing))


def elongation(mask: NDArray[np.bool_], spacing: tuple[float, float, float]) -> float:
    """Ratio of the longest to the shortest principal axis of a 3-D component, in mm.

    From the covariance of the voxel centres, plus each voxel's own extent (spacing^2 / 12 per axis) so
    that a component one slice thick is not infinitely flat. A sphere gives 1, a tube its length/width.
    """
    points = np.argwhere(mask).astype(np.float64) * np.asarray(spacing)
    if len(points) < 2:
        return 1.0
    cov = np.cov(points.T) + np.diag(np.asarray(spacing) ** 2 / 12.0)
    eigen = np.linalg.eigvalsh(cov)
    return float(np.sqrt(eigen[-1] / max(eigen[0], 1e-12)))


def bounding_box(mask: NDArray[np.bool_], pad: tuple[int, int, int] = (0, 0, 0)) -> tuple[slice, slice, slice] | None:
    """The smallest box holding every true voxel, grown by ``pad`` voxels per axis; None if empty.

    Small labels (nodules) cover a tiny part of the volume: working inside their box keeps the 3-D
    labelling and per-slice morphology off the rest.
    """
    box = []
    for axis, margin in enumerate(pad):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if len(hits) == 0:
            return None
        box.append(slice(max(0, int(hits[0]) - margin), min(mask.shape[axis], int(hits[-1]) + margin + 1)))
    return box[0], box[1], box[2]


def clean_label(labels: NDArray[np.uint8], label: Label, volume: Volume) -> None:
    """Apply one label's post-processing to ``labels`` in place (inside the label's bounding box)."""
    spacing2d = (volume.spacing[1], volume.spacing[2])
    grow = max(label.closing_mm, label.opening_mm)
    pad = (0, int(grow / spacing2d[0]) + 1, int(grow / spacing2d[1]) + 1)
    box = bounding_box(labels == label.index, pad)
    if box is None:
        return
    labels = labels[box]  # a view: changes below land in the caller's array
    mask = (labels == label.index).astype(np.uint8)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        s = mask[k]
        if label.opening_mm > 0:
            s = cv2.morphologyEx(s, cv2.MORPH_OPEN, _kernel(label.opening_mm, spacing2d))
        if label.closing_mm > 0:
            s = cv2.morphologyEx(s, cv2.MORPH_CLOSE, _kernel(label.closing_mm, spacing2d))
        mask[k] = s
    if label.fill_holes:
        for k in np.flatnonzero(mask.any(axis=(1, 2))):
            mask[k] |= fill_holes_2d(mask[k]) & (labels[k] == 0)
    comp, count = components(mask.astype(bool))
    if count:
        sizes = np.bincount(comp.ravel(), minlength=count + 1)[1:]
        keep = np.ones(count, bool)
        keep &= sizes * volume.voxel_volume_mm3 >= label.min_volume_mm3
        if label.keep_largest:
            order = np.argsort(-sizes)
            keep[order[label.keep_largest :]] = False
        if label.min_diameter_mm > 0 or label.max_elongation > 0:
            objects = ndimage.find_objects(comp)
            for n in np.flatnonzero(keep):
                box = objects[n]
                sub = comp[box] == n + 1
                too_small = 0 < label.min_diameter_mm > longest_axial_diameter_mm(sub, spacing2d)
                too_long = 0 < label.max_elongation < elongation(sub, volume.spacing)
                keep[n] = not (too_small or too_long)
        mask = np.concatenate([[False], keep])[comp].astype(np.uint8)
    # Removed voxels become background; kept and filled voxels carry the label.
    labels[(labels == label.index) & (mask == 0)] = 0
    labels[mask > 0] = label.index


def clean(labels: NDArray[np.uint8], card: ModelCard, volume: Volume) -> NDArray[np.uint8]:
    """Post-process every label of the card.

    Labels that report findings go first, so that a component they drop (background now) can be
    claimed back by the hole filling of the organ label around it.
    """
    for label in sorted(card.labels, key=lambda lab: not lab.findings):
        clean_label(labels, label, volume)
    return labels
