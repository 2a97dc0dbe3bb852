"""The peer fixtures of tests/peers.py against the real tools: Orthanc and DCMTK storescp/storescu/echoscu."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage

from node.synth.phantom import make_phantom
from tests.peers import Orthanc, PeerError, StoreSCP, echoscu, storescu

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Eight 64 x 64 CT slices of phantom 1: the folder and {SOP Instance UID: Study Instance UID}."""
    folder = tmp_path_factory.mktemp("phantom")
    paths = make_phantom(1, slices=8, rows=64, columns=64).write_dicom(folder)
    headers = [dcmread(p, stop_before_pixels=True) for p in paths]
    return folder, {str(ds.SOPInstanceUID): str(ds.StudyInstanceUID) for ds in headers}


def test_orthanc_echo_store_and_restart_keeps_the_data(tmp_path: Path, series: tuple[Path, dict[str, str]]) -> None:
    folder, uids = series
    (study_uid,) = set(uids.values())
    with Orthanc(tmp_path / "pacs", aet="TESTPACS", graceful_exit=False) as pacs:
        print(f"Orthanc answered after {pacs.startup_seconds:.2f} s")
        echoscu(pacs.dicom_port, aec="TESTPACS")
        assert pacs.instances() == []

        storescu(folder, pacs.dicom_port, aet="NODE", aec="TESTPACS")
        # Orthanc answers C-STORE only after indexing, so the instances are there once storescu returns.
        assert pacs.sop_instance_uids() == set(uids)
        found = pacs.find_instances(study_uid)
        assert {item["MainDicomTags"]["SOPInstanceUID"] for item in found} == set(uids)
        assert pacs.study_sop_classes(study_uid) == [CTImageStorage] * len(uids)
        meta = pacs.metadata(found[0]["ID"])
        assert meta["RemoteAET"] == "NODE" and meta["CalledAET"] == "TESTPACS"
        stored = dcmread(io.BytesIO(pacs.download(found[0]["ID"])))
        assert stored.SOPInstanceUID in uids

        ports = (pacs.dicom_port, pacs.http_port)
        began = time.monotonic()
        pacs.stop()
        stopped = time.monotonic() - began
        assert not pacs.running
        with pytest.raises(PeerError):
            echoscu(pacs.dicom_port, aec="TESTPACS")
        pacs.start()
        print(f"Orthanc stopped in {stopped:.2f} s, restarted in {pacs.startup_seconds:.2f} s")
        assert (pacs.dicom_port, pacs.http_port) == ports
        assert pacs.sop_instance_uids() == set(uids)
        echoscu(pacs.dicom_port, aec="TESTPACS")

        # A crash (SIGKILL) loses nothing that was acknowledged either.
        pacs.stop(graceful=False)
        pacs.start()
        assert pacs.sop_instance_uids() == set(uids)
    assert not pacs.running


def test_orthanc_find_ignores_other_studies_and_clear_empties_it(series: tuple[Path, dict[str, str]]) -> None:
    folder, _ = series
    three = sorted(folder.glob("*.dcm"))[:3]
    with Orthanc() as pacs:
        storescu(three, pacs.dicom_port)
        assert pacs.sop_instance_uids() == {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in three}
        assert pacs.find_instances("1.2.3.4.5.6.7.8.9") == []
        pacs.clear()
        assert pacs.wait_for(lambda: pacs.instances() == [], timeout=5)
        own = pacs.dir
    assert not own.exists()


def test_storescp_receives_what_storescu_sends(tmp_path: Path, series: tuple[Path, dict[str, str]]) -> None:
    folder, uids = series
    with StoreSCP(tmp_path / "in", aet="ARCHIVE", transfer_syntaxes="little") as scp:
        echoscu(scp.port, aec="ARCHIVE")
        done = storescu(folder, scp.port, aec="ARCHIVE", required=True)
        assert "Received Store Response (Success)" in done.stdout + done.stderr
        received = scp.files()
        assert {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in received} == set(uids)
        for path in received:
            assert dcmread(path).pixel_array.shape == (64, 64)
    assert not scp.running
    assert len(list((tmp_path / "in").iterdir())) == len(uids)


def test_storescp_that_refuses_makes_storescu_fail(series: tuple[Path, dict[str, str]]) -> None:
    folder, _ = series
    with StoreSCP(extra=("--refuse",)) as scp:
        with pytest.raises(PeerError, match="storescu"):
            storescu(folder, scp.port)
        assert scp.files() == []
