"""The document a notification carries: one result (an analysed series) in plain JSON.

Built from the result's ``findings.json`` (written by the worker beside the SEG and the SR) and the
headers of its result files, never from the job's payload alone, so every try of a job sends the same
bytes (the webhook's signature and the receiver's deduplication rely on it). The document holds UIDs,
the accession number, the model, the suggested priority and the findings; never a patient's name, ID or
birth date. Those are read separately (:class:`Patient`), only for an HL7 target that asks for them.

Keys of ``findings.json`` that an older worker did not write (``model``, a finding's ``name``,
``segment_number``, ``tracking_uid``, ``confidence``, ``key_slice``) are ``null`` in the document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from node.notify.jobs import idempotency_key
from node.notify.outcome import ResultUnreadableError

SCHEMA = "pacs-node/result/1"  # the document's format; a change that breaks a reader gets a new number

_HEADER_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "AccessionNumber",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
]


@dataclass(frozen=True, slots=True)
class Patient:
    """The source's patient identifiers as the result copied them ("" when absent). Never log these."""

    id: str = ""
    name: str = ""  # DICOM PN: family^given^middle^prefix^suffix
    birth_date: str = ""  # YYYYMMDD
    sex: str = ""


@dataclass(frozen=True, slots=True)
class Result:
    """A result to notify: its JSON document and, kept apart from it, the patient identifiers."""

    document: dict[str, Any]
    patient: Patient

    def body(self) -> bytes:
        """The document as UTF-8 JSON with sorted keys: the same bytes on every try."""
        return json.dumps(self.document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultUnreadableError(f"{path}: missing (was the result's outbox folder removed?)") from None
    except (OSError, ValueError) as exc:
        raise ResultUnreadableError(f"{path}: cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ResultUnreadableError(f"{path}: not a JSON object")
    return data


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _finding(item: dict[str, Any]) -> dict[str, Any]:
    measurements = {
        key: item.get(key) for key in ("volume_mm3", "longest_axial_diameter_mm", "mean_value") if key in item
    }
    return {
        "label": item.get("label"),
        "number": item.get("number"),
        "name": item.get("name"),  # "Nodule 2": as the SEG segment and the SR measurement group name it
        "segment_number": item.get("segment_number"),
        "tracking_uid": item.get("tracking_uid"),
        "measurements": measurements,
        "centroid_mm": item.get("centroid_mm"),
        "confidence": item.get("confidence"),
        "key_slice": item.get("key_slice"),
    }


def read_result(data_dir: Path, payload: dict[str, Any], ae_title: str) -> Result:
    """The result a notification job names (its ``path`` and ``result``; see :mod:`node.notify.jobs`).

    Raises
    ------
    ResultUnreadableError
        The payload names no file under ``data_dir``, or ``findings.json`` or a result file listed in it
        cannot be read.
    """
    rel, result_uid, target = payload.get("path"), payload.get("result"), payload.get("target")
    if not isinstance(rel, str) or not isinstance(result_uid, str) or not isinstance(target, str):
        raise ResultUnreadableError("the notification job's payload lacks its path, result or target")
    root = data_dir.resolve()
    findings_path = (root / rel).resolve()
    if not findings_path.is_relative_to(root):
        raise ResultUnreadableError(f"the notification job's path '{rel}' is outside the data folder {root}")
    findings = _read_json(findings_path)
    results: list[dict[str, Any]] = []
    study, accession, patient = "", "", Patient()
    for name in findings.get("files", []):
        path = findings_path.parent / str(name)
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except (OSError, InvalidDicomError) as exc:
            raise ResultUnreadableError(f"{path}: cannot be read: {exc}") from None
        results.append(
            {
                "sop_class_uid": _text(ds, "SOPClassUID"),
                "sop_instance_uid": _text(ds, "SOPInstanceUID"),
                "series_instance_uid": _text(ds, "SeriesInstanceUID"),
                "modality": _text(ds, "Modality"),
            }
        )
        study = study or _text(ds, "StudyInstanceUID")
        accession = accession or _text(ds, "AccessionNumber")
        if not patient.id and not patient.name:
            patient = Patient(
                _text(ds, "PatientID"), _text(ds, "PatientName"), _text(ds, "PatientBirthDate"), _text(ds, "PatientSex")
            )
    model: dict[str, Any] = findings["model"] if isinstance(findings.get("model"), dict) else {}
    document = {
        "schema": SCHEMA,
        "node": ae_title,
        "idempotency_key": idempotency_key(target, result_uid),
        "study_instance_uid": study,
        "accession_number": accession or None,
        "series_instance_uid": findings.get("series_instance_uid"),
        "model": {"name": model.get("name") or payload.get("model"), "version": model.get("version")},
        "priority": {"suggested": findings.get("priority"), "reason": findings.get("priority_reason")},
        "findings": [_finding(f) for f in findings.get("findings", []) if isinstance(f, dict)],
        "results": results,
    }
    return Result(document, patient)
