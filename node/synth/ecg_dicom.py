"""Write a synthetic recording as a valid, patient-free 12-Lead ECG Waveform Storage instance.

One multiplex group "RHYTHM", 16-bit signed samples at 2.5 uV per step (Channel Sensitivity 2.5, unit
uV from UCUM, correction factor 1, baseline 0), channels coded with the MDC lead codes of CID 3001.
Identity is synthetic (``PHANTOM^ECG^<seed>``) and every UID and date is derived from the seed, so the
same recording writes the same bytes. ``dciodvfy`` checks the files in ``tests/interop``.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from node.errors import InputError

if TYPE_CHECKING:
    from node.synth.ecg import SynthEcg

TWELVE_LEAD_ECG_STORAGE = UID("1.2.840.10008.5.1.4.1.1.9.1.1")
_IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.8.498.1.2.3.4")
_IMPLEMENTATION_VERSION = "PACSNODE_SYNTH1"
_DEFAULT_DATETIME = datetime(2000, 1, 1, 12, 0, 0)
SENSITIVITY_UV = 2.5
# MDC codes and meanings of the twelve leads (PS3.16 CID 3001 "ECG Leads").
MDC_LEADS = {
    "I": ("2:1", "Lead I"), "II": ("2:2", "Lead II"), "III": ("2:61", "Lead III"),
    "aVR": ("2:62", "aVR, augmented voltage, right"), "aVL": ("2:63", "aVL, augmented voltage, left"),
    "aVF": ("2:64", "aVF, augmented voltage, foot"), "V1": ("2:3", "Lead V1"), "V2": ("2:4", "Lead V2"),
    "V3": ("2:5", "Lead V3"), "V4": ("2:6", "Lead V4"), "V5": ("2:7", "Lead V5"), "V6": ("2:8", "Lead V6"),
}  # fmt: skip


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def ecg_dataset(
    ecg: SynthEcg,
    *,
    seed: int | None = None,
    study_instance_uid: str | None = None,
    when: datetime | None = None,
    sensitivity_uv: float = SENSITIVITY_UV,
    baseline_uv: float = 0.0,
) -> Dataset:
    """The recording as a 12-Lead ECG dataset (file meta included)."""
    seed = ecg.truth.seed if seed is None else seed
    when = when or _DEFAULT_DATETIME
    stored = np.round((ecg.signals.astype(np.float64) - baseline_uv) / sensitivity_uv)
    if stored.min() < -32768 or stored.max() > 32767:
        raise InputError(f"synthetic ECG {seed}: signal range does not fit 16 bits at {sensitivity_uv} uV per step")
    study_uid = UID(study_instance_uid) if study_instance_uid else _uid("pacs-node synthetic ECG study", seed)
    series_uid = _uid("pacs-node synthetic ECG series", study_uid, seed)
    sop_uid = _uid("pacs-node synthetic ECG instance", series_uid, seed)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = TWELVE_LEAD_ECG_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = TWELVE_LEAD_ECG_STORAGE
    ds.SOPInstanceUID = sop_uid
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    ds.StudyDate = ds.ContentDate = ds.InstanceCreationDate = date
    ds.StudyTime = ds.ContentTime = ds.InstanceCreationTime = time
    ds.AcquisitionDateTime = date + time
    ds.AccessionNumber = f"ECG{seed}"[:16]
    ds.Modality = "ECG"
    ds.Manufacturer = "pacs-node project (synthetic)"
    ds.ManufacturerModelName = "synth ecg"
    ds.SoftwareVersions = "1"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic resting 12-lead ECG"
    ds.SeriesDescription = "Synthetic 12-lead ECG"
    ds.PatientName = f"PHANTOM^ECG^{seed}"
    ds.PatientID = f"PHANTOM-ECG-{seed}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.AcquisitionContextSequence = Sequence()

    group = Dataset()
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = len(ecg.leads)
    group.NumberOfWaveformSamples = int(ecg.signals.shape[1])
    group.SamplingFrequency = f"{ecg.rate_hz:g}"
    group.MultiplexGroupLabel = "RHYTHM"
    channels = []
    for number, name in enumerate(ecg.leads, 1):
        value, meaning = MDC_LEADS[name]
        ch = Dataset()
        ch.WaveformChannelNumber = number
        ch.ChannelLabel = name
        ch.ChannelSourceSequence = Sequence([_code(value, "MDC", meaning)])
        ch.ChannelSensitivity = f"{sensitivity_uv:g}"
        ch.ChannelSensitivityUnitsSequence = Sequence([_code("uV", "UCUM", "microvolt")])
        ch.ChannelSensitivityCorrectionFactor = "1"
        ch.ChannelBaseline = f"{baseline_uv:g}"
        ch.ChannelSampleSkew = "0"
        ch.WaveformBitsStored = 16
        ch.FilterLowFrequency = "0.05"
        ch.FilterHighFrequency = "150"
        channels.append(ch)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.WaveformData = stored.T.astype("<i2").tobytes()
    ds.WaveformSequence = Sequence([group])
    return ds


def write_ecg(ecg: SynthEcg, path: Path, **kwargs: object) -> Path:
    """Write the recording to ``path`` (folders created; temp name then rename) and return it."""
    ds = ecg_dataset(ecg, **kwargs)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    dcmwrite(temp, ds, enforce_file_format=True)
    os.replace(temp, path)
    return path
