"""DICOM Segmentation (SEG) of an analysis result: one segment per finding, one per other label.

Segments, in this order (see :func:`segment_layout`):

1. each card label that does not report findings (an organ: "Lung"), in card order, even when it is
   absent from this volume (it then has no frames: absence is also stated in the SR);
2. each finding, label by label in card order, in finding number order (largest first): "Nodule 1",
   "Nodule 2", ... with the label's coded category and type and a Tracking UID that the finding's SR
   measurement group shares, so a viewer can tell the outlines apart and link each to its figures.

Organ segment numbers therefore depend only on the card; finding segments follow them.

Laterality: the General Series Laterality is conditional on a paired body part; pixelmed asks for it
and dciodvfy rejects an empty one for an unpaired region. A Frame Anatomy Sequence in the shared
functional groups (the card's anatomic region and laterality) satisfies both.

Source images are the per-slice headers of the volume without Pixel Data: highdicom needs only their
geometry and identifiers (Rows, Columns, Pixel Spacing, orientation, position, UIDs) to derive the
plane positions and the per-frame Derivation Image Sequence, so nothing has to be decoded again.
The full 3-D label map is passed as one label-map style array; highdicom drops the empty frames itself.
Measured here (300 x 512 x 512, lungs on 296 slices, two nodules: 304 frames, 10 MB): about 0.4 s per
SEG once highdicom's standard tables are loaded (the first call of a process takes about 1.2 s).
Passing only the non-empty slices with explicit plane positions was slower (1.1 s against 0.7 s in one
cold comparison): highdicom then matches every plane against every source position.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from node.analyse.card import Label, ModelCard
from node.analyse.types import AnalysisResult, Finding, Volume
from node.encode.provenance import Equipment, add_algorithm_equipment, algorithm_identification, coded
from node.encode.sources import complete_type2
from node.errors import EncodeError

log = logging.getLogger(__name__)

_LO_MAX = 64


@dataclass(frozen=True)
class Segment:
    """One segment of the SEG: a card label, or one finding of a label that reports findings."""

    number: int
    label: Label
    finding: Finding | None = None
    tracking_uid: str | None = None

    @property
    def name(self) -> str:
        return self.finding.tracking_id if self.finding is not None else self.label.name


def segment_layout(card: ModelCard, findings: Sequence[Finding]) -> list[Segment]:
    """The segments of a SEG for ``findings`` under ``card``, numbered from 1 (see the module docstring).

    Finding segments get a new Tracking UID each.
    """
    segments = [Segment(0, label) for label in card.labels if not label.findings]
    for label in card.labels:
        if label.findings:
            own = sorted((f for f in findings if f.label == label.index), key=lambda f: f.number)
            segments += [Segment(0, label, f, generate_uid(prefix=None)) for f in own]
    return [replace(segment, number=n) for n, segment in enumerate(segments, start=1)]


def segment_label_map(labels: NDArray[np.uint8], card: ModelCard, segments: Sequence[Segment]) -> NDArray[np.integer]:
    """The label map with segment numbers as values: organ labels through a table, findings painted
    from their own masks (0 stays background).

    Raises
    ------
    EncodeError
        If the map holds a value that is no label of the card, or a finding has no mask.
    """
    known = {label.index for label in card.labels}
    # Cheap check first (one pass for the maximum): every value up to the maximum is a card label.
    top = int(labels.max(initial=0))
    if not set(range(1, top + 1)) <= known:
        # A value the card does not know would silently vanish through the table below: name it.
        counts = np.bincount(labels.ravel(), minlength=256)
        unknown = [v for v in np.flatnonzero(counts).tolist() if v and v not in known]
        if unknown:
            raise EncodeError(f"label map holds values {unknown} that model '{card.model.name}' does not define")
    dtype = np.uint8 if len(segments) <= 255 else np.uint16
    lut = np.zeros(256, dtype=dtype)
    for segment in segments:
        if segment.finding is None:
            lut[segment.label.index] = segment.number
    pixels: NDArray[np.integer] = np.asarray(lut[labels])
    for segment in segments:
        finding = segment.finding
        if finding is None:
            continue
        if finding.box is None or finding.mask is None:
            raise EncodeError(f"finding {finding.tracking_id} has no mask: its segment cannot be drawn")
        pixels[finding.box][finding.mask] = segment.number
    return pixels


def _segment_descriptions(card: ModelCard, segments: Sequence[Segment]) -> list[hd.seg.SegmentDescription]:
    algorithm = algorithm_identification(card)
    return [
        hd.seg.SegmentDescription(
            segment_number=segment.number,
            segment_label=segment.name[:_LO_MAX],
            segmented_property_category=coded(segment.label.category),
            segmented_property_type=coded(segment.label.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=segment.tracking_uid,
            tracking_id=segment.name[:_LO_MAX] if segment.tracking_uid else None,
            display_color=hd.color.CIELabColor.from_rgb(*segment.label.colour),
        )
        for segment in segments
    ]


def _frame_anatomy(card: ModelCard) -> Dataset:
    """Frame Anatomy Sequence item: the card's anatomic region and laterality (see the module docstring)."""
    anatomy = card.anatomy
    if anatomy is None:  # the card validator requires it when outputs.seg is set
        raise EncodeError(f"model '{card.model.name}' has no [anatomy] in its card: a SEG needs its region")
    region = Dataset()
    region.CodeValue = anatomy.region.value
    region.CodingSchemeDesignator = anatomy.region.scheme
    region.CodeMeaning = anatomy.region.meaning
    item = Dataset()
    item.AnatomicRegionSequence = [region]
    item.FrameLaterality = anatomy.laterality
    return item


