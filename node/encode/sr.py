"""Comprehensive 3D SR with a TID 1500 Measurement Report of one analysis result.

Content tree (every measurement group carries the TID 4019 algorithm identification of the model)::

    Imaging Measurement Report (TID 1500)
      observation context: device observer = the algorithm (Device UID from provenance)
      procedure reported: "<modality> unspecified body region" (CID 100), by the volume's modality
      Imaging Measurements
        per finding    TID 1411 volumetric group: tracking id/UID (the same as the finding's own SEG
                       segment), Finding Category/Finding (card codes), Referenced Segment (that segment
                       + the finding's source slices), Volume, Long axis, mean value (CT: attenuation
                       coefficient in HU; MR: signal intensity)
                       (TID 1501 with source images instead, when no SEG was written)
      Qualitative Evaluations (TID 1500 rows 12-14)
        per card label CODE: concept = the label's type (e.g. Nodule), value = Present / Absent
        once           CODE: Priority = suggested reading priority; TEXT: Comment = its reason

Statements about the whole series (presence, priority) have no region, so they are not TID 1411 groups;
they sit in the report's own Qualitative Evaluations container rather than in TID 1501 groups beside the
TID 1411 ones, because pixelmed's validator checks every group of one Imaging Measurements container
against a single template (TID 1411 as soon as one group references a segment) and reports each TID 1501
group there as a TID 1411 group without a region; dciodvfy accepts both forms.

Codes and why:

- Volume: (SCT 118565006 "Volume"), unit (UCUM mm3). Long axis: (SCT 103339001 "Long axis"), unit mm:
  the finding's longest diameter in the axial plane is what RECIST-style "long axis" means, where the
  generic "Diameter" would not say which one. Both are in CID 7469.
- Mean value: (DCM 112031 "Attenuation Coefficient") in [hnsf'U] for CT, (DCM 110852 "MR signal
  intensity") without unit for MR, each with Derivation (SCT 373098007 "Mean"), the TID 1419 pattern.
  Other modalities get no mean value.
- Presence: the label's type code (e.g. SCT 27925004 "Nodule") = (SCT 52101004 "Present") / (SCT
  272519000 "Absent"), the values of CID 240 "Present-Absent" as the installed DICOM dictionary defines
  it. TID 1500 row 13 takes any concept name, so the label itself is the question.
- Priority: (SCT 260870009 "Priority") whose value is the DICOM Requested Procedure Priority defined
  term (STAT, HIGH, MEDIUM, ROUTINE, LOW). No standard code set holds exactly these terms, so they are
  coded in a private scheme "99PACSNODE" declared in the Coding Scheme Identification Sequence. The
  reason is a TEXT item (DCM 121106 "Comment") beside it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from node.analyse.card import ModelCard
from node.analyse.types import AnalysisResult, Finding, Priority
from node.encode.provenance import (
    Equipment,
    add_algorithm_equipment,
    coded,
    device_uid,
    sr_algorithm_identification,
)
from node.encode.seg import frames_by_segment
from node.encode.sources import complete_type2
from node.errors import EncodeError

log = logging.getLogger(__name__)

PRIORITY_SCHEME = "99PACSNODE"
PRIORITY_CONCEPT = codes.SCT.Priority  # (SCT 260870009), meaning "Priority (attribute)"
PRESENT = codes.cid240.Present  # (SCT 52101004)
ABSENT = codes.cid240.Absent  # (SCT 272519000)
COMMENT = codes.DCM.Comment  # (DCM 121106)
IMAGING_MEASUREMENTS = "126010"  # (DCM 126010) "Imaging Measurements", TID 1500 row 6
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")  # TID 1500 row 12
VOLUME = codes.SCT.Volume  # (SCT 118565006)
LONG_AXIS = codes.SCT.LongAxis  # (SCT 103339001)
MEAN = codes.SCT.Mean  # (SCT 373098007), used as derivation

# Mean value of a finding by modality: (concept, unit). A modality not listed gets no mean value.
_MEAN_VALUE = {
    "CT": (codes.DCM.AttenuationCoefficient, codes.UCUM.HounsfieldUnit),
    "MR": (codes.DCM.MRSignalIntensity, codes.UCUM.NoUnits),
}
# CID 100 procedure by modality; anything else is a generic imaging procedure.
_PROCEDURE = {
    "CT": codes.cid100.CTUnspecifiedBodyRegion,
    "MR": codes.cid100.MRIUnspecifiedBodyRegion,
    "PT": codes.cid100.PETUnspecifiedBodyRegion,
    "NM": codes.cid100.NMUnspecifiedBodyRegion,
    "CR": codes.cid100.XRUnspecifiedBodyRegion,
    "DX": codes.cid100.XRUnspecifiedBodyRegion,
}
_LO_MAX = 64


def priority_code(priority: Priority) -> hd.sr.CodedConcept:
    """The suggested priority as a code of the private scheme (value = DICOM defined term)."""
    return hd.sr.CodedConcept(
        value=priority.value,
        scheme_designator=PRIORITY_SCHEME,
        meaning=f"{priority.value.capitalize()} priority",
    )


def document_args(
    equipment: Equipment, series_number: int, instance_number: int, series_description: str
) -> dict[str, Any]:
    """The arguments every SR the node writes gives highdicom's SR document classes (Comprehensive 3D SR
    here, the ECG report's Comprehensive SR): a new series and instance, our equipment, a complete but
    unverified document, and the private coding scheme of the suggested priority."""
    return {
        "series_instance_uid": generate_uid(prefix=None),
        "series_number": series_number,
        "sop_instance_uid": generate_uid(prefix=None),
        "instance_number": instance_number,
        **equipment.highdicom_kwargs(),
        "series_description": series_description[:_LO_MAX],
        "is_complete": True,
        "is_final": False,
        "is_verified": False,
        "coding_schemes": [_priority_scheme()],
    }


def _priority_scheme() -> CodingSchemeIdentificationItem:
    return CodingSchemeIdentificationItem(
        designator=PRIORITY_SCHEME,
        name="pacs-node reading priority (DICOM Requested Procedure Priority defined terms)",
        responsible_organization="pacs-node project",
    )


def _measurements(finding: Finding, modality: str) -> list[hd.sr.Measurement]:
    """Volume, long axis and (CT, MR) mean value; a value that is not finite is left out, not invented."""
    # Rounded so that the Decimal String stays short and exact: 0.01 mm3 / 0.01 mm / 0.1 unit.
    wanted: list[tuple[Code, float, Code, Code | None]] = [
        (VOLUME, round(finding.volume_mm3, 2), codes.UCUM.CubicMillimeter, None),
        (LONG_AXIS, round(finding.longest_axial_diameter_mm, 2), codes.UCUM.Millimeter, None),
    ]
    mean = _MEAN_VALUE.get(modality)
    if mean is not None:
        wanted.append((mean[0], round(finding.mean_value, 1), mean[1], MEAN))
    items = []
    for name, value, unit, derivation in wanted:
        if not math.isfinite(value):
            log.warning("finding %d: %s is not finite, left out of the SR", finding.number, name.meaning)
            continue
        items.append(hd.sr.Measurement(name=name, value=value, unit=unit, derivation=derivation))
    return items


def _source_images(result: AnalysisResult, slices: Sequence[int]) -> list[Dataset]:
    headers = result.volume.headers
    return [headers[k] for k in sorted(set(slices)) if 0 <= k < len(headers)]


def _referenced_segment(
    result: AnalysisResult,
    seg: Dataset,
    segment: int,
    finding: Finding,
    frames: dict[int, dict[int, int]],
) -> hd.sr.ReferencedSegment:
    """Point at the finding's own ``segment`` of the SEG and at the source slices that hold it.

    Frame numbers are left out on purpose: the SOP Instance Reference macro allows Referenced Frame
    Number or Referenced Segment Number, not both (dciodvfy reports an error otherwise).
    """
    by_slice = frames.get(segment, {})
    slices = [k for k in finding.slice_indices if k in by_slice]
    if not slices:
        raise EncodeError(f"finding {finding.tracking_id}: SEG segment {segment} has no frame on its slices")
    return hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        segment_number=segment,
        source_images=[
            hd.sr.SourceImageForSegmentation(h.SOPClassUID, h.SOPInstanceUID) for h in _source_images(result, slices)
        ],
    )


def _finding_group(
    result: AnalysisResult,
    card: ModelCard,
    finding: Finding,
    seg: Dataset | None,
    frames: dict[int, dict[int, int]],
    segments: dict[str, SegmentRef],
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations:
    try:
        label = card.label(finding.label)
    except KeyError as exc:
        raise EncodeError(f"finding of label {finding.label} that model '{card.model.name}' does not define") from exc
    measurements = _measurements(finding, result.volume.modality)
    if seg is None:
        # Without a SEG there is no segment to point at: a TID 1501 group names the source slices.
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=generate_uid(prefix=None), identifier=finding.tracking_id[:_LO_MAX]
            ),
            finding_category=coded(label.category),
            finding_type=coded(label.type),
            algorithm_id=sr_algorithm_identification(card),
            measurements=measurements,
            source_images=[
                hd.sr.SourceImageForMeasurementGroup(h.SOPClassUID, h.SOPInstanceUID)
                for h in _source_images(result, finding.slice_indices)
            ],
        )
    ref = segments[finding.tracking_id]
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        # The segment's own tracking identity: a viewer links this group to that outline.
        tracking_identifier=hd.sr.TrackingIdentifier(uid=ref.tracking_uid, identifier=finding.tracking_id[:_LO_MAX]),
        referenced_segment=_referenced_segment(result, seg, ref.number, finding, frames),
        finding_category=coded(label.category),
        finding_type=coded(label.type),
        algorithm_id=sr_algorithm_identification(card),
        measurements=measurements,
    )


def _qualitative_evaluations(
    result: AnalysisResult, card: ModelCard, presence: dict[int, bool]
) -> hd.sr.ContainerContentItem:
    """TID 1500's Qualitative Evaluations container: presence per label, the priority and its reason."""
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    container = hd.sr.ContainerContentItem(name=QUALITATIVE_EVALUATIONS, relationship_type=contains)
    items: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(
            name=coded(label.type), value=PRESENT if presence[label.index] else ABSENT, relationship_type=contains
        )
        for label in card.labels
    ]
    items.append(
        hd.sr.CodeContentItem(name=PRIORITY_CONCEPT, value=priority_code(result.priority), relationship_type=contains)
    )
    if result.priority_reason:
        items.append(
            hd.sr.TextContentItem(name=COMMENT, value=result.priority_reason[:1024], relationship_type=contains)
        )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def label_presence(result: AnalysisResult, card: ModelCard) -> dict[int, bool]:
    """Presence per card label index: ``result.present`` where it says so, else from the label map."""
    presence = {i: result.present[i] for i in (label.index for label in card.labels) if i in result.present}
    if len(presence) < len(card.labels):
        # One pass over the map answers every label the result left out.
        counts = np.bincount(result.labels.ravel(), minlength=256)
        presence.update(
            {label.index: bool(counts[label.index]) for label in card.labels if label.index not in presence}
        )
    return {label.index: presence[label.index] for label in card.labels}


