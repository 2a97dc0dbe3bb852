"""End to end through the command line: synth a phantom, analyse it with the shipped model, validate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread

from tests.tools import validator_errors

pytestmark = pytest.mark.interop


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=600)


def test_synth_then_analyse_writes_valid_seg_and_sr(tmp_path: Path) -> None:
    series = tmp_path / "ct"
    made = cli("synth", "ct", "--out", str(series), "--slices", "48", "--seed", "31", "--nodules", "3")
    assert made.returncode == 0, made.stderr
    truth = json.loads((tmp_path / "ct-truth" / "truth.json").read_text())
    assert len(list(series.glob("*.dcm"))) == 48

    out = tmp_path / "results"
    run = cli("analyse", str(series), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "suggested priority" in run.stdout
    (series_dir,) = out.iterdir()
    files = {dcmread(p, stop_before_pixels=True).Modality: p for p in series_dir.glob("*.dcm")}
    assert set(files) == {"SEG", "SR"}
    for path in files.values():
        errors = validator_errors(path)
        assert not errors, f"{path.name}:\n" + "\n".join(errors)
    summary = json.loads((series_dir / "findings.json").read_text())
    big = [n for n in truth["nodules"] if n["diameter_mm"] >= 5]
    nodules = [f for f in summary["findings"] if f["label"] == "Nodule"]
    assert len(nodules) >= len(big)
    # One segment per finding, named as in findings.json and the summary line; the SR's groups point
    # at those segments, one each (read back with highdicom).
    seg = hd.seg.Segmentation.from_dataset(dcmread(files["SEG"]))
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    assert sorted(names.values()) == sorted(["Lung", *(f["name"] for f in nodules)])
    for finding in nodules:
        assert names[finding["segment_number"]] == finding["name"]
        assert f"{finding['name']}: " in run.stdout
        assert 0.5 <= finding["confidence"]["mean"] <= finding["confidence"]["max"] <= 1.0
    sr = hd.sr.Comprehensive3DSR.from_dataset(dcmread(files["SR"]))
    groups = sr.content.get_volumetric_roi_measurement_groups()
    referenced = [g.referenced_segment.referenced_segment_numbers[0] for g in groups if g.referenced_segment]
    assert sorted(referenced) == sorted(f["segment_number"] for f in nodules)
    source = dcmread(next(series.glob("*.dcm")), stop_before_pixels=True)
    seg = dcmread(files["SEG"], stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not dicom")
    run = cli("analyse", str(tmp_path), "--out", str(tmp_path / "out"))
    assert run.returncode == 1
    # Progress lines may come first; the run ends on one error line and never a traceback.
    assert run.stderr.strip().splitlines()[-1].startswith("error:") and "Traceback" not in run.stderr
    run = cli("analyse", str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    assert run.returncode == 1 and "no such file or folder" in run.stderr
    run = cli("analyse", str(tmp_path), "--out", str(tmp_path / "out"), "--model", "nope")
    assert run.returncode == 1 and "model 'nope' not found" in run.stderr
