"""The SCU's own requestor (node/send/requestor.py) against real peers: DCMTK storescp and raw sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext

from node.dicom import ul
from node.dicom.status import Status
from node.send.destination import Destination
from node.send.requestor import request_association
from node.send.scu import ScuSettings, Verdict, store_files, stored_dataset
from tests.peers import StoreSCP

HOST = "127.0.0.1"
FAST = ScuSettings("NODE", acse_timeout=2.0, dimse_timeout=2.0, network_timeout=5.0)
CT_SMALL = Path(get_testdata_file("CT_small.dcm", download=False))
JPEG2000_SC = Path(get_testdata_file("JPEG2000.dcm", download=False))
CT_CONTEXT = [build_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]


def test_stored_dataset_is_the_bytes_after_the_file_meta() -> None:
    ds = dcmread(CT_SMALL)
    data = CT_SMALL.read_bytes()
    view = stored_dataset(CT_SMALL)
    assert bytes(view) == data[len(data) - len(view) :]
    assert view[:2] == b"\x08\x00"  # group 0008 follows the file meta
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_store_as_stored_transcoded_and_fragmented_to_storescp(tmp_path: Path) -> None:
    # storescp reads PDUs of at most 4096 bytes: CT_small (39 kB) goes in many P-DATA-TF PDUs.
    with StoreSCP(tmp_path / "in", transfer_syntaxes="little", max_pdu=4096) as scp:
        outcomes = store_files(Destination("STORESCP", HOST, scp.port), [CT_SMALL, JPEG2000_SC], FAST)
        assert [o.verdict for o in outcomes] == [Verdict.SENT, Verdict.SENT], [o.reason for o in outcomes]
        received = {dcmread(f).SOPInstanceUID: f for f in scp.files()}
    ct = dcmread(received[dcmread(CT_SMALL).SOPInstanceUID])
    assert ct.PixelData == dcmread(CT_SMALL).PixelData
    j2k = dcmread(received[dcmread(JPEG2000_SC).SOPInstanceUID])
    assert j2k.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # decoded for a peer without JPEG 2000


def test_release_and_reopen() -> None:
    with StoreSCP(transfer_syntaxes="little") as scp:
        for _ in range(2):
            opening = request_association(Destination("STORESCP", HOST, scp.port), CT_CONTEXT, FAST)
            requestor = opening.requestor
            assert requestor is not None, opening.why
            assert requestor.accepted[0].transfer_syntax == ExplicitVRLittleEndian
            assert requestor.peer_max_pdu == 16384
            assert requestor.release() and not requestor.is_open


def test_a_peer_that_rejects_the_association() -> None:
    with StoreSCP(extra=("--refuse",)) as scp:
        opening = request_association(Destination("STORESCP", HOST, scp.port), CT_CONTEXT, FAST)
    assert opening.requestor is None and opening.why.startswith("association rejected by STORESCP: ")


# -- raw peers: accept the association with pynetdicom's PDU classes, then do what a test needs ------------


class RawPeer:
    """One connection on 127.0.0.1: answers the A-ASSOCIATE-RQ (accepting or refusing every context), then
    hands the socket to ``then``."""

    def __init__(self, accept: bool, then: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.accept, self.then = accept, then
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            reader = conn.makefile("rb")
            kind, body = ul.read_pdu(reader)
            rq = A_ASSOCIATE_RQ()
            rq.decode(bytes((kind, 0)) + len(body).to_bytes(4, "big") + body)
            request = rq.to_primitive()
            results = []
            for cx in request.presentation_context_definition_list:
                result = PresentationContext()
                result.context_id = cx.context_id
                result.abstract_syntax = cx.abstract_syntax
                result.transfer_syntax = [cx.transfer_syntax[0]]
                result.result = 0 if self.accept else 3
                results.append(result)
            answer = A_ASSOCIATE()
            answer.application_context_name = "1.2.840.10008.3.1.1.1"
            answer.calling_ae_title, answer.called_ae_title = request.calling_ae_title, request.called_ae_title
            answer.result, answer.result_source = 0, 1
            answer.presentation_context_definition_results_list = results
            length = MaximumLengthNotification()
            length.maximum_length_received = 0
            answer.user_information = [length]
            ac = A_ASSOCIATE_AC()
            ac.from_primitive(answer)
            conn.sendall(ac.encode())
            self.then(conn)

    def close(self) -> None:
        self.thread.join(5)
        self.listener.close()


def _drain(conn: socket.socket) -> None:
    conn.settimeout(5)
    while conn.recv(65536):  # read everything, answer nothing
        pass


def test_a_peer_that_accepts_no_context() -> None:
    peer = RawPeer(False, _drain)
    try:
        opening = request_association(Destination("RAW", HOST, peer.port), CT_CONTEXT, FAST)
    finally:
        peer.close()
    assert opening.requestor is None and opening.nothing_accepted
    assert "accepted none of the presentation contexts" in opening.why


def test_a_stalled_c_store_times_out_and_aborts() -> None:
    peer = RawPeer(True, _drain)
    settings = ScuSettings("NODE", acse_timeout=2.0, dimse_timeout=0.3, network_timeout=5.0)
    try:
        opening = request_association(Destination("RAW", HOST, peer.port), CT_CONTEXT, settings)
        requestor = opening.requestor
        assert requestor is not None, opening.why
        started = time.monotonic()
        response = requestor.store(1, 1, CTImageStorage, "1.2.3", stored_dataset(CT_SMALL))
        waited = time.monotonic() - started
    finally:
        peer.close()
    assert response.status is None and response.timed_out
    assert response.why == "no C-STORE response within 0.3 s (DIMSE timeout)"
    assert 0.25 < waited < 1.5 and not requestor.is_open


def test_a_response_to_another_message_loses_the_association() -> None:
    def answer_wrong(conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        _, body = ul.read_pdu(reader)
        while not any(control == 0x02 for _, control, _ in ul.pdvs(body)):  # until the last dataset fragment
            _, body = ul.read_pdu(reader)
        rsp = ul.store_response(99, CTImageStorage, "1.2.3", Status.SUCCESS)
        ul.send_all(conn, list(ul.p_data(1, rsp, True, 0)))
        _drain(conn)

    peer = RawPeer(True, answer_wrong)
    try:
        requestor = request_association(Destination("RAW", HOST, peer.port), CT_CONTEXT, FAST).requestor
        assert requestor is not None
        response = requestor.store(1, 1, CTImageStorage, "1.2.3", stored_dataset(CT_SMALL))
    finally:
        peer.close()
    assert response.status is None and not response.timed_out and not requestor.is_open
    assert "aborted or the connection lost" in response.why and "not a C-STORE-RSP to 1" in response.why
