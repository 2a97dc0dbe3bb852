"""kill -9 of ``serve`` in the middle of a 300-slice receive: nothing acknowledged is lost, results go once."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from node.send.association import keep_stolen_responses
from node.synth.phantom import make_phantom
from tests.e2e.test_serve import SEG, SR_3D, config, results_in
from tests.nodeproc import NodeProcess
from tests.peers import Orthanc

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def send_all(files: list[Path], port: int, acked: list[str], *, resend: int = 0) -> None:
    """The scanner: one association, every file; records the files answered with success.

    With ``resend``, as a real scanner does (and ``../shared/PITFALLS.md`` asks of a pynetdicom sender),
    files without a success status are sent again on a new association, up to ``resend`` more times.
    pynetdicom's SCU alone now and then loses a response that comes back very fast to its reactor thread
    (it logs "Received unexpected C-STORE service message" and waits for its DIMSE timeout; seen on the
    duplicates a restarted node answers at once): ``keep_stolen_responses`` gives such a response back.
    """
    for _ in range(1 + resend):
        ae = AE(ae_title="STORESCU")
        ae.add_requested_context(CTImageStorage)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
        assert assoc.is_established
        keep_stolen_responses(assoc)
        try:
            for path in files:
                if not assoc.is_established:
                    break
                if path.name in acked:
                    continue
                status = assoc.send_c_store(path)
                if "Status" in status and status.Status == 0:
                    acked.append(path.name)
        finally:
            if assoc.is_established:
                assoc.release()
            ae.shutdown()
        if len(acked) == len(files):
            return


def test_kill_9_mid_receive_loses_no_acknowledged_instance_and_results_reach_the_pacs_once(tmp_path: Path) -> None:
    folder = tmp_path / "ct"
    make_phantom(5, slices=300, rows=256, columns=256).write_dicom(folder)
    files = sorted(folder.iterdir())
    sop_of = {p.name: str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with Orthanc() as pacs:
        # A quiet period long enough for the scanner to come back before the partial study completes.
        node = NodeProcess(tmp_path / "node", config(pacs, retry_s=1.0, quiet_s=8.0))
        node.start()
        acked: list[str] = []
        killer = threading.Thread(target=lambda: _kill_when(node, acked, 100))
        killer.start()
        send_all(files, node.port, acked)
        killer.join()
        first = list(acked)
        assert 100 <= len(first) < len(files), f"the kill came at {len(first)} of {len(files)}"
        # Every acknowledged instance is on disk, complete, and indexed, before any restart cleans up.
        spool = node.data_dir / "spool"
        with sqlite3.connect(node.data_dir / "index.sqlite3") as db:
            indexed = {row[0]: row[1] for row in db.execute("SELECT sop_instance_uid, path FROM instances")}
        for name in first:
            sop = sop_of[name]
            assert sop in indexed, f"{name}: acknowledged but not indexed"
            assert dcmread(spool / indexed[sop]).SOPInstanceUID == sop  # complete and parseable
        # Restart; the scanner sends the whole series again.
        node.start()
        again: list[str] = []
        send_all(files, node.port, again, resend=2)
        assert len(again) == len(files)
        assert not list((spool / ".tmp").iterdir())
        pacs.wait_for(lambda: sorted(results_in(pacs, study)) == [SEG, SR_3D] or None, timeout=180)
        with sqlite3.connect(node.data_dir / "index.sqlite3") as db:
            assert db.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == len(files)
        assert node.stop() == 0
        assert sorted(results_in(pacs, study)) == [SEG, SR_3D], "results must reach the PACS exactly once"


def _kill_when(node: NodeProcess, acked: list[str], count: int) -> None:
    while len(acked) < count:
        if node.proc is None or node.proc.poll() is not None:
            return
        threading.Event().wait(0.002)
    node.kill()
