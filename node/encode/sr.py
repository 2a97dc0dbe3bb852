"""Comprehensive 3D SR with a TID 1500 Measurement Report of one analysis result.

Content tree (all groups carry the TID 4019 algorithm identification of the model)::

    Imaging Measurement Report (TID 1500)
      observation context: device observer = the algorithm (Device UID from provenance)
      procedure reported: "<modality> unspecified body region" (CID 100), by the volume's modality
      Imaging Measurements
        per finding    TID 1411 volumetric group: tracking id/UID, Finding Category/Finding (card codes),
                       Referenced Segment (SEG segment + the finding's source slices), Volume, Long axis,
                       mean value (CT: attenuation coefficient in HU; MR: signal intensity)
                       (TID 1501 with source images instead, when no SEG was written)
        per card label TID 1501 group: Finding = label type, Presence of property = Present / Absent
        once           TID 1501 group: Priority = suggested reading priority, Comment = its reason

Codes and why:

- Volume: (SCT 118565006 "Volume"), unit (UCUM mm3). Long axis: (SCT 103339001 "Long axis"), unit mm:
  the finding's longest diameter in the axial plane is what RECIST-style "long axis" means, where the
  generic "Diameter" would not say which one. Both are in CID 7469.
- Mean value: (DCM 112031 "Attenuation Coefficient") in [hnsf'U] for CT, (DCM 110852 "MR signal
  intensity") without unit for MR, each with Derivation (SCT 373098007 "Mean"), the TID 1419 pattern.
  Other modalities get no mean value.
- Presence: (DCM 121052 "Presence of property") = (SCT 52101004 "Present") / (SCT 272519000 "Absent"),
  the values of CID 240 "Present-Absent" as the installed DICOM dictionary defines it. The label
  being evaluated is the group's Finding (DCM 121071), so the concept name itself stays fixed.
- Priority: (SCT 260870009 "Priority") whose value is the DICOM Requested Procedure Priority defined
  term (STAT, HIGH, MEDIUM, ROUTINE, LOW). No standard code set holds exactly these terms, so they are
  coded in a private scheme "99PACSNODE" declared in the Coding Scheme Identification Sequence. The
  reason is a TEXT item (DCM 121106 "Comment") beside it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from node.analyse.card import Label, ModelCard
from node.analyse.types import AnalysisResult, Finding, Priority
from node.encode.provenance import (
    Equipment,
    add_algorithm_equipment,
    coded,
    device_uid,
    sr_algorithm_identification,
)
from node.encode.seg import frames_by_segment, segment_numbers
from node.encode.sources import complete_type2
from node.errors import EncodeError

log = logging.getLogger(__name__)

PRIORITY_SCHEME = "99PACSNODE"
PRIORITY_CONCEPT = codes.SCT.Priority  # (SCT 260870009), meaning "Priority (attribute)"
PRESENCE_CONCEPT = codes.DCM.PresenceOfProperty  # (DCM 121052)
PRESENT = codes.cid240.Present  # (SCT 52101004)
ABSENT = codes.cid240.Absent  # (SCT 272519000)
COMMENT = codes.DCM.Comment  # (DCM 121106)
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
    """Point at ``segment`` of the SEG and at the source slices that hold this finding.

    Frame numbers are left out on purpose: the SOP Instance Reference macro allows Referenced Frame
    Number or Referenced Segment Number, not both (dciodvfy reports an error otherwise). The source
    slices name the part of the segment that is this finding.
    """
    by_slice = frames.get(segment, {})
    slices = [k for k in finding.slice_indices if k in by_slice]
    if not slices:
        raise EncodeError(
            f"finding {finding.label_name} {finding.number}: SEG segment {segment} has no frame on its slices"
        )
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
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations:
    try:
        label = card.label(finding.label)
    except KeyError as exc:
        raise EncodeError(f"finding of label {finding.label} that model '{card.model.name}' does not define") from exc
    tracking = hd.sr.TrackingIdentifier(
        uid=generate_uid(prefix=None), identifier=f"{label.name} {finding.number}"[:_LO_MAX]
    )
    measurements = _measurements(finding, result.volume.modality)
    if seg is None:
        # Without a SEG there is no segment to point at: a TID 1501 group names the source slices.
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            finding_category=coded(label.category),
            finding_type=coded(label.type),
            algorithm_id=sr_algorithm_identification(card),
            measurements=measurements,
            source_images=[
                hd.sr.SourceImageForMeasurementGroup(h.SOPClassUID, h.SOPInstanceUID)
                for h in _source_images(result, finding.slice_indices)
            ],
        )
    segment = segment_numbers(card)[label.index]
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_segment=_referenced_segment(result, seg, segment, finding, frames),
        finding_category=coded(label.category),
        finding_type=coded(label.type),
        algorithm_id=sr_algorithm_identification(card),
        measurements=measurements,
    )


def _presence_group(label: Label, present: bool, card: ModelCard) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(prefix=None), identifier=f"{label.name} presence"[:_LO_MAX]
        ),
        finding_category=coded(label.category),
        finding_type=coded(label.type),
        algorithm_id=sr_algorithm_identification(card),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=PRESENCE_CONCEPT, value=PRESENT if present else ABSENT)
        ],
    )


def _priority_group(result: AnalysisResult, card: ModelCard) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(prefix=None), identifier="Suggested reading priority"
        ),
        algorithm_id=sr_algorithm_identification(card),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=PRIORITY_CONCEPT, value=priority_code(result.priority))
        ],
    )
    if result.priority_reason:
        # The template has no slot for free text, but a TEXT child of a CONTAINER is valid SR content.
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=COMMENT,
                value=result.priority_reason[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


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


def _check_seg(seg: Dataset, result: AnalysisResult, card: ModelCard) -> None:
    """Refuse a SEG that is not of this volume or does not number its segments as the card does."""
    if seg.StudyInstanceUID != result.volume.study_instance_uid:
        raise EncodeError("the SEG belongs to another study than the analysed volume")
    described = {int(item.SegmentNumber): item for item in seg.SegmentSequence}
    for label in card.labels:
        item = described.get(segment_numbers(card)[label.index])
        type_code = item.SegmentedPropertyTypeCodeSequence[0] if item is not None else None
        if type_code is None or (type_code.CodingSchemeDesignator, type_code.CodeValue) != (
            label.type.scheme,
            label.type.value,
        ):
            raise EncodeError(f"the SEG has no segment for label '{label.name}' where the card puts it")


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
    if seg is not None:
        _check_seg(seg, result, card)
        frames = frames_by_segment(seg, {str(h.SOPInstanceUID): k for k, h in enumerate(volume.headers)})
    complete_type2(volume.headers)
    presence = label_presence(result, card)
    evidence = [*volume.headers, *([seg] if seg is not None else [])]
    description = f"{card.model.name} {card.model.version}"
    try:
        groups: list[
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations
        ] = [_finding_group(result, card, finding, seg, frames) for finding in result.findings]
        groups += [_presence_group(label, presence[label.index], card) for label in card.labels]
        groups.append(_priority_group(result, card))
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
            imaging_measurements=groups,
        )
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report[0],
            series_instance_uid=generate_uid(prefix=None),
            series_number=series_number,
            sop_instance_uid=generate_uid(prefix=None),
            instance_number=instance_number,
            **equipment.highdicom_kwargs(),
            series_description=f"AI SR {description}"[:_LO_MAX],
            is_complete=True,
            is_final=False,
            is_verified=False,
            coding_schemes=[_priority_scheme()],
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise EncodeError(f"cannot create SR for model '{card.model.name}': {exc}") from exc
    add_algorithm_equipment(sr, card, when)
    log.info("SR built: %d findings, %d measurement groups", len(result.findings), len(groups))
    return sr
