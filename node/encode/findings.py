"""``findings.json``: the findings of one analysed series in plain JSON, for people and the triage view.

Each finding carries the numbers that tie it to the result objects: its SEG segment number and the
Tracking UID that its SEG segment and its SR measurement group share, plus the model's confidence and
the key slice (largest cross-section) that the triage page shows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from node.analyse.card import ModelCard
from node.analyse.types import AnalysisResult, Finding

_TRACKING_ID = ("112039", "DCM")
_TRACKING_UID = ("112040", "DCM")


def _groups(item: Dataset) -> Iterator[Dataset]:
    """Every content item below ``item`` that has children (depth first)."""
    for child in item.get("ContentSequence", []):
        if "ContentSequence" in child:
            yield child
            yield from _groups(child)


def _concept(item: Dataset) -> tuple[str, str]:
    name = item.ConceptNameCodeSequence[0]
    return str(name.CodeValue), str(name.CodingSchemeDesignator)


def tracking_uids(sr: Dataset) -> dict[str, str]:
    """Tracking Identifier -> Tracking UID of each measurement group of an SR."""
    found: dict[str, str] = {}
    for group in _groups(sr):
        ident = uid = None
        for child in group.ContentSequence:
            if "ConceptNameCodeSequence" not in child:
                continue
            if _concept(child) == _TRACKING_ID:
                ident = str(child.TextValue)
            elif _concept(child) == _TRACKING_UID:
                uid = str(child.UID)
        if ident is not None and uid is not None:
            found[ident] = uid
    return found


def segment_numbers(seg: Dataset) -> dict[str, int]:
    """Segment Label -> Segment Number of a SEG."""
    return {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}


def _finding(f: Finding, result: AnalysisResult, segments: dict[str, int], uids: dict[str, str]) -> dict[str, object]:
    headers = result.volume.headers
    key: dict[str, object] | None = None
    if 0 <= f.key_slice < len(headers):
        key = {
            "index": f.key_slice,
            "z_mm": round(f.key_slice_z_mm, 2),
            "sop_instance_uid": str(headers[f.key_slice].SOPInstanceUID),
            "area_mm2": round(f.key_slice_area_mm2, 2),
        }
    confidence = None
    if f.confidence_mean is not None and f.confidence_max is not None:
        confidence = {"mean": round(f.confidence_mean, 3), "max": round(f.confidence_max, 3)}
    return {
        "label": f.label_name,
        "number": f.number,
        "name": f.tracking_id,
        "segment_number": segments.get(f.tracking_id),
        "tracking_uid": uids.get(f.tracking_id),
        "volume_mm3": round(f.volume_mm3, 2),
        "longest_axial_diameter_mm": round(f.longest_axial_diameter_mm, 2),
        "centroid_mm": [round(c, 2) for c in f.centroid_mm],
        "mean_value": round(f.mean_value, 1),
        "confidence": confidence,
        "key_slice": key,
    }


def findings_json(
    result: AnalysisResult, card: ModelCard, datasets: Sequence[Dataset], files: list[Path]
) -> dict[str, object]:
    """Model, priority and its reason, each finding (measurements, segment, tracking UID, confidence,
    key slice) and the names of the result files; ``datasets`` are the result objects written."""
    segments: dict[str, int] = {}
    uids: dict[str, str] = {}
    for ds in datasets:
        if ds.Modality == "SEG":
            segments = segment_numbers(ds)
        elif ds.Modality == "SR":
            uids = tracking_uids(ds)
    return {
        "series_instance_uid": result.volume.series_instance_uid,
        "model": {"name": card.model.name, "version": card.model.version},
        "priority": str(result.priority),
        "priority_reason": result.priority_reason,
        "findings": [_finding(f, result, segments, uids) for f in result.findings],
        "files": [p.name for p in files],
    }
