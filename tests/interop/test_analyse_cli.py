"""End to end through the command line: synth a phantom, analyse it with the shipped model, validate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.tools import dciodvfy

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
        errors, lines = dciodvfy(path)
        assert not errors, f"{path.name}:\n" + "\n".join(lines)
    summary = json.loads((series_dir / "findings.json").read_text())
    big = [n for n in truth["nodules"] if n["diameter_mm"] >= 5]
    assert len([f for f in summary["findings"] if f["label"] == "Nodule"]) >= len(big)
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
