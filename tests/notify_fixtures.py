"""Results in an outbox as the worker leaves them, for the notification tests: ``findings.json`` beside a
SEG and an SR (synthetic Part-10 files with the headers a notification reads), and the node config."""

from __future__ import annotations

import json
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from node.config import NodeConfig, parse_config
from node.jobs import JobStore
from node.jobs.kinds import ANALYSE

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SECRET = "test-secret-0123456789"
PATIENT_NAME = "PHANTOM^NOTIFY"  # synthetic; must never reach a log line
PATIENT_ID = "PID-SYNTH-4711"


def _part10(path: Path, sop_class: str, study: str, modality: str, accession: str) -> str:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.AccessionNumber = accession
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def finding(number: int, volume: float = 523.6, diameter: float = 12.1) -> dict[str, object]:
    """A finding as findings.json holds it (with the keys of issue 12: segment, confidence, key slice)."""
    return {
        "label": "nodule",
        "number": number,
        "name": f"Nodule {number}",
        "segment_number": 1,
        "tracking_uid": generate_uid(),
        "volume_mm3": volume,
        "longest_axial_diameter_mm": diameter,
        "centroid_mm": [10.5, -20.0, -120.5],
        "mean_value": 35.2,
        "confidence": {"mean": 0.91, "max": 0.98},
        "key_slice": {"index": 17, "z_mm": -120.5, "sop_instance_uid": generate_uid(), "area_mm2": 88.4},
    }


def make_result(
    data_dir: Path, jobs: JobStore, priority: str, findings: list[dict[str, object]], *, accession: str = "ACC-0001"
) -> tuple[str, list[tuple[str, str, str]]]:
    """An analyse job and its result in ``outbox/analyse-<id>/<series>/``: returns the study UID and the
    ``(path, SOP Instance UID, SOP Class UID)`` of the SEG and the SR, as the manifest lists them."""
    study, series = generate_uid(), generate_uid()
    job_id = jobs.enqueue(ANALYSE, {"study": study, "series": None, "model": "lung-nodule-ct"})
    folder = data_dir / "outbox" / f"analyse-{job_id}" / series
    folder.mkdir(parents=True)
    files = []
    for name, sop_class, modality in (("seg.dcm", SEG_CLASS, "SEG"), ("sr.dcm", SR_CLASS, "SR")):
        uid = _part10(folder / name, sop_class, study, modality, accession)
        files.append((str((folder / name).relative_to(data_dir)), uid, sop_class))
    document = {
        "series_instance_uid": series,
        "priority": priority,
        "priority_reason": f"{len(findings)} nodules, the largest 12.1 mm",
        "model": {"name": "lung-nodule-ct", "version": "1.1.0"},
        "findings": findings,
        "files": ["seg.dcm", "sr.dcm"],
    }
    (folder / "findings.json").write_text(json.dumps(document), encoding="utf-8")
    return study, files


def config_text(data_dir: Path, notify: str, *, retry_s: float = 30.0) -> str:
    """The TOML of a config with ``notify`` (``[[notify]]`` tables) and the sender's retry settings."""
    return (
        f'[node]\nae_title = "PACSNODE"\ndata_dir = "{data_dir}"\n'
        f"[sender]\nretry_initial_s = {retry_s}\nretry_max_s = {retry_s}\n{notify}"
    )


def node_config(data_dir: Path, notify: str, *, retry_s: float = 30.0) -> NodeConfig:
    """:func:`config_text`, parsed."""
    return parse_config(config_text(data_dir, notify, retry_s=retry_s))


def webhook(name: str, url: str, min_priority: str = "LOW", extra: str = "") -> str:
    return (
        f'[[notify]]\nname = "{name}"\nkind = "webhook"\nurl = "{url}"\nsecret = "{SECRET}"\n'
        f'min_priority = "{min_priority}"\ntimeout_s = 2\n{extra}\n'
    )


def hl7_target(name: str, port: int, min_priority: str = "LOW", extra: str = "") -> str:
    return (
        f'[[notify]]\nname = "{name}"\nkind = "hl7"\nhost = "127.0.0.1"\nport = {port}\n'
        f'min_priority = "{min_priority}"\ntimeout_s = 2\nreceiving_application = "RIS"\n'
        f'receiving_facility = "RADIOLOGY"\n{extra}\n'
    )
