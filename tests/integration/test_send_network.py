"""The send stage on real associations: a pynetdicom SCP on 127.0.0.1 as the peer, always shut down.

The SCU against peers that store, refuse, stall, reject or are down; the sender threads with a job store
(delivery exactly once, retries with backoff under an injected clock, parking, release on stop); the
``echo`` and ``send`` commands through a parser built with their ``add_parser``.
"""

from __future__ import annotations

import argparse
import io
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.dsutils import decode, split_dataset
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.commands import echo as echo_command
from node.commands import send as send_command
from node.config import NodeConfig, parse_config
from node.dicom.contexts import ACCEPTED_TRANSFER_SYNTAXES, UNCOMPRESSED
from node.dicom.status import Status
from node.jobs import JobState, JobStore
from node.send import enqueue_send
from node.send.association import keep_stolen_responses
from node.send.destination import Destination
from node.send.errors import DestinationError
from node.send.requestor import request_association
from node.send.scu import ScuSettings, Verdict, build_context, echo, store_files
from node.send.sender import Sender, sender_job_store

HOST = "127.0.0.1"
CT_SMALL = Path(get_testdata_file("CT_small.dcm", download=False))
JPEG2000_SC = Path(get_testdata_file("JPEG2000.dcm", download=False))  # Secondary Capture, JPEG 2000
MR_SMALL = Path(get_testdata_file("MR_small.dcm", download=False))  # Explicit VR Little Endian
MR_J2K_LOSSLESS = Path(get_testdata_file("MR_small_jp2klossless.dcm", download=False))
MR_JPEG_LS_LOSSLESS = Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm", download=False))
MR_BIG_ENDIAN = Path(get_testdata_file("MR_small_bigendian.dcm", download=False))
JPEG_12BIT_UNDECODABLE = Path(get_testdata_file("JPEG-lossy.dcm", download=False))  # neither libjpeg nor Pillow
FAST = ScuSettings("NODE", acse_timeout=2.0, dimse_timeout=2.0, network_timeout=5.0)


# -- the peer -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    sop: str
    message_id: int
    association: int
    data: bytes
    calling_ae: str
    requestor_max_pdu: int
    transfer_syntax: str  # of the presentation context the C-STORE came on

    def dataset(self) -> Dataset:
        """The received dataset, decoded in the syntax it came in."""
        syntax = UID(self.transfer_syntax)
        ds = decode(io.BytesIO(self.data), syntax.is_implicit_VR, syntax.is_little_endian)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
        return ds


