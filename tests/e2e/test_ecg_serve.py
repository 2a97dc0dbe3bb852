"""``pacs-node serve`` with the ECG model: DCMTK storescu sends a synthetic AF ECG, Orthanc gets its report."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from node.synth.ecg import make_ecg
from tests.nodeproc import NodeProcess
from tests.peers import Orthanc, scanner_and_pacs, storescu
from tests.tools import require_tool, validator_errors

pytestmark = [pytest.mark.interop, pytest.mark.slow]

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
AF = "49436004"


def config(pacs: Orthanc) -> str:
    return f"""
[limits]
min_free_disk_mb = 0
[completion]
quiet_seconds = 1.0
[workers]
count = 1
threads = 1
lease_seconds = 60
[analysis]
models = ["lung-nodule-ct", "ecg-rhythm"]
send_results_to = ["pacs"]
{scanner_and_pacs(pacs)}"""


def _finding(sr_path: Path) -> str:
    for container in dcmread(sr_path).ContentSequence:
        for item in container.get("ContentSequence", []):
            if item.ConceptNameCodeSequence[0].CodeValue == "271921002":  # Electrocardiogram finding
                return str(item.ConceptCodeSequence[0].CodeValue)
    return ""


def test_an_af_ecg_sent_by_storescu_comes_back_to_orthanc_as_an_ecg_report(tmp_path: Path) -> None:
    require_tool("storescu", "dcmtk")
    source = make_ecg(31337, "atrial_fibrillation").write_dicom(tmp_path / "in" / "ecg.dcm")
    study = str(dcmread(source, stop_before_pixels=True).StudyInstanceUID)
    with Orthanc() as pacs, NodeProcess(tmp_path / "node", config(pacs)) as node:
        storescu(source, node.port, aec="PACSNODE", required=True)

        def report() -> list[str] | None:
            found = [
                i["ID"]
                for i in pacs.find_instances(study)
                if pacs.metadata(i["ID"]).get("SopClassUid") == COMPREHENSIVE_SR
            ]
            return found or None

        (instance,) = pacs.wait_for(report, timeout=120)
        assert node.stop() == 0
        path = tmp_path / "report.dcm"
        path.write_bytes(pacs.download(instance))
    assert validator_errors(path) == []
    sr = dcmread(path)
    assert sr.StudyInstanceUID == study and sr.ContentTemplateSequence[0].TemplateIdentifier == "3700"
    assert _finding(path) == AF
