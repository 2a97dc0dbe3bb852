"""Comprehensive SR with a TID 3700 ECG Report of one ECG analysis.

Content tree (PS3.16 TID 3700 and the templates it includes)::

    ECG Report (LN 11524-0), TID 3700
      language of content (TID 1204): English
      observation context (TID 1001): device observer = the algorithm (Device UID from provenance)
      ECG Global Measurements (DCM 122158), TID 3713
        Heart rate (LN 8867-4) in {H.B.}/min, inferred from the source waveform
        RR, PR, QRS, QT (CID 3689 ECG Global Waveform Durations, MDC) in ms
        QTc by Bazett and by Fridericia (CID 3227 QTc Measurements, MDC) in ms
      Qualitative Analysis (DCM 122145), TID 3717
        Electrocardiogram finding (SCT 271921002) = the rhythm, coded as the card's label
        Comment: the network's probability and the rule-based baseline's rhythm
      Summary (DCM 121111), TID 3719
        Priority (SCT 260870009) = the suggested reading priority (private scheme 99PACSNODE, as in the
        image SR), Comment = the rule that set it

A measurement the signal processing could not make (no P wave: no PR) is left out, never invented. The
SR is a new series of the ECG's study; its evidence is the source waveform; the algorithm's provenance
(Contributing Equipment, Device UID from the model's sha256) is the image results' own.
"""

from __future__ import annotations

import logging
from datetime import datetime

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from node.analyse.card import ModelCard
from node.analyse.ecg.analysis import EcgResult
from node.encode.provenance import Equipment, add_algorithm_equipment, coded, device_uid
from node.encode.sources import complete_type2
from node.encode.sr import COMMENT, PRIORITY_CONCEPT, document_args, priority_code
from node.errors import EncodeError

log = logging.getLogger(__name__)

ECG_REPORT = codes.LN.ECGReport  # (LN 11524-0)
GLOBAL_MEASUREMENTS = codes.DCM.ECGGlobalMeasurements  # (DCM 122158)
QUALITATIVE_ANALYSIS = codes.DCM.QualitativeAnalysis  # (DCM 122145)
SUMMARY = codes.DCM.Summary  # (DCM 121111)
ECG_FINDING = codes.SCT.ElectrocardiogramFinding  # (SCT 271921002)
HEART_RATE = codes.LN.HeartRate  # (LN 8867-4)
SOURCE = codes.DCM.SourceOfMeasurement  # (DCM 121112)
BEATS_PER_MINUTE = hd.sr.CodedConcept("{H.B.}/min", "UCUM", "heart beats per minute")
MS = codes.UCUM.Millisecond
ENGLISH = hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")
# (measurement attribute, concept): CID 3689 durations and CID 3227 QTc, MDC codes.
_DURATIONS = (
    ("rr_ms", codes.cid3689.RRTimePeriodGlobal),
    ("pr_ms", codes.cid3689.PRTimePeriodGlobal),
    ("qrs_ms", codes.cid3689.QRSDurationGlobal),
    ("qt_ms", codes.cid3689.QTDurationGlobal),
    ("qtc_bazett_ms", codes.cid3227.QtcGlobalUsingBazettFormula),
    ("qtc_fridericia_ms", codes.cid3227.QtcGlobalUsingFredericiaFormula),
)
_LO_MAX = 64
_CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS


def _container(name: hd.sr.CodedConcept, template: str, items: list[hd.sr.ContentItem]) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(name=name, template_id=template, relationship_type=_CONTAINS)
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _global_measurements(result: EcgResult) -> hd.sr.ContainerContentItem:
    m = result.measurements
    items: list[hd.sr.ContentItem] = []
    if m.heart_rate_bpm is not None:
        items.append(hd.sr.NumContentItem(HEART_RATE, m.heart_rate_bpm, BEATS_PER_MINUTE, relationship_type=_CONTAINS))
    for attribute, concept in _DURATIONS:
        value = getattr(m, attribute)
        if value is not None:
            items.append(hd.sr.NumContentItem(concept, float(value), MS, relationship_type=_CONTAINS))
    return _container(GLOBAL_MEASUREMENTS, "3713", items)