class PeerSCP:
    """A storage + verification SCP on 127.0.0.1 that records every C-STORE it answers.

    ``status`` is the status answered (or a function of the call number, from 1); ``delay`` is the sleep
    before answering (a function of the call number); ``on_store`` runs after each recorded C-STORE.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        ae_title: str = "PEER",
        status: int | Callable[[int], int] = Status.SUCCESS,
        syntaxes: tuple[str, ...] = UNCOMPRESSED,
        sop_classes: tuple[str, ...] = (CTImageStorage, SecondaryCaptureImageStorage),
        delay: Callable[[int], float] = lambda n: 0.0,
        require_called_aet: bool = False,
        on_store: Callable[[], None] | None = None,
    ) -> None:
        self.requested_port = port
        self.status = status
        self.delay = delay
        self.on_store = on_store
        self.received: list[Received] = []
        self.calls = 0
        self._lock = threading.Lock()
        self.ae = AE(ae_title)
        self.ae.require_called_aet = require_called_aet
        for sop_class in sop_classes:
            self.ae.add_supported_context(sop_class, list(syntaxes))
        self.ae.add_supported_context(Verification)
        self.server: Any = None

    def __enter__(self) -> PeerSCP:
        handlers = [(evt.EVT_C_STORE, self._store)]
        self.server = self.ae.start_server((HOST, self.requested_port), block=False, evt_handlers=handlers)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.ae.shutdown()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def destination(self, ae_title: str = "PEER") -> Destination:
        return Destination(ae_title, HOST, self.port, "peer")

    def sops(self) -> list[str]:
        with self._lock:
            return [r.sop for r in self.received]

    def _store(self, event: Any) -> int:
        with self._lock:
            self.calls += 1
            call = self.calls
        time.sleep(self.delay(call))
        request = event.request
        received = Received(
            sop=str(request.AffectedSOPInstanceUID),
            message_id=int(request.MessageID),
            association=id(event.assoc),
            data=event.encoded_dataset(include_meta=False),
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
            requestor_max_pdu=int(event.assoc.requestor.maximum_length),
            transfer_syntax=str(event.context.transfer_syntax),
        )
        with self._lock:
            self.received.append(received)
        if self.on_store is not None:
            self.on_store()
        return int(self.status(call) if callable(self.status) else self.status)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def write_cts(folder: Path, count: int) -> list[Path]:
    """``count`` copies of pydicom's CT_small.dcm (Explicit VR Little Endian), each with a new SOP Instance UID."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = dcmread(CT_SMALL)
    paths = []
    for n in range(count):
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        path = folder / f"ct{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def sop_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def stored_bytes(path: Path) -> bytes:
    """The file's dataset bytes after the file meta, as the SCU must send them."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(0.02)


# -- the SCU --------------------------------------------------------------------------------------------


def test_store_sends_the_stored_bytes_over_one_association(tmp_path: Path) -> None:
    files = write_cts(tmp_path, 4)
    results = []
    with PeerSCP() as peer:
        outcomes = store_files(peer.destination(), files, FAST, on_result=results.append)
    assert [o.verdict for o in outcomes] == [Verdict.SENT] * 4
    assert [o.status for o in outcomes] == [Status.SUCCESS] * 4
    assert sorted(o.index for o in results) == [0, 1, 2, 3]
    assert [r.sop for r in peer.received] == [sop_of(f) for f in files]
    assert len({r.association for r in peer.received}) == 1
    assert [r.message_id for r in peer.received] == [1, 2, 3, 4]
    assert all(r.data == stored_bytes(f) for r, f in zip(peer.received, files, strict=True))
    assert {r.calling_ae for r in peer.received} == {"NODE"}
    assert {r.requestor_max_pdu for r in peer.received} == {0}  # we receive PDUs of any size


def test_compressed_files_go_as_they_are_or_decoded_when_the_peer_wants_them_uncompressed(tmp_path: Path) -> None:
    files = [*write_cts(tmp_path, 1), JPEG2000_SC]
    with PeerSCP(syntaxes=ACCEPTED_TRANSFER_SYNTAXES) as everything:
        outcomes = store_files(everything.destination(), files, FAST)
    assert [o.verdict for o in outcomes] == [Verdict.SENT, Verdict.SENT]
    assert everything.received[1].data == stored_bytes(JPEG2000_SC)
    assert everything.received[1].transfer_syntax == dcmread(JPEG2000_SC).file_meta.TransferSyntaxUID
    with PeerSCP() as uncompressed_only:
        outcomes = store_files(uncompressed_only.destination(), files, FAST)
    assert [o.verdict for o in outcomes] == [Verdict.SENT, Verdict.SENT]
    ct, j2k = uncompressed_only.received
    assert ct.data == stored_bytes(files[0])  # the fast path: as stored
    assert j2k.transfer_syntax == ExplicitVRLittleEndian
    received = j2k.dataset()
    source = dcmread(JPEG2000_SC)
    assert received.SOPInstanceUID == source.SOPInstanceUID
    assert received.LossyImageCompression == "01"  # a lossy JPEG 2000 stays marked lossy
    assert np.array_equal(received.pixel_array, source.pixel_array)  # exactly what decoding the file gives


@pytest.mark.parametrize("accepted", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_lossless_jpeg_2000_and_jpeg_ls_arrive_decoded_and_pixel_identical(
    accepted: str, caplog: pytest.LogCaptureFixture
) -> None:
    files = [MR_J2K_LOSSLESS, MR_JPEG_LS_LOSSLESS, MR_SMALL]
    before = [f.read_bytes() for f in files]
    peer = PeerSCP(syntaxes=(accepted,), sop_classes=(MRImageStorage,))
    with peer, caplog.at_level(logging.INFO, logger="node.send.scu"):
        outcomes = store_files(peer.destination(), files, FAST)
    assert [o.verdict for o in outcomes] == [Verdict.SENT] * 3, [o.reason for o in outcomes]
    assert [f.read_bytes() for f in files] == before  # the stored files are untouched
    assert {r.transfer_syntax for r in peer.received} == {accepted}
    assert len({r.association for r in peer.received}) == 1
    reference = dcmread(MR_SMALL).pixel_array
    for record, path in zip(peer.received, files, strict=True):
        received = record.dataset()
        assert received.SOPInstanceUID == sop_of(path)
        assert np.array_equal(received.pixel_array, reference)
    expected_transcoded = 2 if accepted == ExplicitVRLittleEndian else 3  # MR_small is Explicit VR itself
    lines = [r.getMessage() for r in caplog.records if "C-STORE to peer" in r.getMessage()]
    assert len(lines) == 1 and f"3 sent, 0 failed, 0 not sent, {expected_transcoded} transcoded in" in lines[0]


def test_files_that_cannot_be_decoded_park_and_the_rest_of_the_batch_goes(tmp_path: Path) -> None:
    [ct] = write_cts(tmp_path, 1)
    files = [JPEG_12BIT_UNDECODABLE, MR_BIG_ENDIAN, ct, MR_J2K_LOSSLESS]
    sop_classes = (CTImageStorage, SecondaryCaptureImageStorage, MRImageStorage)
    with PeerSCP(sop_classes=sop_classes) as peer:
        outcomes = store_files(peer.destination(), files, FAST)
    assert [o.verdict for o in outcomes] == [Verdict.PARK, Verdict.PARK, Verdict.SENT, Verdict.SENT]
    undecodable, big_endian = outcomes[0].reason, outcomes[1].reason
    assert (
        f"file {JPEG_12BIT_UNDECODABLE}: its JPEG Extended (Process 2 and 4) pixel data cannot be decoded"
        in undecodable
    )
    assert "does not accept JPEG Extended (Process 2 and 4) for Secondary Capture Image Storage" in undecodable
    assert "retry the job" in undecodable
    assert "does not accept Explicit VR Big Endian for MR Image Storage" in big_endian
    assert "we cannot decode Explicit VR Big Endian" in big_endian
    assert peer.sops() == [sop_of(ct), sop_of(MR_J2K_LOSSLESS)]
    assert len({r.association for r in peer.received}) == 1


def test_a_peer_taking_only_another_compressed_syntax_gets_nothing_decoded() -> None:
    # The JPEG-LS file makes us propose JPEG-LS for MR too: the peer takes only that.
    with PeerSCP(syntaxes=(JPEGLSLossless,), sop_classes=(MRImageStorage,)) as peer:
        as_stored, outcome = store_files(peer.destination(), [MR_JPEG_LS_LOSSLESS, MR_J2K_LOSSLESS], FAST)
    assert as_stored.verdict is Verdict.SENT and peer.received[0].data == stored_bytes(MR_JPEG_LS_LOSSLESS)
    assert outcome.verdict is Verdict.PARK
    assert "does not accept JPEG 2000 Image Compression (Lossless Only) for MR Image Storage" in outcome.reason
    assert "(it accepted JPEG-LS Lossless Image Compression)" in outcome.reason
    assert "we decode only to Explicit or Implicit VR Little Endian" in outcome.reason
    assert len(peer.received) == 1


def test_a_file_vanishing_before_decoding_parks(tmp_path: Path) -> None:
    path = tmp_path / "j2k.dcm"
    path.write_bytes(JPEG2000_SC.read_bytes())
    with PeerSCP() as peer:
        deleted: list[str] = []

        def on_result(outcome: object) -> None:
            if not deleted:
                path.unlink()
                deleted.append("yes")

        # The CT goes first; the J2K file, inspected before the association, is gone when it is decoded.
        [ct] = write_cts(tmp_path / "ct", 1)
        outcomes = store_files(peer.destination(), [ct, path], FAST, on_result=on_result)
    assert [o.verdict for o in outcomes] == [Verdict.SENT, Verdict.PARK]
    assert f"file {path} is missing" in outcomes[1].reason


def test_a_file_in_a_private_transfer_syntax_goes_only_to_a_peer_that_accepts_it(tmp_path: Path) -> None:
    [path] = write_cts(tmp_path, 1)
    ds = dcmread(path)
    private = "1.2.826.0.1.3680043.8.498.77"  # a private syntax: neither we nor pynetdicom can convert it
    ds.file_meta.TransferSyntaxUID = private
    ds.save_as(path, enforce_file_format=False)  # the bytes stay Explicit VR Little Endian
    with PeerSCP() as uncompressed_only:
        [outcome] = store_files(uncompressed_only.destination(), [path], FAST)
    assert outcome.verdict is Verdict.PARK and f"does not accept {private}" in outcome.reason
    assert f"we cannot decode {private}" in outcome.reason
    with PeerSCP(syntaxes=(private,)) as peer:
        [outcome] = store_files(peer.destination(), [path], FAST)
    assert outcome.verdict is Verdict.SENT and peer.received[0].data == stored_bytes(path)


def test_an_uncompressed_file_is_converted_when_the_peer_takes_only_the_other_syntax(tmp_path: Path) -> None:
    files = write_cts(tmp_path, 1)
    with PeerSCP(syntaxes=(ImplicitVRLittleEndian,)) as peer:
        outcomes = store_files(peer.destination(), files, FAST)
    assert outcomes[0].verdict is Verdict.SENT
    assert peer.received[0].data != stored_bytes(files[0])  # re-encoded as Implicit VR
    assert peer.received[0].sop == sop_of(files[0])


def test_a_sop_class_the_peer_does_not_take_parks(tmp_path: Path) -> None:
    files = write_cts(tmp_path, 2)
    with PeerSCP(sop_classes=(MRImageStorage,)) as peer:
        outcomes = store_files(peer.destination(), files, FAST)
    assert [o.verdict for o in outcomes] == [Verdict.PARK] * 2
    assert "accepted no presentation context for CT Image Storage" in outcomes[0].reason
    assert peer.received == []


def test_out_of_resources_is_retryable_and_cannot_understand_parks(tmp_path: Path) -> None:
    files = write_cts(tmp_path, 2)
    with PeerSCP(status=Status.OUT_OF_RESOURCES) as full:
        outcomes = store_files(full.destination(), files, FAST)
    assert [(o.verdict, o.status) for o in outcomes] == [(Verdict.RETRY, Status.OUT_OF_RESOURCES)] * 2
    assert "peer (PEER@127.0.0.1" in outcomes[0].reason and "0xA700 OUT_OF_RESOURCES" in outcomes[0].reason
    with PeerSCP(status=Status.CANNOT_UNDERSTAND) as picky:
        outcomes = store_files(picky.destination(), files, FAST)
    assert [(o.verdict, o.status) for o in outcomes] == [(Verdict.PARK, Status.CANNOT_UNDERSTAND)] * 2
    assert "0xC000 CANNOT_UNDERSTAND" in outcomes[0].reason and "dciodvfy" in outcomes[0].reason


def test_a_peer_that_is_down_gets_nothing_and_everything_is_retryable(tmp_path: Path) -> None:
    files = write_cts(tmp_path, 3)
    outcomes = store_files(Destination("PEER", HOST, free_port()), files, FAST)
    assert [o.verdict for o in outcomes] == [Verdict.RETRY] * 3
    assert all(o.status is None and "cannot connect" in o.reason for o in outcomes)


def test_a_rejected_association_says_why_and_is_retryable(tmp_path: Path) -> None:
    files = write_cts(tmp_path, 1)
    with PeerSCP(require_called_aet=True) as peer:
        outcomes = store_files(peer.destination("WRONG"), files, FAST)
        answer = echo(peer.destination("WRONG"), FAST)
    assert outcomes[0].verdict is Verdict.RETRY
    assert "association rejected by WRONG: Called AE title not recognised" in outcomes[0].reason
    assert not answer.ok and "Called AE title not recognised" in answer.reason


def test_a_stalled_c_store_is_resent_on_a_new_association(tmp_path: Path) -> None:
    files = write_cts(tmp_path, 3)
    settings = ScuSettings("NODE", acse_timeout=2.0, dimse_timeout=0.5, network_timeout=5.0)
    # The first C-STORE is answered only after the SCU gave up on it (its answer is lost with the association).
    with PeerSCP(delay=lambda call: 1.0 if call == 1 else 0.0) as peer:
        started = time.monotonic()
        outcomes = store_files(peer.destination(), files, settings)
        elapsed = time.monotonic() - started
        wait_until(lambda: peer.calls >= 4, what="the stalled handler to finish")
    assert [o.verdict for o in outcomes] == [Verdict.SENT] * 3
    assert sorted(set(peer.sops())) == sorted(sop_of(f) for f in files)
    assert len({r.association for r in peer.received}) == 2
    assert elapsed < 3.0


def test_a_peer_that_always_stalls_leaves_the_batch_not_sent(tmp_path: Path) -> None:
    files = write_cts(tmp_path, 2)
    settings = ScuSettings("NODE", acse_timeout=2.0, dimse_timeout=0.3, network_timeout=5.0, stall_retries=1)
    with PeerSCP(delay=lambda call: 0.6) as peer:
        outcomes = store_files(peer.destination(), files, settings)
        wait_until(lambda: len(peer.received) >= 2, what="the stalled handlers to finish")
    assert [o.verdict for o in outcomes] == [Verdict.RETRY] * 2
    assert all(o.status is None and "no C-STORE response within 0.3 s" in o.reason for o in outcomes)
    assert peer.calls == 2  # the first file, once per association; the second never went


def test_the_scu_socket_has_tcp_nodelay() -> None:
    with PeerSCP() as peer:
        opening = request_association(
            peer.destination(), [build_context(CTImageStorage, [ExplicitVRLittleEndian])], FAST
        )
        requestor = opening.requestor
        assert requestor is not None, opening.why
        assert requestor.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert requestor.release()


def test_a_response_the_reactor_takes_goes_back_to_the_waiting_send() -> None:
    """pynetdicom's requestor reactor can take a fast response off the queue (a race: see
    ``keep_stolen_responses``); on our associations it goes back on the queue instead of being dropped."""
    from pynetdicom import AE
    from pynetdicom.dimse_primitives import C_STORE

    def response() -> C_STORE:
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = 7
        rsp.AffectedSOPClassUID = CTImageStorage
        rsp.Status = 0x0000
        return rsp

    with PeerSCP() as peer:
        plain = AE("NODE")
        plain.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        try:
            ours = plain.associate(HOST, peer.port, ae_title="PEER")
            theirs = plain.associate(HOST, peer.port, ae_title="PEER")
            assert ours.is_established and theirs.is_established
            keep_stolen_responses(ours)
            for assoc in (ours, theirs):
                context = assoc.accepted_contexts[0].context_id
                assoc._reactor_checkpoint.clear()  # hold both reactors: only this test touches the queues
                while not assoc._is_paused:
                    time.sleep(0.001)
                assoc._serve_request(response(), context)  # what the reactor does when it wins the race
            _, kept = ours.dimse.get_msg(block=False)
            _, dropped = theirs.dimse.get_msg(block=False)
            assert kept is not None and kept.MessageIDBeingRespondedTo == 7
            assert dropped is None  # pynetdicom alone drops it: the send would wait for its DIMSE timeout
            for assoc in (ours, theirs):
                assoc._reactor_checkpoint.set()
                assoc.release()
        finally:
            plain.shutdown()


def test_echo() -> None:
    with PeerSCP() as peer:
        answer = echo(peer.destination(), FAST)
    assert answer.ok and answer.status == Status.SUCCESS and 0 < answer.seconds < 2
    down = echo(Destination("PEER", HOST, free_port()), FAST)
    assert not down.ok and "cannot connect" in down.reason


# -- the sender -----------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def node_config(tmp_path: Path, port: int, per_peer: int = 1) -> NodeConfig:
    text = f"""