def _stand_in_group(card: ModelCard) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(prefix=None), identifier="removed"),
        algorithm_id=sr_algorithm_identification(card),
    )


def _concept_value(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


@dataclass(frozen=True)
class SegmentRef:
    """A segment of the SEG as the SR points at it."""

    number: int
    tracking_uid: str


def _check_seg(seg: Dataset, result: AnalysisResult, card: ModelCard) -> dict[str, SegmentRef]:
    """The finding segments of ``seg`` by tracking id ("Nodule 2"); refuse a SEG that is not of this
    volume, lacks a segment for a finding or an organ label, or codes one differently from the card."""
    if seg.StudyInstanceUID != result.volume.study_instance_uid:
        raise EncodeError("the SEG belongs to another study than the analysed volume")
    by_name = {str(item.SegmentLabel): item for item in seg.SegmentSequence}
    wanted = [(label.name, label) for label in card.labels if not label.findings]
    wanted += [(f.tracking_id, card.label(f.label)) for f in result.findings]
    refs: dict[str, SegmentRef] = {}
    for name, label in wanted:
        item = by_name.get(name[:_LO_MAX])
        type_code = item.SegmentedPropertyTypeCodeSequence[0] if item is not None else None
        if (
            item is None
            or type_code is None
            or (type_code.CodingSchemeDesignator, type_code.CodeValue) != (label.type.scheme, label.type.value)
        ):
            raise EncodeError(f"the SEG has no segment '{name}' coded as the card's label '{label.name}'")
        if label.findings:
            uid = str(item.get("TrackingUID", "") or "")
            if not uid:
                raise EncodeError(f"SEG segment '{name}' has no Tracking UID for its SR group to share")
            refs[name] = SegmentRef(int(item.SegmentNumber), uid)
    return refs


def build_sr(
    result: AnalysisResult,
    card: ModelCard,
    seg: Dataset | None,
    *,
    series_number: int = 902,
    instance_number: int = 1,
    equipment: Equipment | None = None,
    when: datetime | None = None,
) -> Dataset:
    """Encode findings, label presence and the suggested priority as a Comprehensive 3D SR (TID 1500).

    Parameters
    ----------
    result
        The analysis result.
    card
        The model card (codes, algorithm identification, device identity).
    seg
        The SEG made by :func:`node.encode.seg.build_seg` from the same result and card, or ``None``
        when no SEG is written; findings then reference their source slices instead of a segment.
    series_number, instance_number
        Series Number and Instance Number of the new object.
    equipment
        The node as creating equipment; defaults to :class:`~node.encode.provenance.Equipment` ().
    when
        Contribution DateTime of the algorithm; defaults to now (local time with offset).

    Returns
    -------
    pydicom.dataset.Dataset
        A ``highdicom.sr.Comprehensive3DSR`` in a new series of the source study. Its Current Requested
        Procedure Evidence Sequence lists the source series and the SEG.

    Raises
    ------
    EncodeError
        If the SEG does not match the result or card, or highdicom refuses the content.
    """
    equipment = equipment or Equipment()
    when = when or datetime.now().astimezone()
    volume = result.volume
    frames: dict[int, dict[int, int]] = {}
    segments: dict[str, SegmentRef] = {}
    if seg is not None:
        segments = _check_seg(seg, result, card)
        frames = frames_by_segment(seg, {str(h.SOPInstanceUID): k for k, h in enumerate(volume.headers)})
    complete_type2(volume.headers)
    presence = label_presence(result, card)
    evidence = [*volume.headers, *([seg] if seg is not None else [])]
    description = f"{card.model.name} {card.model.version}"
    try:
        groups: list[
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations
        ] = [_finding_group(result, card, finding, seg, frames, segments) for finding in result.findings]
        observer = hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=device_uid(card),
                name=card.model.name[:_LO_MAX],
                manufacturer_name=card.model.manufacturer,
                model_name=card.model.name[:_LO_MAX],
            ),
        )
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=observer),
            procedure_reported=_PROCEDURE.get(volume.modality, codes.cid100.ImagingProcedure),
            # highdicom insists on at least one measurement group, TID 1500 only on one of its three
            # containers: with no finding, a stand-in group is removed again below.
            imaging_measurements=groups or [_stand_in_group(card)],
        )
        content = report[0].ContentSequence
        if not groups:
            del content[[_concept_value(item) for item in content].index(IMAGING_MEASUREMENTS)]
        content.append(_qualitative_evaluations(result, card, presence))
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report[0],
            **document_args(equipment, series_number, instance_number, f"AI SR {description}"),
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise EncodeError(f"cannot create SR for model '{card.model.name}': {exc}") from exc
    add_algorithm_equipment(sr, card, when)
    log.info("SR built: %d findings, %d measurement groups", len(result.findings), len(groups))
    return sr