def _qualitative(result: EcgResult, card: ModelCard) -> hd.sr.ContainerContentItem:
    label = card.label(result.label)
    comment = (
        f"Rhythm by {card.model.name} {card.model.version}: {result.rhythm} (probability {result.confidence:.2f}); "
        f"rule-based baseline: {result.rule_rhythm}."
    )
    items: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(ECG_FINDING, coded(label.type), relationship_type=_CONTAINS),
        hd.sr.TextContentItem(COMMENT, comment[:1024], relationship_type=_CONTAINS),
    ]
    return _container(QUALITATIVE_ANALYSIS, "3717", items)


def _summary(result: EcgResult) -> hd.sr.ContainerContentItem:
    items: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(PRIORITY_CONCEPT, priority_code(result.priority), relationship_type=_CONTAINS)
    ]
    if result.priority_reason:
        items.append(hd.sr.TextContentItem(COMMENT, result.priority_reason[:1024], relationship_type=_CONTAINS))
    return _container(SUMMARY, "3719", items)


def _add_source(sr: Dataset, result: EcgResult) -> None:
    """Heart rate INFERRED FROM the source waveform (a WAVEFORM item). Added to the built dataset: highdicom
    0.28 creates WAVEFORM items but cannot read them back while it checks the content tree."""
    w = result.waveform
    source = hd.sr.WaveformContentItem(
        SOURCE, w.sop_class_uid, w.sop_instance_uid, relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM
    )
    for container in sr.ContentSequence:
        if container.ConceptNameCodeSequence[0].CodeValue != GLOBAL_MEASUREMENTS.value:
            continue
        for item in container.get("ContentSequence", []):
            if item.ConceptNameCodeSequence[0].CodeValue == HEART_RATE.value:
                item.ContentSequence = [source]


def build_ecg_sr(
    result: EcgResult,
    card: ModelCard,
    *,
    series_number: int = 903,
    instance_number: int = 1,
    equipment: Equipment | None = None,
    when: datetime | None = None,
) -> Dataset:
    """Encode the rhythm, the global measurements and the suggested priority as a Comprehensive SR (TID 3700).

    Raises
    ------
    EncodeError
        If highdicom refuses the content (nothing half-valid is returned).
    """
    equipment = equipment or Equipment()
    when = when or datetime.now().astimezone()
    source = result.waveform.header
    complete_type2([source])
    try:
        observer = hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=device_uid(card),
                name=card.model.name[:_LO_MAX],
                manufacturer_name=card.model.manufacturer,
                model_name=card.model.name[:_LO_MAX],
            ),
        )
        root = hd.sr.ContainerContentItem(name=ECG_REPORT, template_id="3700")
        language = hd.sr.LanguageOfContentItemAndDescendants(ENGLISH)
        root.ContentSequence = hd.sr.ContentSequence(
            [
                *language,
                *hd.sr.ObservationContext(observer_device_context=observer),
                _global_measurements(result),
                _qualitative(result, card),
                _summary(result),
            ]
        )
        sr = hd.sr.ComprehensiveSR(
            evidence=[source],
            content=root,
            **document_args(
                equipment, series_number, instance_number, f"AI ECG report {card.model.name} {card.model.version}"
            ),
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise EncodeError(f"cannot create the ECG report for model '{card.model.name}': {exc}") from exc
    _add_source(sr, result)
    add_algorithm_equipment(sr, card, when)
    log.info("ECG SR built: rhythm %s, priority %s", result.rhythm, result.priority)
    return sr


def ecg_findings_json(result: EcgResult, card: ModelCard, files: list[str]) -> dict[str, object]:
    """``findings.json`` of an ECG analysis: the rhythm, the measurements and the suggested priority."""
    return {
        "series_instance_uid": result.waveform.series_instance_uid,
        "model": {"name": card.model.name, "version": card.model.version},
        "kind": "waveform",
        "priority": str(result.priority),
        "priority_reason": result.priority_reason,
        "rhythm": {
            "label": result.rhythm,
            "code": card.label(result.label).type.model_dump(),
            "confidence": result.confidence,
            "probabilities": result.probabilities,
            "rule_baseline": result.rule_rhythm,
        },
        "measurements": result.measurements.as_dict(),
        "findings": [],
        "files": files,
    }
