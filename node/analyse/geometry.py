"""Slice geometry: sort the slices of a series along the slice normal and check they form one regular grid.

Analysis assumes a volume on one orthogonal, evenly spaced grid, so a stack that is not one is refused
here rather than measured wrongly: mixed image sizes, orientations or pixel spacings, missing geometry,
non-orthonormal orientation, duplicate positions (the same slice twice, or several phases in one
series), in-plane drift along the stack (gantry tilt, shear) and uneven gaps (missing slices). Each
refusal is a ``SeriesError`` naming the series, the slices that disagree and what to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from node.errors import SeriesError

__all__ = ["Slice", "arrange"]

logger = logging.getLogger(__name__)

_ORIENTATION_TOL = 1e-4  # direction cosines written with 6 decimals still agree to this
_DUPLICATE_MM = 0.01  # two slices closer than this along the normal are at the same position
_SPACING_REL_TOL = 0.01  # gaps may differ from the median by 1 % (or _DUPLICATE_MM, if larger)


@dataclass(frozen=True)
class Slice:
    """One future slice of the volume: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    frame: int | None  # frame index in a file with Number of Frames, else None
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    size: tuple[int, int]
    slope: float
    intercept: float
    acquisition: str
    localizer: bool
    thickness: float | None
    between: float | None  # Spacing Between Slices
    assumed: str  # which geometry was assumed because the file lacks it ("" = none)

    @property
    def name(self) -> str:
        return self.path.name if self.frame is None else f"{self.path.name} frame {self.frame + 1}"


def arrange(slices: list[Slice], uid: str) -> tuple[list[Slice], float]:
    """Sort the slices along the normal and check they form one regular grid; return the spacing."""
    if any(s.localizer for s in slices) and not all(s.localizer for s in slices):
        kept = [s for s in slices if not s.localizer]
        logger.info("left out %d localizer images of the series", len(slices) - len(kept))
        slices = kept
    first = slices[0]
    where = f"series {uid}"
    for s in slices[1:]:
        pair = f"{first.name} and {s.name}"
        if s.size != first.size:
            raise SeriesError(
                f"{where}: mixed image sizes ({first.size[0]}x{first.size[1]} and {s.size[0]}x{s.size[1]} "
                f"in {pair}): not one stack; split the series"
            )
        if max(abs(a - b) for a, b in zip(s.orientation, first.orientation, strict=True)) > _ORIENTATION_TOL:
            raise SeriesError(
                f"{where}: mixed orientations ({pair}): a localizer or a reformat in the series? "
                "split it by Image Orientation (Patient)"
            )
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=_ORIENTATION_TOL, atol=0):
            raise SeriesError(f"{where}: mixed pixel spacings ({pair}): not one stack; split the series")
    if len(slices) > 1 and any(s.assumed for s in slices):
        bad = next(s for s in slices if s.assumed)
        raise SeriesError(f"{where}: {bad.name} lacks its geometry ({bad.assumed}); cannot stack the slices")
    row, col = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
    normal = np.cross(row, col)
    if abs(np.linalg.norm(normal) - 1) > 0.01 or abs(float(row @ col)) > 0.01:
        raise SeriesError(
            f"{where}: Image Orientation (Patient) {first.orientation} is not two orthogonal unit vectors"
        )
    positions = np.array([s.position for s in slices], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    slices, positions, along = [slices[i] for i in order], positions[order], along[order]
    axis = "z" if abs(normal[2]) > 0.99 else "position along the slice normal"
    gaps = np.diff(along)
    for i in np.flatnonzero(gaps < _DUPLICATE_MM):
        a, b = slices[i], slices[i + 1]
        what = (
            "multi-phase? split by AcquisitionNumber"
            if a.acquisition != b.acquisition
            else "the same slice twice, or several stacks in one series? remove duplicates or split it"
        )
        files = f"series {uid}, files {a.name} and {b.name}"
        raise SeriesError(f"two slices share position {axis} = {along[i]:.1f} mm ({files}): {what}")
    if len(slices) == 1:
        return slices, first.between or first.thickness or 1.0
    # Slices must lie on one line along the normal (no gantry tilt / shear), or the grid is not regular.
    drift = positions - positions[0] - np.outer(along - along[0], normal)
    worst = int(np.argmax(np.linalg.norm(drift, axis=1)))
    if np.linalg.norm(drift[worst]) > 0.1 * min(first.pixel_spacing):
        raise SeriesError(
            f"{where}: slices shift in-plane along the stack ({np.linalg.norm(drift[worst]):.2f} mm at "
            f"{slices[worst].name}): gantry tilt or sheared stack; resample to an orthogonal grid first"
        )
    median = float(np.median(gaps))
    if np.any(np.abs(gaps - median) > max(_DUPLICATE_MM, _SPACING_REL_TOL * median)):
        big = int(np.argmax(gaps))
        raise SeriesError(
            f"{where}: inconsistent slice spacing: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm "
            f"(median {median:.3f}); biggest gap {gaps[big]:.3f} mm between {slices[big].name} and "
            f"{slices[big + 1].name} at {axis} = {along[big]:.1f} mm: missing slices? resend the series"
        )
    return slices, float((along[-1] - along[0]) / (len(slices) - 1))
