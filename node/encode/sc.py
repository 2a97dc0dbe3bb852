"""Secondary capture overlays for PACS viewers that cannot show a SEG.

One single-frame RGB Secondary Capture per slice that holds a finding: the finding's middle slice,
windowed with the card's input window (for the lung model, a lung window), every label blended in its
card colour and outlined at full strength. The images are a convenience for reading, not a measurement:
the SEG and SR stay the reference. No text is burned in, so the images carry no patient data.
"""

from __future__ import annotations

import logging
from datetime import datetime

import cv2
import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from node.analyse.card import ModelCard
from node.analyse.types import AnalysisResult, Volume
from node.encode.provenance import Equipment, add_algorithm_equipment
from node.encode.sources import complete_type2
from node.errors import EncodeError

log = logging.getLogger(__name__)

# Fill opacity of a label over the greyscale image; outlines are drawn opaque.
_ALPHA = 0.35
_LO_MAX = 64


def key_slices(result: AnalysisResult) -> list[int]:
    """Middle slice of each finding, each slice once, in slice order."""
    middles = {f.slice_indices[len(f.slice_indices) // 2] for f in result.findings if f.slice_indices}
    return sorted(k for k in middles if 0 <= k < result.volume.shape[0])


def overlay(image: NDArray[np.floating], labels: NDArray[np.uint8], card: ModelCard) -> NDArray[np.uint8]:
    """Window one slice with the card's window and blend the label colours over it; RGB uint8."""
    window = card.input.window
    low = window.center - window.width / 2
    grey = np.clip((image - low) / window.width, 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for label in card.labels:
        mask = labels == label.index
        if not mask.any():
            continue
        colour = np.asarray(label.colour, dtype=np.float32)
        rgb[mask] = (1.0 - _ALPHA) * rgb[mask] + _ALPHA * colour
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgb, contours, -1, tuple(float(c) for c in label.colour), 1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _letters(direction: NDArray[np.float64]) -> str:
    """Patient Orientation letters of a direction (LPS): dominant axis first, up to three letters."""
    names = (("L", "R"), ("P", "A"), ("H", "F"))
    order = np.argsort(-np.abs(direction))
    letters = [names[a][0 if direction[a] > 0 else 1] for a in order if abs(direction[a]) > 0.25]
    return "".join(letters) or "L"


def patient_orientation(volume: Volume) -> tuple[str, str]:
    """(row direction, column direction) letters, e.g. ("L", "P") for a head-first supine axial slice."""
    return _letters(volume.row_direction), _letters(volume.column_direction)


def build_sc(
    result: AnalysisResult,
    card: ModelCard,
    *,
    series_number: int = 903,
    equipment: Equipment | None = None,
    when: datetime | None = None,
) -> list[Dataset]:
    """One RGB Secondary Capture per key slice (see :func:`key_slices`); empty when nothing was found.

    Each image references its source slice (Source Image Sequence) and carries the algorithm's
    provenance. All images of one call share a new series.

    Raises
    ------
    EncodeError
        If highdicom refuses the input.
    """
    equipment = equipment or Equipment()
    when = when or datetime.now().astimezone()
    volume = result.volume
    complete_type2(volume.headers)
    series_uid = generate_uid(prefix=None)
    description = f"AI overlay {card.model.name} {card.model.version}"[:_LO_MAX]
    images: list[Dataset] = []
    for number, k in enumerate(key_slices(result), start=1):
        source = volume.headers[k]
        pixels = overlay(volume.voxels[k], result.labels[k], card)
        try:
            sc = hd.sc.SCImage.from_ref_dataset(
                ref_dataset=source,
                pixel_array=pixels,
                photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
                bits_allocated=8,
                coordinate_system=hd.CoordinateSystemNames.PATIENT,
                series_instance_uid=series_uid,
                series_number=series_number,
                sop_instance_uid=generate_uid(prefix=None),
                instance_number=number,
                **equipment.highdicom_kwargs(),
                # highdicom annotates this as ints; spacing in mm is of course fractional.
                pixel_spacing=(float(volume.spacing[1]), float(volume.spacing[2])),  # type: ignore[arg-type]
                patient_orientation=patient_orientation(volume),
                series_description=description,
                transfer_syntax_uid=ExplicitVRLittleEndian,
            )
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise EncodeError(f"cannot create SC overlay for model '{card.model.name}': {exc}") from exc
        reference = Dataset()
        reference.ReferencedSOPClassUID = source.SOPClassUID
        reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
        sc.SourceImageSequence = [reference]
        sc.DerivationDescription = f"Label overlay by {card.model.name} {card.model.version}"[:1024]
        sc.BurnedInAnnotation = "NO"
        if source.get("BodyPartExamined"):
            sc.BodyPartExamined = source.BodyPartExamined
        add_algorithm_equipment(sc, card, when)
        images.append(sc)
    log.info("SC overlays built: %d", len(images))
    return images
