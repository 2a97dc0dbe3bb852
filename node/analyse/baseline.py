"""A classical OpenCV lung and nodule segmenter: the yardstick the CNN must beat.

No learning: thresholds in HU, morphology, 3-D connected components and shape filters, the way a
pre-deep-learning CAD pipeline did it. ``models evaluate`` runs it on the same series as the model so
the model's value is measured rather than claimed.

1. Body: HU > -500, largest 3-D component, holes filled per slice.
2. Lungs: air (HU < -400) inside the body, the two largest 3-D components, closed and hole-filled per
   slice (vessels inside the lung become lung).
3. Nodule candidates: HU > -400 inside the filled lungs, opened per slice (cuts thin vessels off),
   3-D components kept when compact (volume close to that of a sphere of their diameter), not touching
   many slices beyond their diameter (vessels run along z), and from the reporting size up to 35 mm.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from node.analyse.postprocess import components, fill_holes_2d, longest_axial_diameter_mm
from node.analyse.types import Volume


def _largest(mask: NDArray[np.bool_], keep: int) -> NDArray[np.bool_]:
    comp, count = components(mask)
    if count == 0:
        return mask
    sizes = np.bincount(comp.ravel(), minlength=count + 1)
    sizes[0] = 0
    best = np.argsort(-sizes)[:keep]
    return np.isin(comp, best[sizes[best] > 0])


def segment(
    volume: Volume, lung_label: int = 1, nodule_label: int = 2, min_diameter_mm: float = 3.0
) -> NDArray[np.uint8]:
    """Label volume (lung_label, nodule_label, 0) for a chest CT volume in HU.

    ``min_diameter_mm`` is the smallest nodule reported: evaluation passes the model card's, so both
    methods report from the same size up.
    """
    hu = volume.voxels
    spacing = (volume.spacing[1], volume.spacing[2])
    body = _largest(hu > -500, 1).astype(np.uint8)
    for k in np.arange(body.shape[0]):
        body[k] = fill_holes_2d(body[k])
    air = (hu < -400) & (body > 0)
    lungs = _largest(air, 2).astype(np.uint8)
    r = max(1, int(round(3.0 / spacing[0])))
    close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    for k in np.flatnonzero(lungs.any(axis=(1, 2))):
        lungs[k] = fill_holes_2d(np.asarray(cv2.morphologyEx(lungs[k], cv2.MORPH_CLOSE, close), dtype=np.uint8))
    labels = np.where(lungs > 0, lung_label, 0).astype(np.uint8)

    dense = ((hu > -400) & (lungs > 0)).astype(np.uint8)
    r = max(1, int(round(1.2 / spacing[0])))
    opening = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    for k in np.flatnonzero(dense.any(axis=(1, 2))):
        dense[k] = cv2.morphologyEx(dense[k], cv2.MORPH_OPEN, opening)
    comp, _count = components(dense > 0)
    for n, box in enumerate(ndimage.find_objects(comp), start=1):
        if box is None:
            continue
        sub = comp[box] == n
        volume_mm3 = float(sub.sum()) * volume.voxel_volume_mm3
        diameter = longest_axial_diameter_mm(sub, spacing)
        extent_z = (box[0].stop - box[0].start) * volume.spacing[0]
        sphere = math.pi / 6 * diameter**3
        compact = volume_mm3 >= 0.35 * sphere and extent_z <= 1.6 * diameter + 2 * volume.spacing[0]
        if min_diameter_mm <= diameter <= 35.0 and compact:
            labels[box][sub] = nodule_label
    return labels