def build_seg(
    result: AnalysisResult,
    card: ModelCard,
    *,
    series_number: int = 901,
    instance_number: int = 1,
    equipment: Equipment | None = None,
    when: datetime | None = None,
) -> Dataset:
    """Encode the label map of ``result`` as a binary DICOM Segmentation in a new series.

    Parameters
    ----------
    result
        The analysis result; ``result.volume.headers`` are the source slices (no Pixel Data needed).
    card
        The model card: segment labels, coded category/type, colours, algorithm identification.
    series_number, instance_number
        Series Number and Instance Number of the new object.
    equipment
        The node as creating equipment; defaults to :class:`Equipment` ().
    when
        Contribution DateTime of the algorithm; defaults to now (local time with offset).

    Returns
    -------
    pydicom.dataset.Dataset
        A ``highdicom.seg.Segmentation`` with file meta, same Study and Frame of Reference as the source.

    Raises
    ------
    EncodeError
        If no label is present at all (a SEG without a single frame cannot exist), the label map does
        not match the volume or the card, the source slices come from a multi-frame object, or
        highdicom refuses the input.
    """
    volume = result.volume
    if result.labels.shape != volume.shape:
        raise EncodeError(f"label map shape {result.labels.shape} differs from the volume's {volume.shape}")
    if len(volume.headers) != volume.shape[0]:
        raise EncodeError(f"{len(volume.headers)} source headers for {volume.shape[0]} slices")
    if len({str(h.SOPInstanceUID) for h in volume.headers}) != len(volume.headers):
        # Slices from one multi-frame object share a header; the frame behind each slice is not kept in
        # the volume, so a SEG could not name its source frames correctly. Refuse rather than guess.
        raise EncodeError("the source is a multi-frame object: SEG encoding supports one image per slice only")
    if not result.labels.any():
        raise EncodeError("no label is present in the volume: there is nothing to segment")
    equipment = equipment or Equipment()
    when = when or datetime.now().astimezone()
    segments = segment_layout(card, result.findings)
    pixels = segment_label_map(np.ascontiguousarray(result.labels, dtype=np.uint8), card, segments)
    description = f"{card.model.name} {card.model.version}"[:_LO_MAX]
    complete_type2(volume.headers)
    _complete_geometry(volume)
    try:
        seg = hd.seg.Segmentation(
            source_images=list(volume.headers),
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_segment_descriptions(card, segments),
            series_instance_uid=generate_uid(prefix=None),
            series_number=series_number,
            sop_instance_uid=generate_uid(prefix=None),
            instance_number=instance_number,
            content_label="AI_SEGMENTATION",
            content_description=description,
            series_description=f"AI SEG {description}"[:_LO_MAX],
            **equipment.highdicom_kwargs(),
            omit_empty_frames=True,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise EncodeError(f"cannot create SEG for model '{card.model.name}': {exc}") from exc
    seg.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [_frame_anatomy(card)]
    add_algorithm_equipment(seg, card, when)
    log.info("SEG built: %d segments, %d frames", len(seg.SegmentSequence), seg.NumberOfFrames)
    return seg


def _complete_geometry(volume: Volume) -> None:
    """Give the source headers the grid the analysis used where they omit Pixel Spacing or Slice Thickness.

    Both are Type 2 in CT and MR images, but a SEG must state its pixel measures, and highdicom copies
    them from the first source image. What the loader used stands in: its pixel spacing (1 mm when the
    source gave none; the loader logged that) and, for the thickness, the spacing between slices. Only
    the in-memory headers change.
    """
    first = volume.headers[0]
    if _positive(first.get("SliceThickness")) and first.get("PixelSpacing"):
        return
    thickness = f"{volume.slice_thickness or float(volume.spacing[0]):.6g}"
    spacing = [f"{float(volume.spacing[1]):.6g}", f"{float(volume.spacing[2]):.6g}"]
    for header in volume.headers:
        if not _positive(header.get("SliceThickness")):
            header.SliceThickness = thickness
        if not header.get("PixelSpacing"):
            header.PixelSpacing = spacing
    log.info("source slices lack Pixel Spacing or Slice Thickness: the SEG states the grid the analysis used")


def _positive(value: object) -> bool:
    try:
        return value is not None and value != "" and float(str(value)) > 0
    except ValueError:
        return False


def frames_by_segment(seg: Dataset, slice_of_sop: dict[str, int]) -> dict[int, dict[int, int]]:
    """For each segment number, map source slice index -> SEG frame number (1-based).

    Built from each frame's Segment Identification and Derivation Image Sequence, as highdicom writes
    them; frames whose source is not in ``slice_of_sop`` (SOP Instance UID -> slice index) are left out.
    """
    frames: dict[int, dict[int, int]] = {}
    # With a single segment, highdicom states it once in the shared functional groups.
    shared = seg.SharedFunctionalGroupsSequence[0].get("SegmentIdentificationSequence")
    for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        identification = item.get("SegmentIdentificationSequence") or shared
        segment = int(identification[0].ReferencedSegmentNumber)
        for derivation in item.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                index = slice_of_sop.get(str(source.ReferencedSOPInstanceUID))
                if index is not None:
                    frames.setdefault(segment, {})[index] = number
    return frames
