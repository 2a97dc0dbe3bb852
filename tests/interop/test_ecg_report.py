"""ECG reports (TID 3700) end to end through the command line: synth, analyse, both validators, read back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from node.analyse.card import find_card
from node.encode.provenance import device_uid
from tests.tools import validator_errors

pytestmark = pytest.mark.interop


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=600)


def _items(item: Dataset) -> dict[str, Dataset]:
    """Content items below ``item`` by concept code value (depth first, first wins)."""
    found: dict[str, Dataset] = {}
    for child in item.get("ContentSequence", []):
        found.setdefault(str(child.ConceptNameCodeSequence[0].CodeValue), child)
        for key, value in _items(child).items():
            found.setdefault(key, value)
    return found


def test_synthetic_af_and_the_real_ecg_give_valid_reports(tmp_path: Path) -> None:
    ecgs = tmp_path / "ecg"
    made = cli("synth", "ecg", "--out", str(ecgs), "--rhythm", "atrial_fibrillation", "--seed", "4242")
    assert made.returncode == 0, made.stderr
    truth = json.loads((ecgs / "truth.json").read_text())["ECG004242.dcm"]
    shutil.copy(get_testdata_file("waveform_ecg.dcm", download=False), ecgs / "real.dcm")
    out = tmp_path / "results"
    run = cli("analyse", str(ecgs), "--out", str(out), "--model", "ecg-rhythm")
    assert run.returncode == 0, run.stderr
    assert "ECG004242.dcm: Atrial fibrillation" in run.stdout and "real.dcm: Sinus rhythm" in run.stdout

    card = find_card("ecg-rhythm")
    reports = {}
    for name in ("ECG004242.dcm", "real.dcm"):
        source = dcmread(ecgs / name, stop_before_pixels=True)
        (sr_path,) = (out / str(source.SeriesInstanceUID)).glob("*.dcm")
        errors = validator_errors(sr_path)
        assert not errors, f"{name}:\n" + "\n".join(errors)
        sr = dcmread(sr_path)
        assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.SeriesInstanceUID != source.SeriesInstanceUID
        assert sr.ConceptNameCodeSequence[0].CodeValue == "11524-0"  # ECG Report
        assert sr.ContentTemplateSequence[0].TemplateIdentifier == "3700"
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        algorithm = sr.ContributingEquipmentSequence[-1]
        assert algorithm.DeviceUID == device_uid(card) and algorithm.SoftwareVersions == card.model.version
        reports[name] = _items(sr)

    af = reports["ECG004242.dcm"]
    assert af["271921002"].ConceptCodeSequence[0].CodeValue == "49436004"  # finding: atrial fibrillation
    rate = float(af["8867-4"].MeasuredValueSequence[0].NumericValue)
    assert abs(rate - truth["heart_rate_bpm"]) <= 2
    assert (
        af["121112"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == dcmread(ecgs / "ECG004242.dcm").SOPInstanceUID
    )
    assert "2:15872" not in af  # no P wave, no PR: left out, not invented
    real = reports["real.dcm"]
    assert real["271921002"].ConceptCodeSequence[0].CodeValue == "426783006"  # sinus rhythm
    for code in ("2:16000", "2:15872", "2:16156", "2:16160", "2:15880", "2:15892"):
        assert real[code].MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "ms"

    summary = json.loads((out / str(dcmread(ecgs / "ECG004242.dcm").SeriesInstanceUID) / "findings.json").read_text())
    assert summary["rhythm"]["label"] == "Atrial fibrillation" and summary["kind"] == "waveform"
    strip = cv2.imread(str(out / str(dcmread(ecgs / "ECG004242.dcm").SeriesInstanceUID) / summary["strip"]))
    # 10 s at 25 mm/s and 4 rows of 30 mm at 4 px/mm, margins and the header line.
    assert strip is not None and strip.shape == (40 + 4 * 120, 1000 + 40, 3)
    fast = summary["measurements"]["heart_rate_bpm"] > 110  # the card: AF faster than 110 bpm is HIGH
    assert summary["priority"] == ("HIGH" if fast else "ROUTINE")