[node]
ae_title = "NODE"
data_dir = "data"

[limits]
acse_timeout_s = 2
dimse_timeout_s = 2
network_timeout_s = 5

[[peers]]
name = "pacs"
ae_title = "PEER"
host = "{HOST}"
port = {port}

[sender]
retry_initial_s = 30
retry_max_s = 3600
associations_per_peer = {per_peer}
"""
    path = tmp_path / "node.toml"
    path.write_text(text)
    return parse_config(text, config_dir=tmp_path)


def queue_cts(config: NodeConfig, jobs: JobStore, count: int) -> list[tuple[int, str]]:
    """Write ``count`` CT files into the spool and queue their sends to 'pacs'; (job id, SOP UID) each."""
    queued = []
    for path in write_cts(config.node.spool_dir / f"batch-{time.monotonic_ns()}", count):
        sop = sop_of(path)
        rel = path.relative_to(config.node.data_dir).as_posix()
        queued.append((enqueue_send(jobs, "pacs", rel, sop, CTImageStorage), sop))
    return queued


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def states(jobs: JobStore, ids: list[int]) -> list[JobState]:
    return [job.state for job in (jobs.get(i) for i in ids) if job is not None]


def test_sender_threads_deliver_every_job_once(tmp_path: Path, clock: Clock, stop: threading.Event) -> None:
    with PeerSCP() as peer:
        config = node_config(tmp_path, peer.port, per_peer=2)
        with sender_job_store(config, clock=clock) as jobs:
            queued = queue_cts(config, jobs, 6)
            ids = [job_id for job_id, _ in queued]
            sender = Sender(config, jobs, stop, clock, poll_s=0.05)
            sender.start()
            try:
                wait_until(lambda: states(jobs, ids) == [JobState.DONE] * 6, what="all sends done")
            finally:
                stop.set()
                assert sender.join(5)
    assert sorted(peer.sops()) == sorted(sop for _, sop in queued)


def test_peer_down_then_up_retries_with_backoff_and_delivers_exactly_once(
    tmp_path: Path, clock: Clock, stop: threading.Event
) -> None:
    port = free_port()
    config = node_config(tmp_path, port)
    with sender_job_store(config, clock=clock) as jobs:
        queued = queue_cts(config, jobs, 3)
        ids = [job_id for job_id, _ in queued]
        sender = Sender(config, jobs, stop, clock, poll_s=0.05)
        sender.start()
        try:

            def all_failed_once() -> bool:
                found = [jobs.get(i) for i in ids]
                return all(j is not None and j.state is JobState.QUEUED and j.attempts == 1 for j in found)

            wait_until(all_failed_once, what="the first attempts to fail")
            for job_id in ids:
                job = jobs.get(job_id)
                assert job is not None and job.last_error is not None
                assert "not sent to pacs (PEER@127.0.0.1" in job.last_error and "cannot connect" in job.last_error
                assert 27 <= job.not_before - clock.now <= 33  # retry_initial_s = 30 with 10 % jitter
            with PeerSCP(port=port) as peer:
                time.sleep(0.3)  # the clock has not moved: nothing is due yet
                assert peer.received == []
                clock.now += 60
                wait_until(lambda: states(jobs, ids) == [JobState.DONE] * 3, what="delivery after the backoff")
                # Queued again after delivery: already done, so nothing is added and nothing is sent.
                for path in config.node.spool_dir.rglob("*.dcm"):
                    rel = path.relative_to(config.node.data_dir).as_posix()
                    assert enqueue_send(jobs, "pacs", rel, sop_of(path), CTImageStorage) in ids
                time.sleep(0.3)
                assert sorted(peer.sops()) == sorted(sop for _, sop in queued)  # each exactly once
        finally:
            stop.set()
            assert sender.join(5)
        assert jobs.counts() == {("send:pacs", JobState.DONE): 3}


def test_sender_retries_out_of_resources_and_parks_cannot_understand(tmp_path: Path, clock: Clock) -> None:
    # First answer 0xA700 (retry later), then 0xC000 (park).
    answers = {1: Status.OUT_OF_RESOURCES, 2: Status.CANNOT_UNDERSTAND}
    with PeerSCP(status=lambda call: answers.get(call, Status.SUCCESS)) as peer:
        config = node_config(tmp_path, peer.port)
        with sender_job_store(config, clock=clock) as jobs:
            [(job_id, _)] = queue_cts(config, jobs, 1)
            sender = Sender(config, jobs, threading.Event(), clock)
            assert sender.run_once(config.peer("pacs")) == 1
            job = jobs.get(job_id)
            assert job is not None and job.state is JobState.QUEUED and job.attempts == 1
            assert "answered 0xA700 OUT_OF_RESOURCES" in (job.last_error or "")
            assert sender.run_once(config.peer("pacs")) == 0  # not due before its backoff
            clock.now += 60
            assert sender.run_once(config.peer("pacs")) == 1
            job = jobs.get(job_id)
            assert job is not None and job.state is JobState.DEAD
            assert job.last_error is not None
            assert "pacs (PEER@127.0.0.1" in job.last_error and "0xC000 CANNOT_UNDERSTAND" in job.last_error


def test_stop_finishes_the_instance_in_flight_and_releases_the_rest(tmp_path: Path, clock: Clock) -> None:
    stop = threading.Event()
    with PeerSCP(on_store=stop.set) as peer:
        config = node_config(tmp_path, peer.port)
        with sender_job_store(config, clock=clock) as jobs:
            queued = queue_cts(config, jobs, 4)
            ids = [job_id for job_id, _ in queued]
            sender = Sender(config, jobs, stop, clock)
            assert sender.run_once(config.peer("pacs")) == 4
            assert states(jobs, ids) == [JobState.DONE] + [JobState.QUEUED] * 3
            released = [jobs.get(i) for i in ids[1:]]
            assert all(j is not None and j.attempts == 0 for j in released)  # released: no attempt counted
    assert peer.sops() == [queued[0][1]]


def test_long_batches_extend_the_leases_of_the_jobs_still_waiting(tmp_path: Path, clock: Clock) -> None:
    leases: list[float | None] = []
    holder: dict[str, Any] = {}

    def on_store() -> None:  # each C-STORE takes 50 clock seconds; note the lease of the batch's last job
        clock.now += 50
        last = holder["jobs"].get(holder["last"])
        leases.append(last.lease_expires)

    with PeerSCP(on_store=on_store) as peer:
        config = node_config(tmp_path, peer.port)
        with sender_job_store(config, clock=clock) as jobs:
            queued = queue_cts(config, jobs, 3)
            holder.update(jobs=jobs, last=queued[-1][0])
            sender = Sender(config, jobs, threading.Event(), clock)
            claimed_at = clock.now
            assert sender.run_once(config.peer("pacs")) == 3
            assert states(jobs, [job_id for job_id, _ in queued]) == [JobState.DONE] * 3
    # Claimed with a lease of sender.lease; after the first answer (50 s > lease / 4) a heartbeat renewed it.
    assert leases[0] == claimed_at + sender.lease
    assert leases[1] == claimed_at + 50 + sender.lease


# -- the commands ---------------------------------------------------------------------------------------


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pacs-node")
    sub = parser.add_subparsers(dest="command", required=True)
    echo_command.add_parser(sub)
    send_command.add_parser(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_echo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with PeerSCP(require_called_aet=True) as peer:
        node_config(tmp_path, peer.port)
        assert cli("echo", f"{HOST}:{peer.port}", "-aec", "PEER", "--timeout", "2") == 0
        assert f"echo PEER@{HOST}:{peer.port}: success in " in capsys.readouterr().out
        assert cli("echo", "pacs", "--config", str(tmp_path / "node.toml")) == 0
        assert f"echo pacs (PEER@{HOST}:{peer.port}): success in " in capsys.readouterr().out
        assert cli("echo", f"{HOST}:{peer.port}", "--timeout", "2") == 1  # called AE ANY-SCP: rejected
        assert "association rejected by ANY-SCP: Called AE title not recognised" in capsys.readouterr().err
    assert cli("echo", f"{HOST}:{free_port()}", "--timeout", "2") == 1
    assert "failed: cannot connect to 127.0.0.1:" in capsys.readouterr().err
    with pytest.raises(DestinationError, match="peers we can send to: pacs"):
        cli("echo", "archive", "--config", str(tmp_path / "node.toml"))
    with pytest.raises(SystemExit):
        cli("echo", "--help")
    assert "pacs-node echo pacs --config" in capsys.readouterr().out


def test_send_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "study"
    files = write_cts(folder / "series", 3)
    (folder / "README.txt").write_text("not DICOM")
    with PeerSCP() as peer:
        assert cli("send", str(folder), "--to", f"{HOST}:{peer.port}", "-aec", "PEER", "-aet", "CLI") == 0
        out, err = capsys.readouterr()
    assert f"sent 3 of 3 files to PEER@{HOST}:{peer.port}" in out
    assert "skipping 1 files" in err and "README.txt: not a DICOM Part-10 file" in err
    assert sorted(peer.sops()) == sorted(sop_of(f) for f in files)
    assert {r.calling_ae for r in peer.received} == {"CLI"}

    with PeerSCP(status=Status.CANNOT_UNDERSTAND) as picky:
        assert cli("send", *map(str, files), "--to", f"{HOST}:{picky.port}") == 1
        out, err = capsys.readouterr()
    assert "sent 0 of 3 files" in out and "failed: 3 (0xC000 CANNOT_UNDERSTAND: 3)" in out
    assert "why:" in err and "dciodvfy" in err

    assert cli("send", str(folder), "--to", f"{HOST}:{free_port()}") == 1
    out, err = capsys.readouterr()
    assert "not sent: 3" in out and "cannot connect" in err and "(3 files)" in err
