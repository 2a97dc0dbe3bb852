"""Data types the analysis stage produces and the encode stage consumes.

Array axis order everywhere is (slice, row, column) = (k, j, i); coordinates in millimetres are DICOM
patient coordinates (x, y, z), LPS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset


class Priority(StrEnum):
    """Suggested reading priority, lowest first (values as in DICOM Requested Procedure Priority)."""

    LOW = "LOW"
    ROUTINE = "ROUTINE"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    STAT = "STAT"

    @property
    def rank(self) -> int:
        return list(Priority).index(self)


@dataclass(frozen=True, eq=False)
class Volume:
    """One series as a 3-D array in physical units, sorted along the slice normal.

    Attributes
    ----------
    voxels
        float32, shape (slices, rows, columns), after Rescale Slope/Intercept (HU for CT).
    spacing
        (slice spacing along the normal, row spacing, column spacing) in mm. Row spacing is the
        distance between rows (PixelSpacing[0]), column spacing between columns (PixelSpacing[1]).
    orientation
        ImageOrientationPatient: row direction cosines (3) then column direction cosines (3).
    positions
        float64, shape (slices, 3): ImagePositionPatient of each slice, in the same order as voxels.
    headers
        One dataset per slice, same order, without Pixel Data (for references and SEG/SR sources).
    """

    voxels: NDArray[np.float32]
    spacing: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    positions: NDArray[np.float64]
    headers: tuple[Dataset, ...]
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    modality: str
    body_part: str = ""
    slice_thickness: float | None = None
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.voxels.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(self.spacing[0] * self.spacing[1] * self.spacing[2])

    @property
    def row_direction(self) -> NDArray[np.float64]:
        return np.asarray(self.orientation[:3], dtype=np.float64)

    @property
    def column_direction(self) -> NDArray[np.float64]:
        return np.asarray(self.orientation[3:], dtype=np.float64)

    @property
    def normal(self) -> NDArray[np.float64]:
        return np.asarray(np.cross(self.row_direction, self.column_direction), dtype=np.float64)

    def to_patient(self, kji: NDArray[np.floating] | list[float] | tuple[float, ...]) -> NDArray[np.float64]:
        """Map (slice, row, column) voxel coordinates (may be fractional; shape (..., 3)) to patient mm."""
        p = np.asarray(kji, dtype=np.float64)
        k, j, i = p[..., 0], p[..., 1], p[..., 2]
        k0 = np.clip(np.floor(k).astype(int), 0, self.shape[0] - 1)
        # Position of a fractional slice: the origin of slice floor(k) plus the rest along the normal.
        origin = self.positions[k0] + (k - k0)[..., None] * self.spacing[0] * self.normal
        return np.asarray(
            origin
            + (i * self.spacing[2])[..., None] * self.row_direction
            + (j * self.spacing[1])[..., None] * self.column_direction,
            dtype=np.float64,
        )


@dataclass(frozen=True)
class Finding:
    """One connected component of a label that the model card reports as a finding."""

    label: int
    label_name: str
    number: int
    voxel_count: int
    volume_mm3: float
    longest_axial_diameter_mm: float
    centroid_mm: tuple[float, float, float]
    mean_value: float
    slice_indices: tuple[int, ...]
    # The model's probability of the label inside the finding (0..1): mean and maximum over its voxels;
    # None where the analysis had no probabilities (a finding made from a label map alone).
    confidence_mean: float | None = None
    confidence_max: float | None = None
    # The slice through the largest cross-section: its index in the volume, the position of that slice
    # along the patient z axis (mm) and the finding's area on it (mm2). -1 when not known.
    key_slice: int = -1
    key_slice_z_mm: float = 0.0
    key_slice_area_mm2: float = 0.0
    # Where the finding is: a box in the volume and the finding's voxels inside it (the SEG's segment).
    box: tuple[slice, slice, slice] | None = field(default=None, compare=False, repr=False)
    mask: NDArray[np.bool_] | None = field(default=None, compare=False, repr=False)

    @property
    def tracking_id(self) -> str:
        """The name that SEG segment, SR group, findings.json and summary share, e.g. "Nodule 2"."""
        return f"{self.label_name} {self.number}"


@dataclass(frozen=True, eq=False)
class AnalysisResult:
    """What one model made of one volume: the label map, the findings and the suggested priority.

    ``labels`` is uint8 with the volume's shape; its values are the card's label indices (0 = none).
    ``present`` says for each label index whether any voxel carries it after post-processing.
    """

    volume: Volume
    labels: NDArray[np.uint8]
    findings: tuple[Finding, ...]
    priority: Priority
    priority_reason: str
    present: dict[int, bool] = field(default_factory=dict)
