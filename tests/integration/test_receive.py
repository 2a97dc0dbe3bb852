"""The SCP with real pynetdicom associations on 127.0.0.1: policy, statuses, durability, duplicates."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from node.audit import AuditTrail, audit_path, read
from node.config import NodeConfig, parse_config
from node.dicom.status import Status
from node.receive import Receiver, StoreHandler
from node.store import DiskGuard, Index, Spool
from tests.helpers import node_toml, tiny_ct
from tests.peers import free_port

STUDY, SERIES = "1.2.826.0.1.3680043.10.1", "1.2.826.0.1.3680043.10.1.1"


class Node:
    """A receiver over a temp data dir, as serve builds it (without the other stages)."""

    def __init__(self, tmp: Path, *, peers: str = "", extra: str = "") -> None:
        self.port = free_port()
        self.config: NodeConfig = parse_config(node_toml(tmp / "data", self.port, peers=peers, extra=extra))
        node = self.config.node
        self.spool = Spool(node.spool_dir)
        self.index = Index(node.index_path)
        guard = DiskGuard(node.data_dir, self.config.limits.min_free_disk_mb, ttl=0.0)
        keep_first = self.config.duplicates.policy == "keep-first"
        self.handler = StoreHandler(self.spool, self.index, guard, keep_first=keep_first)
        self.receiver = Receiver(self.config, self.handler)
        self.receiver.start()

    def associate(self, calling: str = "STORESCU", called: str = "PACSNODE") -> Association:
        ae = AE(ae_title=calling)
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
        return ae.associate("127.0.0.1", self.port, ae_title=called)

    def close(self) -> None:
        self.receiver.stop()
        self.index.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    n.close()


def store(assoc: Association, ds: Dataset) -> int:
    status = assoc.send_c_store(ds)
    return int(status.Status) if "Status" in status else -1


def encoded(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def test_echo_and_store_write_the_bytes_as_received_and_index_them(node: Node) -> None:
    assoc = node.associate()
    assert assoc.is_established
    assert int(assoc.send_c_echo().Status) == Status.SUCCESS
    sent = [tiny_ct(STUDY, SERIES, f"{SERIES}.{i}", index=i) for i in range(3)]
    assert [store(assoc, ds) for ds in sent] == [Status.SUCCESS] * 3
    assoc.release()
    for ds in sent:
        path = node.spool.path_for(STUDY, SERIES, ds.SOPInstanceUID)
        data = path.read_bytes()
        assert data.endswith(encoded(ds))  # the dataset bytes exactly as they went on the wire
        back = dcmread(BytesIO(data))
        assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert back.SOPInstanceUID == ds.SOPInstanceUID
        row = node.index.get(ds.SOPInstanceUID)
        assert row is not None and row.calling_ae == "STORESCU" and row.size == len(data)
    assert not list(node.spool.temp_dir.iterdir())


def test_unknown_calling_ae_is_rejected_permanently_and_logged_once(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="node.receive.policy")
    for _ in range(2):
        assoc = node.associate(calling="INTRUDER")
        assert assoc.is_rejected
        rj = assoc.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (1, 1, 3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'INTRUDER' is not a peer" in warnings[0].getMessage()


def test_wrong_called_ae_is_rejected(node: Node) -> None:
    assoc = node.associate(called="SOMEONEELSE")
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (1, 1, 7)


def test_a_peer_outside_its_addresses_is_rejected(tmp_path: Path) -> None:
    peers = '[[peers]]\nname = "ct"\nae_title = "STORESCU"\nallow_store = true\naddresses = ["10.9.8.0/24"]\n'
    node = Node(tmp_path, peers=peers)
    try:
        assoc = node.associate()
        assert assoc.is_rejected and assoc.acceptor.primitive.diagnostic == 3
    finally:
        node.close()
    peers = peers.replace("10.9.8.0/24", "127.0.0.0/8")
    node = Node(tmp_path / "2", peers=peers)
    try:
        assoc = node.associate()
        assert assoc.is_established
        assoc.release()
    finally:
        node.close()


def test_association_limit_rejects_transiently(tmp_path: Path) -> None:
    node = Node(tmp_path, extra="max_associations = 1")
    try:
        first = node.associate()
        assert first.is_established
        second = node.associate()
        assert second.is_rejected
        rj = second.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (2, 3, 2)
        first.release()
    finally:
        node.close()


def test_keep_first_duplicate_answers_success_and_keeps_the_stored_file(node: Node) -> None:
    sop = f"{SERIES}.1"
    first, second = tiny_ct(STUDY, SERIES, sop, index=0), tiny_ct(STUDY, SERIES, sop, index=5)
    assoc = node.associate()
    assert store(assoc, first) == Status.SUCCESS
    before = node.spool.path_for(STUDY, SERIES, sop).read_bytes()
    assert store(assoc, second) == Status.SUCCESS
    assoc.release()
    assert node.spool.path_for(STUDY, SERIES, sop).read_bytes() == before
    assert node.index.duplicates(STUDY) == 1


def test_replace_policy_stores_the_new_copy(tmp_path: Path) -> None:
    node = Node(tmp_path, extra='[duplicates]\npolicy = "replace"')
    try:
        sop = f"{SERIES}.1"
        assoc = node.associate()
        assert store(assoc, tiny_ct(STUDY, SERIES, sop, index=0)) == Status.SUCCESS
        second = tiny_ct(STUDY, SERIES, sop, index=5)
        assert store(assoc, second) == Status.SUCCESS
        assoc.release()
        assert node.spool.path_for(STUDY, SERIES, sop).read_bytes().endswith(encoded(second))
    finally:
        node.close()


def test_below_the_disk_floor_stores_are_out_of_resources(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.handler.guard.min_free_mb = 1e12  # more than any disk has: the floor is crossed
    try:
        assoc = node.associate()
        status = assoc.send_c_store(tiny_ct(STUDY, SERIES, f"{SERIES}.1"))
        assoc.release()
        assert status.Status == Status.OUT_OF_RESOURCES and "disk" in status.ErrorComment
        assert node.index.get(f"{SERIES}.1") is None
        assert not node.spool.path_for(STUDY, SERIES, f"{SERIES}.1").exists()
    finally:
        node.close()


def test_bad_datasets_get_specific_statuses_and_leave_nothing(node: Node) -> None:
    missing = tiny_ct(STUDY, SERIES, f"{SERIES}.7")
    del missing.StudyInstanceUID
    bad_uid = tiny_ct("1.2.x.3", SERIES, f"{SERIES}.8")
    assoc = node.associate()
    assert store(assoc, missing) == Status.CANNOT_UNDERSTAND_MISSING_UID
    assert store(assoc, bad_uid) == Status.CANNOT_UNDERSTAND_INVALID_UID
    # The request names one SOP Instance UID, the dataset another.
    mismatched = tiny_ct(STUDY, SERIES, f"{SERIES}.9")
    cx = next(c for c in assoc.accepted_contexts if c.abstract_syntax == CTImageStorage)
    mismatched_bytes = encoded(mismatched)
    mismatched.SOPInstanceUID = f"{SERIES}.10"
    from pynetdicom.dimse_primitives import C_STORE

    request = C_STORE()
    request.MessageID = 99
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = f"{SERIES}.10"
    request.Priority = 2
    request.DataSet = BytesIO(mismatched_bytes)
    assoc._reactor_checkpoint.clear()
    try:
        assoc.dimse.send_msg(request, cx.context_id)
        _, response = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assert response is not None and response.Status == Status.CANNOT_UNDERSTAND_UID_MISMATCH
    assoc.release()
    assert node.index.all_instances() == []
    assert not list(node.spool.root.glob("*/*/*.dcm"))


def test_a_peer_at_its_own_limit_is_rejected_transiently_while_others_get_in(tmp_path: Path) -> None:
    peers = (
        '[[peers]]\nname = "ct"\nae_title = "STORESCU"\nallow_store = true\nmax_associations = 1\n'
        '[[peers]]\nname = "mr"\nae_title = "MRSCU"\nallow_store = true\n'
    )
    node = Node(tmp_path, peers=peers)
    trail = AuditTrail(audit_path(tmp_path / "data"), "PACSNODE")
    node.receiver.audit = trail
    try:
        first = node.associate()
        assert first.is_established
        second = node.associate()
        assert second.is_rejected
        rj = second.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (2, 3, 2)
        other = node.associate(calling="MRSCU")
        assert other.is_established
        other.release()
        first.release()
        again = node.associate()  # the peer's slot is free again
        assert again.is_established
        again.release()
    finally:
        node.close()
    entries = list(read(audit_path(tmp_path / "data")))
    rejected = [e for e in entries if e["event"] == "association-rejected"]
    assert len(rejected) == 1 and "its peer's max_associations" in rejected[0]["reason"]
    assert sum(e["event"] == "association-accepted" for e in entries) == 3
