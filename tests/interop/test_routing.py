"""Rules route a CT study to Orthanc A and the nodule model, an MR series only to Orthanc B."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from node.synth.phantom import make_phantom
from tests.e2e.test_serve import SEG, SR_3D
from tests.nodeproc import NodeProcess
from tests.peers import Orthanc, storescu

pytestmark = [pytest.mark.interop, pytest.mark.slow]

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def mr_series(folder: Path, slices: int = 4) -> set[str]:
    """A small MR series from pydicom's MR_small.dcm, with new UIDs (no patient data: a test file)."""
    source = get_testdata_file("MR_small.dcm", download=False)
    assert source is not None
    study, series = generate_uid(), generate_uid()
    folder.mkdir(parents=True)
    sops = set()
    for i in range(slices):
        ds = dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(i * 5)]
        ds.save_as(folder / f"mr{i}.dcm")
        sops.add(str(ds.SOPInstanceUID))
    return sops


def config(a: Orthanc, b: Orthanc) -> str:
    return f"""
[limits]
min_free_disk_mb = 0
[completion]
quiet_seconds = 1
[workers]
count = 1
[sender]
retry_initial_s = 1
retry_max_s = 1

[[peers]]
name = "scanner"
ae_title = "STORESCU"
allow_store = true
[[peers]]
name = "a"
ae_title = "{a.aet}"
host = "127.0.0.1"
port = {a.dicom_port}
[[peers]]
name = "b"
ae_title = "{b.aet}"
host = "127.0.0.1"
port = {b.dicom_port}

[[rules]]
name = "ct-to-a"
level = "instance"
when = {{ attribute = "Modality", equals = "CT" }}
forward = ["a"]

[[rules]]
name = "ct-nodules"
level = "study"
priority = "urgent"
when = {{ all = [{{ attribute = "Modality", equals = "CT" }}, {{ attribute = "SliceThickness", le = 3.0 }}] }}
analyse = ["lung-nodule-ct"]
results_to = ["a"]

[[rules]]
name = "mr-to-b"
level = "series"
when = {{ attribute = "Modality", equals = "MR" }}
forward = ["b"]
"""


def test_ct_goes_to_a_with_its_results_and_mr_only_to_b(tmp_path: Path) -> None:
    ct = tmp_path / "ct"
    make_phantom(21, slices=30, rows=256, columns=256).write_dicom(ct)
    ct_sops = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in ct.iterdir()}
    ct_study = str(dcmread(next(ct.iterdir()), stop_before_pixels=True).StudyInstanceUID)
    mr_sops = mr_series(tmp_path / "mr")
    with Orthanc(aet="ORTHANCA") as a, Orthanc(aet="ORTHANCB") as b:
        with NodeProcess(tmp_path / "node", config(a, b)) as node:
            storescu(ct, node.port, aec="PACSNODE")
            storescu(tmp_path / "mr", node.port, aec="PACSNODE")
            a.wait_for(
                lambda: sorted(c for c in a.study_sop_classes(ct_study) if c in (SEG, SR_3D)) == [SEG, SR_3D] or None,
                timeout=120,
            )
            b.wait_for(lambda: b.sop_instance_uids() == mr_sops or None, timeout=30)
            explain = subprocess.run(
                [sys.executable, "-m", "node", "rules", "explain", ct_study, "--config", str(node.config_path)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert node.stop() == 0
        in_a = a.sop_instance_uids()
        results = in_a - ct_sops
        assert ct_sops <= in_a and len(results) == 2  # every CT instance, plus exactly one SEG and one SR
        assert b.sop_instance_uids() == mr_sops  # MR only, nothing else
        classes = a.study_sop_classes(ct_study)
        assert (classes.count(CT_IMAGE), classes.count(SEG), classes.count(SR_3D)) == (30, 1, 1)
    assert explain.returncode == 0, explain.stderr
    out = explain.stdout
    assert "ct-nodules [study]: matched" in out and "mr-to-b [series]" in out
    assert "a: 30 done" in out  # forwarded
    assert "analyses: 1" in out
