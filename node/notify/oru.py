"""The HL7 v2.5.1 ORU^R01 message of one result, for an interface engine (MLLP: :mod:`node.notify.mllp`).

Segments (``|`` separated, ``^`` components; values escaped as HL7 §2.7 says)::

    MSH|^~\\&|<sending app>|<sending facility>|<receiving app>|<receiving facility>|<now>||ORU^R01^ORU_R01|
        <control id>|P|2.5.1|||||||UNICODE UTF-8
    PID|1||<patient ID>||<name>||<birth date>|<sex>        only with include_patient and a source that had them
    ORC|RE|<accession>|<Study Instance UID>||CM
    OBR|1|<accession>|<Study Instance UID>|<model>^AI result <model> <version>^L|||<now>|...|<now>|||F
    OBX|1|CWE|PRIORITY^Suggested reading priority^L|1|HIGH^HIGH^L||||||F|||<now>
    NTE|1|L|<the reason for the priority>
    OBX|2|TX|<label>^<label>^L|<finding number>|<name>: volume 523.6 mm3, ...||||||F|||<now>
    ... one OBX per finding

The control ID (MSH-10, echoed in the ACK's MSA-2) is derived from the notification's idempotency key, so
every try of a result carries the same one and the engine can drop a repeat. Without ``include_patient``
there is no PID: the order is identified by its accession number (ORC-2, OBR-2, the placer order number)
and the Study Instance UID (ORC-3, OBR-3, the filler order number).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from node.config.notify import NotifyTarget
from node.notify.payload import Patient, Result

VERSION = "2.5.1"
MESSAGE_TYPE = "ORU^R01^ORU_R01"


def escape(text: str) -> str:
    """``text`` as an HL7 field value: separators as escape sequences, line breaks as spaces."""
    for char, sequence in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        text = text.replace(char, sequence)
    return " ".join(text.splitlines())


def control_id(key: str) -> str:
    """MSH-10 for an idempotency key: 20 hex digits (MSH-10 holds at most 20 characters in v2.5.1)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:20].upper()


def _segment(name: str, fields: Mapping[int, str]) -> str:
    """A segment from its 1-based field values (already escaped); fields not given are empty."""
    last = max(fields, default=0)
    return "|".join([name, *(fields.get(n, "") for n in range(1, last + 1))])


def _number(value: Any, unit: str = "", digits: int = 1) -> str | None:
    return f"{float(value):.{digits}f}{unit}" if isinstance(value, int | float) else None


def _finding_text(finding: Mapping[str, Any]) -> str:
    """One line per finding: ``Nodule 1: volume 523.6 mm3, longest axial diameter 12.1 mm, ...``."""
    measured = finding.get("measurements") or {}
    parts = [
        f"volume {v}" if (v := _number(measured.get("volume_mm3"), " mm3")) else "",
        f"longest axial diameter {v}" if (v := _number(measured.get("longest_axial_diameter_mm"), " mm")) else "",
        f"mean value {v}" if (v := _number(measured.get("mean_value"))) else "",
    ]
    confidence = finding.get("confidence")
    if isinstance(confidence, Mapping) and (mean := _number(confidence.get("mean"), digits=2)):
        peak = _number(confidence.get("max"), digits=2)
        parts.append(f"confidence {mean}" + (f" (max {peak})" if peak else ""))
    key_slice = finding.get("key_slice")
    if isinstance(key_slice, Mapping) and isinstance(key_slice.get("index"), int):
        z = _number(key_slice.get("z_mm"), " mm")
        parts.append(f"key slice {key_slice['index']}" + (f" (z {z})" if z else ""))
    name = finding.get("name") or f"{finding.get('label')} {finding.get('number')}"
    return f"{name}: " + ", ".join(p for p in parts if p)


def _pid(patient: Patient) -> str:
    """PID with the source's identifiers; DICOM PN (family^given^middle^prefix^suffix) becomes XPN."""
    names = [escape(part) for part in patient.name.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = names[:5]
    xpn = "^".join([family, given, middle, suffix, prefix]).rstrip("^")
    return _segment(
        "PID", {1: "1", 3: escape(patient.id), 5: xpn, 7: escape(patient.birth_date), 8: escape(patient.sex)}
    )


def oru_r01(result: Result, target: NotifyTarget, now: datetime) -> str:
    """The ORU^R01 of ``result`` for ``target`` (segments joined by carriage returns, one at the end).

    Parameters
    ----------
    result
        The result's document (see :mod:`node.notify.payload`) and its patient identifiers.
    target
        An ``hl7`` target: applications and facilities, ``include_patient``.
    now
        The message time (MSH-7, OBR-7, OBR-22, OBX-14), local time as HL7 expects.
    """
    doc = result.document
    stamp = now.strftime("%Y%m%d%H%M%S")
    msh = "|".join(
        [
            "MSH",
            "^~\\&",
            escape(target.sending_application),
            escape(target.sending_facility or ""),
            escape(target.receiving_application or ""),
            escape(target.receiving_facility or ""),
            stamp,
            "",
            MESSAGE_TYPE,
            control_id(str(doc["idempotency_key"])),
            "P",
            VERSION,
            "",
            "",
            "",
            "",
            "",
            "UNICODE UTF-8",
        ]
    )
    segments = [msh]
    patient = result.patient
    if target.include_patient and (patient.id or patient.name):
        segments.append(_pid(patient))
    accession = escape(str(doc.get("accession_number") or ""))
    study = escape(str(doc.get("study_instance_uid") or ""))
    model = doc.get("model") or {}
    name, version = escape(str(model.get("name") or "")), escape(str(model.get("version") or ""))
    service = f"{name}^{escape('AI result')} {name} {version}".rstrip() + "^L"
    segments.append(_segment("ORC", {1: "RE", 2: accession, 3: study, 5: "CM"}))
    segments.append(_segment("OBR", {1: "1", 2: accession, 3: study, 4: service, 7: stamp, 22: stamp, 25: "F"}))
    priority = doc.get("priority") or {}
    suggested = escape(str(priority.get("suggested") or ""))
    segments.append(
        _segment(
            "OBX",
            {
                1: "1",
                2: "CWE",
                3: "PRIORITY^Suggested reading priority^L",
                4: "1",
                5: f"{suggested}^{suggested}^L",
                11: "F",
                14: stamp,
            },
        )
    )
    if priority.get("reason"):
        segments.append(_segment("NTE", {1: "1", 2: "L", 3: escape(str(priority["reason"]))}))
    for n, finding in enumerate(doc.get("findings") or [], start=2):
        label = escape(str(finding.get("label") or "finding"))
        segments.append(
            _segment(
                "OBX",
                {
                    1: str(n),
                    2: "TX",
                    3: f"{label}^{label}^L",
                    4: escape(str(finding.get("number") or n - 1)),
                    5: escape(_finding_text(finding)),
                    11: "F",
                    14: stamp,
                },
            )
        )
    return "\r".join(segments) + "\r"
