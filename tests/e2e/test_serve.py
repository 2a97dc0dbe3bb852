"""``pacs-node serve`` end to end: DCMTK storescu in, SEG + SR out to Orthanc, valid by dciodvfy and pixelmed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.synth.phantom import make_phantom
from tests.nodeproc import NodeProcess
from tests.peers import Orthanc, echoscu, scanner_and_pacs, storescu
from tests.tools import require_tool, validator_errors

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR_3D = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 40-slice phantom CT series (256 x 256) with nodules, and its Study Instance UID."""
    folder = tmp_path_factory.mktemp("ct")
    phantom = make_phantom(11, slices=40, rows=256, columns=256)
    phantom.write_dicom(folder)
    from pydicom import dcmread

    study = str(dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID)
    return folder, study


def config(pacs: Orthanc, *, retry_s: float = 30.0, quiet_s: float = 1.0) -> str:
    return f"""
[limits]
min_free_disk_mb = 0
[completion]
quiet_seconds = {quiet_s}
[workers]
count = 1
threads = 2
lease_seconds = 60
[sender]
retry_initial_s = {retry_s}
retry_max_s = {retry_s}
[analysis]
models = ["lung-nodule-ct"]
send_results_to = ["pacs"]
{scanner_and_pacs(pacs)}"""


@pytest.fixture
def pacs() -> Iterator[Orthanc]:
    with Orthanc() as orthanc:
        yield orthanc


def results_in(pacs: Orthanc, study: str) -> list[str]:
    return [c for c in pacs.study_sop_classes(study) if c in (SEG, SR_3D)]


def test_storescu_study_comes_back_to_orthanc_as_valid_seg_and_sr(
    tmp_path: Path, series: tuple[Path, str], pacs: Orthanc
) -> None:
    require_tool("storescu", "dcmtk")
    folder, study = series
    with NodeProcess(tmp_path / "node", config(pacs)) as node:
        assert echoscu(node.port, aec="PACSNODE", aet="STORESCU").returncode == 0
        storescu(folder, node.port, aec="PACSNODE")
        pacs.wait_for(lambda: sorted(results_in(pacs, study)) == [SEG, SR_3D] or None, timeout=120)
        assert node.stop() == 0
    found = [i for i in pacs.find_instances(study) if pacs.metadata(i["ID"]).get("SopClassUid") in (SEG, SR_3D)]
    assert len(found) == 2
    for instance in found:
        path = tmp_path / f"{instance['ID']}.dcm"
        path.write_bytes(pacs.download(instance["ID"]))
        assert validator_errors(path) == []
    # Orthanc has the source study too? No: only the results were sent to it.
    assert len(pacs.find_instances(study)) == 2
    # The audit trail tells the story, without the patient's identity.
    audit = (tmp_path / "node" / "data" / "audit" / "audit.jsonl").read_text()
    events = [json.loads(line)["event"] for line in audit.splitlines()]
    assert events[0] == "application-start" and events[-1] == "application-stop"
    assert "study-received" in events and "instances-sent" in events
    assert "PHANTOM" not in audit and "PatientName" not in audit


def test_a_pacs_that_is_down_gets_the_results_once_it_is_back(
    tmp_path: Path, series: tuple[Path, str], pacs: Orthanc
) -> None:
    folder, study = series
    pacs.stop(graceful=False)
    with NodeProcess(tmp_path / "node", config(pacs, retry_s=1.0)) as node:
        storescu(folder, node.port, aec="PACSNODE")
        # Wait until the sends have failed at least once (the PACS is down).
        import sqlite3
        import time

        jobs = node.data_dir / "jobs.sqlite3"

        def failed_sends() -> int | None:
            if not jobs.exists():
                return None
            with sqlite3.connect(jobs) as db:
                n = db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE kind LIKE 'send:%' AND attempts >= 1 AND state = 'queued'"
                ).fetchone()[0]
            return n or None

        deadline = time.monotonic() + 120
        while failed_sends() is None:
            assert time.monotonic() < deadline, node.log()[-3000:]
            time.sleep(0.5)
        pacs.start()
        pacs.wait_for(lambda: sorted(results_in(pacs, study)) == [SEG, SR_3D] or None, timeout=60)
        time.sleep(3)  # would a second delivery follow?
        assert node.stop() == 0
    assert sorted(results_in(pacs, study)) == [SEG, SR_3D]
