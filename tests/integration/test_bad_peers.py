"""A scripted malicious peer over raw sockets: malformed PDUs, out-of-order fragments, stalls and floods.

PDUs are built by hand (PS3.8 §9.3) so that the node sees exactly what a broken or hostile peer sends:
wrong lengths, unknown types, P-DATA before an association, fragments out of order, a peer that stops
half-way through a PDU and keeps its socket open, garbage, association floods. After every case:

- the bad connection is gone within the configured timeouts (the node never hangs on a peer),
- a normal pynetdicom association still echoes and stores (the node never crashes),
- nothing half-written is in the spool (no temp file; every ``.dcm`` has its index row and parses),
- no association thread or file descriptor is left behind.

The node runs with short timeouts (``acse_timeout_s`` = ``network_timeout_s`` = 1 s) so each case is quick.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from node.config import NodeConfig, parse_config
from node.dicom.status import Status
from node.receive import Receiver, StoreHandler
from node.store import DiskGuard, Index, Spool
from tests.helpers import tiny_ct
from tests.peers import free_port

STUDY, SERIES = "1.2.826.0.1.3680043.10.7", "1.2.826.0.1.3680043.10.7.1"
TIMEOUT_S = 1.0  # the node's acse and network timeouts in these tests
# How long the node may take to drop a bad connection: its timeout, the reactor's polling, a margin for CI.
DROP_BOUND_S = TIMEOUT_S + 2.5
APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"

# PDU types (PS3.8 §9.3.1).
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07
# Message control header of a PDV (PS3.8 Annex E.2): bit 0 command/dataset, bit 1 last fragment.
DATA, COMMAND, DATA_LAST, COMMAND_LAST = 0x00, 0x01, 0x02, 0x03
ECHO_CX, CT_CX = 1, 3  # presentation context IDs the raw peer proposes


# -- PDUs by hand (PS3.8 §9.3) ----------------------------------------------------------------------------


def pdu(kind: int, body: bytes, length: int | None = None) -> bytes:
    """A PDU: type, reserved, 4-byte big-endian length (``length`` overrides the true one), body."""
    return struct.pack(">BBL", kind, 0, len(body) if length is None else length) + body


def item(kind: int, body: bytes, length: int | None = None) -> bytes:
    """A variable item of an A-ASSOCIATE PDU: type, reserved, 2-byte length, body."""
    return struct.pack(">BBH", kind, 0, len(body) if length is None else length) + body


def presentation_context(context_id: int, abstract: str, *syntaxes: str) -> bytes:
    body = struct.pack(">BBBB", context_id, 0, 0, 0) + item(0x30, abstract.encode())
    return item(0x20, body + b"".join(item(0x40, ts.encode()) for ts in syntaxes))


def associate_rq(
    calling: str = "STORESCU", called: str = "PACSNODE", contexts: bytes | None = None, user: bytes | None = None
) -> bytes:
    """An A-ASSOCIATE-RQ proposing Verification (context 1) and CT Image Storage (context 3)."""
    if contexts is None:
        contexts = presentation_context(ECHO_CX, Verification, ImplicitVRLittleEndian) + presentation_context(
            CT_CX, CTImageStorage, ExplicitVRLittleEndian
        )
    if user is None:
        user = item(0x50, item(0x51, struct.pack(">L", 16384)) + item(0x52, b"1.2.826.0.1.3680043.10.7.99"))
    header = struct.pack(">HH16s16s32s", 1, 0, called.encode().ljust(16), calling.encode().ljust(16), b"")
    return pdu(A_ASSOCIATE_RQ, header + item(0x10, APPLICATION_CONTEXT) + contexts + user)


def pdv(context_id: int, control: int, fragment: bytes, length: int | None = None) -> bytes:
    """A presentation data value item: 4-byte length (context ID + control + fragment), context, control."""
    real = len(fragment) + 2
    return struct.pack(">LBB", real if length is None else length, context_id, control) + fragment


def p_data(*pdvs: bytes) -> bytes:
    return pdu(P_DATA_TF, b"".join(pdvs))


def release_rq() -> bytes:
    return pdu(A_RELEASE_RQ, bytes(4))


def abort_pdu() -> bytes:
    return pdu(A_ABORT, bytes(4))


def implicit_le(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    return buffer.getvalue()


def explicit_le(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def command(**elements: object) -> bytes:
    """A DIMSE command set (implicit VR little endian, as PS3.7 §6.3.1 requires) with its group length."""
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.CommandGroupLength = len(implicit_le(ds))
    return implicit_le(ds)


def echo_rq(message_id: int = 1) -> bytes:
    return command(
        AffectedSOPClassUID=Verification, CommandField=0x0030, MessageID=message_id, CommandDataSetType=0x0101
    )


def store_rq(sop: str, message_id: int = 1, sop_class: str = CTImageStorage) -> bytes:
    return command(
        AffectedSOPClassUID=sop_class,
        CommandField=0x0001,
        MessageID=message_id,
        Priority=0,
        CommandDataSetType=0x0000,
        AffectedSOPInstanceUID=sop,
    )


def decode_command(fragment: bytes) -> Dataset:
    from pydicom.filereader import read_dataset

    return read_dataset(BytesIO(fragment), is_implicit_VR=True, is_little_endian=True)


# -- the raw peer ---------------------------------------------------------------------------------------


@dataclass
class Reaction:
    """What the node did with a connection: the PDU types it sent, and whether it closed the connection."""

    pdus: list[int] = field(default_factory=list)
    closed: bool = False
    seconds: float = 0.0
    bodies: list[bytes] = field(default_factory=list)


class RawPeer:
    """A TCP client that speaks (or mis-speaks) the DICOM upper layer by hand."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_exact(self, n: int, deadline: float) -> bytes | None:
        data = b""
        while len(data) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(n - len(data))
            except TimeoutError:
                raise
            except OSError:  # reset by the node: closed
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def read_pdu(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next PDU (type, body), or None when the node closed the connection; TimeoutError if silent."""
        deadline = time.monotonic() + timeout
        head = self.read_exact(6, deadline)
        if head is None:
            return None
        kind, _, length = struct.unpack(">BBL", head)
        body = self.read_exact(length, deadline)
        if body is None:
            return None
        return kind, body

    def reaction(self, within: float = DROP_BOUND_S) -> Reaction:
        """Read whatever the node sends until it closes the connection or ``within`` seconds pass."""
        start = time.monotonic()
        seen = Reaction()
        while time.monotonic() - start < within:
            try:
                got = self.read_pdu(timeout=within - (time.monotonic() - start))
            except TimeoutError:
                break
            if got is None:
                seen.closed = True
                break
            seen.pdus.append(got[0])
            seen.bodies.append(got[1])
        seen.seconds = time.monotonic() - start
        return seen

    def associate(self, rq: bytes | None = None) -> dict[int, str]:
        """Send an A-ASSOCIATE-RQ and return the accepted contexts (ID -> transfer syntax)."""
        self.send(rq or associate_rq())
        got = self.read_pdu()
        assert got is not None and got[0] == A_ASSOCIATE_AC, f"expected A-ASSOCIATE-AC, got {got!r}"
        return accepted_contexts(got[1])

    def response(self, timeout: float = 5.0) -> Dataset:
        """The next DIMSE response's command set (every fragment of it)."""
        fragments = b""
        while True:
            got = self.read_pdu(timeout)
            assert got is not None and got[0] == P_DATA_TF, f"expected P-DATA-TF, got {got!r}"
            body, last = got[1], False
            while body:
                (length,) = struct.unpack(">L", body[:4])
                control, fragment, body = body[5], body[6 : 4 + length], body[4 + length :]
                assert control & COMMAND, "a response carries no dataset"
                fragments += fragment
                last = bool(control & 0x02)
            if last:
                return decode_command(fragments)

    def close(self) -> None:
        self.sock.close()


def accepted_contexts(ac_body: bytes) -> dict[int, str]:
    """Presentation context IDs the A-ASSOCIATE-AC accepted, with their transfer syntax."""
    accepted: dict[int, str] = {}
    rest = ac_body[68:]  # protocol version, reserved, AE titles (echoed), reserved
    while rest:
        kind, _, length = struct.unpack(">BBH", rest[:4])
        body, rest = rest[4 : 4 + length], rest[4 + length :]
        if kind == 0x21 and body[2] == 0:  # result 0: acceptance
            _, _, ts_length = struct.unpack(">BBH", body[4:8])
            accepted[body[0]] = body[8 : 8 + ts_length].decode().rstrip("\0")
    return accepted


# -- the node -------------------------------------------------------------------------------------------


def config_text(data_dir: Path, port: int, max_associations: int, network_timeout: float) -> str:
    return (
        f'[node]\nae_title = "PACSNODE"\nbind = "127.0.0.1"\nport = {port}\ndata_dir = "{data_dir}"\n'
        f"[limits]\nmin_free_disk_mb = 0\nmax_associations = {max_associations}\n"
        f"acse_timeout_s = {TIMEOUT_S}\ndimse_timeout_s = 2\nnetwork_timeout_s = {network_timeout}\n"
        '[[peers]]\nname = "scanner"\nae_title = "STORESCU"\nallow_store = true\n'
    )


class Node:
    """The receiver as ``serve`` builds it, with short timeouts, and the checks every case ends with."""

    def __init__(self, tmp: Path, *, max_associations: int = 4, network_timeout: float = TIMEOUT_S) -> None:
        self.port = free_port()
        text = config_text(tmp / "data", self.port, max_associations, network_timeout)
        self.config: NodeConfig = parse_config(text)
        node = self.config.node
        self.spool = Spool(node.spool_dir)
        self.index = Index(node.index_path)
        self.handler = StoreHandler(self.spool, self.index, DiskGuard(node.data_dir, 0, ttl=0.0))
        self.receiver = Receiver(self.config, self.handler)
        self.receiver.start()
        self.stored: list[str] = []
        self.served = 0
        self.baseline: tuple[int, int] | None = None  # threads and descriptors once warm

    def raw(self) -> RawPeer:
        return RawPeer(self.port)

    def associate(self, calling: str = "STORESCU") -> Association:
        ae = AE(ae_title=calling)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
        return ae.associate("127.0.0.1", self.port, ae_title="PACSNODE")

    def serves(self, attempts: int = 1) -> bool:
        """A normal association echoes and stores a new instance (transient rejections are retried)."""
        for attempt in range(attempts):
            assoc = self.associate()
            if assoc.is_established:
                break
            assert assoc.is_rejected, "the node neither accepted nor rejected a well-behaved peer"
            rj = assoc.acceptor.primitive
            assert (rj.result, rj.result_source, rj.diagnostic) == (2, 3, 2), "only the limit may refuse it"
            if attempt == attempts - 1:
                return False
            time.sleep(0.2)
        try:
            assert int(assoc.send_c_echo().Status) == Status.SUCCESS
            self.served += 1
            sop = f"{SERIES}.1{self.served:05d}"  # apart from the UIDs the cases use
            ds = tiny_ct(STUDY, SERIES, sop, index=self.served)
            assert int(assoc.send_c_store(ds).Status) == Status.SUCCESS
            self.stored.append(sop)
        finally:
            assoc.release()
        return True

    def settled(self, timeout: float = DROP_BOUND_S, quiet: float = 0.3) -> bool:
        """Every association of the node has ended (its threads too) within ``timeout``, and none started
        for ``quiet`` seconds (a connection the peer closed at once may not have been accepted yet)."""
        deadline = time.monotonic() + timeout
        empty_since: float | None = None
        while time.monotonic() < deadline:
            if self.receiver.connections():
                empty_since = None
            elif empty_since is None:
                empty_since = time.monotonic()
            elif time.monotonic() - empty_since >= quiet:
                return True
            time.sleep(0.02)
        return False

    def assert_spool_clean(self) -> None:
        """No temp file; the spool holds exactly the instances stored by good peers, each complete."""
        assert not list(self.spool.temp_dir.iterdir()), "a temp file was left in the spool"
        files = sorted(self.spool.root.glob("*/*/*.dcm"))
        assert len(files) == len(self.stored)
        for path in files:
            ds = dcmread(path)
            assert ds.SOPInstanceUID in self.stored and len(ds.PixelData) == 16 * 16 * 2
        assert sorted(row.sop_instance_uid for row in self.index.all_instances()) == sorted(self.stored)

    def close(self) -> None:
        self.receiver.stop()
        self.index.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node for the whole module: it must survive every case in a row, not only each one alone."""
    n = Node(tmp_path_factory.mktemp("bad-peers"))
    assert n.serves()  # warm: the first association loads what the node loads once
    assert n.settled()
    n.baseline = _baseline()
    yield n
    n.close()


def after_case(node: Node) -> None:
    """The invariants every case ends with."""
    assert node.settled(), f"connections still open: {node.receiver.connections()}"
    assert node.serves(), "a well-behaved peer is no longer served"
    assert node.settled()
    node.assert_spool_clean()
    if node.baseline is not None:
        _no_leak(node.baseline)


# -- cases before an association: the node aborts or closes at once -------------------------------------

# A peer that stops half-way through a PDU hangs the association's reading thread; so does a PDU whose
# unknown type makes the node skip its header only (the rest of the bytes then read as a partial PDU).
# Unknown PDU types: the node answers A-ABORT, then reads the rest of the PDU as the next one and waits.
STUCK_AFTER_ABORT = {"unknown PDU type 0x00", "unknown PDU type 0x08", "unknown PDU type 0xFF", "TLS ClientHello"}


# pynetdicom 3.0.4 raises in its reactor thread (fsm DT-2: no Command Field, or an unknown one) after killing
# the connection's DUL; the connection still ends and nothing leaks, which is what these tests check.
PYNETDICOM_RAISES = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def cases(table: dict[str, object], stuck: set[str], raising: frozenset[str] = frozenset()) -> list[object]:
    def marks(name: str) -> list[pytest.MarkDecorator]:
        return [PYNETDICOM_RAISES] * (name in raising)

    return [pytest.param(name, marks=marks(name)) for name in table]


# name -> bytes sent on a fresh connection; the node must answer A-ABORT (PS3.8 state machine AA-1 in
# Sta2: an invalid or unexpected PDU) or close the connection, within the bound, while the peer waits.
BEFORE_ASSOCIATION: dict[str, bytes] = {
    "zero-length A-ASSOCIATE-RQ": pdu(A_ASSOCIATE_RQ, b""),
    "A-ASSOCIATE-RQ shorter than its fixed fields": pdu(A_ASSOCIATE_RQ, b"\x00\x01\x00\x00PACSNODE"),
    "A-ASSOCIATE-RQ item longer than the PDU": pdu(A_ASSOCIATE_RQ, associate_rq()[6:-4]),
    "A-ASSOCIATE-RQ presentation context length 0xFFFF": associate_rq(
        contexts=item(0x20, struct.pack(">BBBB", 1, 0, 0, 0) + item(0x30, Verification.encode()), length=0xFFFF)
    ),
    "A-ASSOCIATE-RQ unknown item type": associate_rq(user=item(0x99, b"xyz")),
    "A-ASSOCIATE-RQ without presentation contexts": associate_rq(contexts=b""),
    "unknown PDU type 0x00": pdu(0x00, bytes(8)),
    "unknown PDU type 0x08": pdu(0x08, bytes(8)),
    "unknown PDU type 0xFF": pdu(0xFF, bytes(8)),
    "P-DATA-TF before association": p_data(pdv(ECHO_CX, COMMAND_LAST, echo_rq())),
    "A-RELEASE-RQ before association": release_rq(),
    "A-RELEASE-RP before association": pdu(A_RELEASE_RP, bytes(4)),
    "A-ASSOCIATE-AC to the acceptor": pdu(A_ASSOCIATE_AC, bytes(68)),
    "A-ASSOCIATE-RJ to the acceptor": pdu(A_ASSOCIATE_RJ, bytes(4)),
    "HTTP request": b"GET / HTTP/1.1\r\nHost: node\r\n\r\n",
    "TLS ClientHello": bytes.fromhex("16030100a1010000") + bytes(0xA1),
}


@pytest.mark.parametrize("name", cases(BEFORE_ASSOCIATION, STUCK_AFTER_ABORT))
def test_malformed_first_pdu_is_refused_and_the_connection_closed(node: Node, name: str) -> None:
    peer = node.raw()
    try:
        peer.send(BEFORE_ASSOCIATION[name])
        seen = peer.reaction()  # the peer keeps its socket open: the node must close it
    finally:
        peer.close()
    assert seen.closed, f"{name}: the node still holds the connection after {seen.seconds:.1f} s: {seen}"
    # Refused (A-ABORT, A-ASSOCIATE-RJ) or just closed; an association without contexts is aborted at once.
    assert not seen.pdus or seen.pdus[-1] in (A_ABORT, A_ASSOCIATE_RJ), seen
    after_case(node)


def test_a_peer_that_aborts_or_hangs_up_at_once_is_forgotten(node: Node) -> None:
    for data in (abort_pdu(), b"", b"\x01", b"\x01\x00\x00\x00"):
        peer = node.raw()
        peer.send(data)
        peer.close()
    after_case(node)


def test_a_silent_connection_is_dropped_after_the_acse_timeout(node: Node) -> None:
    peer = node.raw()
    try:
        seen = peer.reaction()
    finally:
        peer.close()
    assert seen.closed and seen.seconds < DROP_BOUND_S
    after_case(node)


@pytest.mark.parametrize("seed", range(8))
def test_garbage_bytes_then_hang_up(node: Node, seed: int) -> None:
    import random

    rng = random.Random(seed)
    data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
    peer = node.raw()
    try:
        peer.send(data)
        peer.sock.shutdown(socket.SHUT_WR)  # the peer hangs up its side: the node must notice
        seen = peer.reaction()
    finally:
        peer.close()
    assert seen.closed
    after_case(node)


# -- a peer that stops mid-PDU and keeps its socket open -----------------------------------------------

STALLS: dict[str, Callable[[RawPeer], None]] = {
    "3 bytes of a PDU header": lambda p: p.send(associate_rq()[:3]),
    "half an A-ASSOCIATE-RQ": lambda p: p.send(associate_rq()[:40]),
    "A-ASSOCIATE-RQ declared 64 KiB longer than sent": lambda p: p.send(
        pdu(A_ASSOCIATE_RQ, associate_rq()[6:], length=len(associate_rq()) + 65536)
    ),
    "huge declared length (4 GiB) with a few bytes": lambda p: p.send(pdu(A_ASSOCIATE_RQ, b"abc", length=0xFFFFFFFF)),
    "P-DATA-TF header then silence, after association": lambda p: (
        p.associate(),
        p.send(pdu(P_DATA_TF, b"\x00\x00\x00\x10\x03\x03", length=1000)),
    ),
    "half a C-STORE dataset PDU, after association": lambda p: (
        p.associate(),
        p.send(p_data(pdv(CT_CX, COMMAND_LAST, store_rq(f"{SERIES}.900")))),
        p.send(p_data(pdv(CT_CX, DATA_LAST, explicit_le(tiny_ct(STUDY, SERIES, f"{SERIES}.900"))))[:300]),
    ),
}


@pytest.mark.parametrize("name", list(STALLS))
def test_a_peer_that_stops_mid_pdu_is_dropped_after_the_network_timeout(node: Node, name: str) -> None:
    peer = node.raw()
    try:
        STALLS[name](peer)
        seen = peer.reaction()
        assert seen.closed, f"{name}: the node still holds the connection after {seen.seconds:.1f} s"
        assert node.settled()
    finally:
        peer.close()  # unblocks the node's reading thread if it was still waiting
    after_case(node)


def test_an_idle_association_is_dropped_after_the_network_timeout(node: Node) -> None:
    peer = node.raw()
    try:
        assert peer.associate() == {ECHO_CX: ImplicitVRLittleEndian, CT_CX: ExplicitVRLittleEndian}
        seen = peer.reaction()
    finally:
        peer.close()
    assert seen.closed and A_ABORT in seen.pdus
    after_case(node)


# -- after an association: DIMSE fragments out of order, bad P-DATA --------------------------------------


def test_the_raw_peer_speaks_correctly(node: Node) -> None:
    """The builders above make valid PDUs: an echo and a store through them succeed."""
    sop = f"{SERIES}.500"
    peer = node.raw()
    try:
        peer.associate()
        peer.send(p_data(pdv(ECHO_CX, COMMAND_LAST, echo_rq(7))))
        rsp = peer.response()
        assert rsp.CommandField == 0x8030 and rsp.MessageIDBeingRespondedTo == 7 and rsp.Status == Status.SUCCESS
        data = explicit_le(tiny_ct(STUDY, SERIES, sop, index=50))
        # The dataset in three fragments of three PDUs: only the last is flagged last.
        peer.send(p_data(pdv(CT_CX, COMMAND_LAST, store_rq(sop, 8))))
        peer.send(p_data(pdv(CT_CX, DATA, data[:100])))
        peer.send(p_data(pdv(CT_CX, DATA, data[100:400]), pdv(CT_CX, DATA_LAST, data[400:])))
        rsp = peer.response()
        assert rsp.CommandField == 0x8001 and rsp.Status == Status.SUCCESS
        peer.send(release_rq())
        assert peer.read_pdu() == (A_RELEASE_RP, bytes(4))
    finally:
        peer.close()
    node.stored.append(sop)
    after_case(node)


def _ct(sop: str) -> bytes:
    return explicit_le(tiny_ct(STUDY, SERIES, sop, index=60))


# name -> PDUs sent after a successful association. Then the peer asks for a release: the node answers it,
# or has aborted / closed already. Never: a stored instance, a hang.
AFTER_ASSOCIATION: dict[str, list[bytes]] = {
    "dataset fragment before any command": [p_data(pdv(CT_CX, DATA_LAST, _ct(f"{SERIES}.600")))],
    "dataset fragment, then its command": [
        p_data(pdv(CT_CX, DATA_LAST, _ct(f"{SERIES}.601"))),
        p_data(pdv(CT_CX, COMMAND_LAST, store_rq(f"{SERIES}.601"))),
    ],
    "command flagged last with missing parts": [p_data(pdv(CT_CX, COMMAND_LAST, store_rq(f"{SERIES}.602")[:-30]))],
    "command without its SOP Instance UID": [
        p_data(
            pdv(
                CT_CX,
                COMMAND_LAST,
                command(AffectedSOPClassUID=CTImageStorage, CommandField=1, MessageID=3, CommandDataSetType=0),
            )
        ),
        p_data(pdv(CT_CX, DATA_LAST, _ct(f"{SERIES}.603"))),
    ],
    "command garbage flagged last": [p_data(pdv(CT_CX, COMMAND_LAST, b"\xff" * 40))],
    "unknown command field": [
        p_data(pdv(ECHO_CX, COMMAND_LAST, command(AffectedSOPClassUID=Verification, CommandField=0x0ABC, MessageID=4)))
    ],
    "command in two fragments, the first flagged last": [
        p_data(pdv(CT_CX, COMMAND_LAST, store_rq(f"{SERIES}.604")[:40])),
        p_data(pdv(CT_CX, COMMAND_LAST, store_rq(f"{SERIES}.604")[40:])),
    ],
    "command not last, then a dataset": [
        p_data(pdv(CT_CX, COMMAND, store_rq(f"{SERIES}.605")[:50])),
        p_data(pdv(CT_CX, DATA_LAST, _ct(f"{SERIES}.605"))),
    ],
    "store command, then another command instead of its dataset": [
        p_data(pdv(CT_CX, COMMAND_LAST, store_rq(f"{SERIES}.606"))),
        p_data(pdv(ECHO_CX, COMMAND_LAST, echo_rq(5))),
    ],
    "store command, then release without a dataset": [p_data(pdv(CT_CX, COMMAND_LAST, store_rq(f"{SERIES}.607")))],
    "store command, dataset not last, then release": [
        p_data(pdv(CT_CX, COMMAND_LAST, store_rq(f"{SERIES}.608"))),
        p_data(pdv(CT_CX, DATA, _ct(f"{SERIES}.608")[:200])),
    ],
    "PDV on a context never proposed": [p_data(pdv(99, COMMAND_LAST, echo_rq()))],
    "PDV on the echo context carrying a store": [
        p_data(pdv(ECHO_CX, COMMAND_LAST, store_rq(f"{SERIES}.609"))),
        p_data(pdv(ECHO_CX, DATA_LAST, _ct(f"{SERIES}.609"))),
    ],
    "PDV length longer than the PDU": [p_data(pdv(ECHO_CX, COMMAND_LAST, echo_rq(), length=5000))],
    "PDV length shorter than the PDV": [p_data(pdv(ECHO_CX, COMMAND_LAST, echo_rq(), length=10))],
    "PDV length 0": [p_data(pdv(ECHO_CX, COMMAND_LAST, b"", length=0))],
    "PDV length 2, no fragment": [p_data(pdv(ECHO_CX, COMMAND_LAST, b""))],
    "zero-length P-DATA-TF": [pdu(P_DATA_TF, b"")],
    "P-DATA-TF with a truncated PDV header": [pdu(P_DATA_TF, b"\x00\x00")],
    "second A-ASSOCIATE-RQ": [associate_rq()],
    "unknown PDU type": [pdu(0x42, bytes(16))],
    "A-ASSOCIATE-AC to the acceptor": [pdu(A_ASSOCIATE_AC, bytes(68))],
    "A-RELEASE-RP without a request": [pdu(A_RELEASE_RP, bytes(4))],
    "A-RELEASE-RQ of the wrong length": [pdu(A_RELEASE_RQ, bytes(40))],
    "A-ABORT": [abort_pdu()],
    "many tiny PDVs of one command": [
        p_data(*(pdv(ECHO_CX, COMMAND, echo_rq(6)[i : i + 1]) for i in range(len(echo_rq(6)) - 1))),
        p_data(pdv(ECHO_CX, COMMAND_LAST, echo_rq(6)[-1:])),
    ],
}


RAISING = frozenset(
    {
        "command garbage flagged last",
        "unknown command field",
        "command in two fragments, the first flagged last",
        "PDV length 2, no fragment",
    }
)


@pytest.mark.parametrize("name", cases(AFTER_ASSOCIATION, {"unknown PDU type"}, RAISING))
def test_bad_pdata_after_association_stores_nothing_and_the_node_goes_on(node: Node, name: str) -> None:
    peer = node.raw()
    try:
        peer.associate()
        for data in AFTER_ASSOCIATION[name]:
            try:
                peer.send(data)
            except OSError:  # the node closed the connection already
                break
        time.sleep(0.1)
        with contextlib.suppress(OSError):  # the node may have closed the connection already
            peer.send(release_rq())
        seen = peer.reaction()  # the peer keeps its socket open: the node must close it
    finally:
        peer.close()
    # Responses, then a release reply or an abort; what matters is that the node ends the connection.
    assert seen.closed, f"{name}: the node still holds the connection after {seen.seconds:.1f} s: {seen}"
    assert not seen.pdus or seen.pdus[-1] in (A_RELEASE_RP, A_ABORT), seen
    after_case(node)


# -- floods ---------------------------------------------------------------------------------------------


def _flood(port: int, n: int, send: bytes | None) -> list[RawPeer]:
    """Open ``n`` connections at once from as many threads; each sends ``send`` (if any) and stays open."""
    peers: list[RawPeer] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            peer = RawPeer(port)
            if send is not None:
                peer.send(send)
        except OSError:  # the node refused or reset the connection: that bounds the flood too
            return
        with lock:
            peers.append(peer)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return peers


def _reactions(peers: list[RawPeer], within: float) -> list[Reaction]:
    """Each peer's :meth:`RawPeer.reaction`, read at the same time (the node drops them in parallel)."""
    seen: list[Reaction] = [Reaction() for _ in peers]

    def read(k: int) -> None:
        seen[k] = peers[k].reaction(within)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(len(peers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seen


def _baseline() -> tuple[int, int]:
    return threading.active_count(), open_fds()


def _no_leak(before: tuple[int, int], timeout: float = DROP_BOUND_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(now > then for now, then in zip(_baseline(), before, strict=True)):
        time.sleep(0.05)
    threads, fds = _baseline()
    assert threads <= before[0], f"threads {before[0]} -> {threads}: {[t.name for t in threading.enumerate()]}"
    assert fds <= before[1], f"file descriptors {before[1]} -> {fds}"


FLOOD = 40  # connections at once, ten times limits.max_associations
# pynetdicom accepts a few dozen connections a second (every connection's threads poll, holding the GIL), and
# its listen queue holds 5: the kernel drops the handshakes of the rest, which get in on TCP's retransmissions
# (after 1, 3, 7, 15 s). The last of a flood is accepted, and its timeout starts, late: a looser bound.
FLOOD_BOUND_S = TIMEOUT_S + 20.0


def listen_overflows() -> int | None:
    """The kernel's count of connections dropped because a listen queue was full (Linux), else None."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in itertools.pairwise(lines):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            counters = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(counters["ListenOverflows"]) if "ListenOverflows" in counters else None
    return None


def test_a_flood_fits_in_the_listen_queue(node: Node) -> None:
    before = listen_overflows()
    if before is None:
        pytest.skip("no /proc/net/netstat: cannot count listen-queue overflows here")
    peers = _flood(node.port, FLOOD, None)
    try:
        overflows = (listen_overflows() or 0) - before
    finally:
        for p in peers:
            p.close()
    after_case(node)
    assert overflows == 0, f"{overflows} connections of the flood were dropped by a full listen queue"


def test_flood_of_unknown_callers_is_rejected_and_a_good_peer_is_served(node: Node) -> None:
    before = _baseline()
    peers = _flood(node.port, FLOOD, associate_rq(calling="INTRUDER"))
    try:
        assert node.serves(attempts=25), "a well-behaved peer was not served during the flood"
        answers = _reactions(peers, FLOOD_BOUND_S)
    finally:
        for p in peers:
            p.close()
    # Every flooder was rejected: permanently for its AE title, or transiently for the limit.
    assert all(A_ASSOCIATE_RJ in a.pdus and A_ASSOCIATE_AC not in a.pdus for a in answers)
    reasons = {a.bodies[a.pdus.index(A_ASSOCIATE_RJ)][1:4] for a in answers}
    assert reasons <= {b"\x01\x01\x03", b"\x02\x03\x02"}
    after_case(node)
    _no_leak(before)


def test_flood_of_established_associations_is_bounded_by_the_limit(tmp_path: Path) -> None:
    # Held associations must outlive the flood's negotiations: a longer network timeout than the others'.
    node = Node(tmp_path, network_timeout=4.0)
    try:
        assert node.serves()
        before = _baseline()
        most = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                most[0] = max(most[0], node.receiver.active_associations())
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        peers = _flood(node.port, FLOOD, associate_rq())
        try:
            answers = [p.read_pdu() for p in peers]
            kinds = [a[0] if a else None for a in answers]
            accepted = kinds.count(A_ASSOCIATE_AC)
            assert accepted <= node.config.limits.max_associations, kinds
            rejected = [a for a in answers if a and a[0] == A_ASSOCIATE_RJ]
            assert len(rejected) + accepted == len(peers) == FLOOD
            assert all(a[1][1:4] == b"\x02\x03\x02" for a in rejected)  # transient: local limit exceeded
            # The held associations go idle: the network timeout ends them, then a good peer is served.
            _reactions(peers, node.config.limits.network_timeout_s + FLOOD_BOUND_S)
        finally:
            stop.set()
            watcher.join()
            for p in peers:
                p.close()
        assert most[0] <= node.config.limits.max_associations
        after_case(node)
        _no_leak(before)
    finally:
        node.close()


def test_flood_of_silent_connections_is_dropped_and_the_node_recovers(node: Node) -> None:
    before = _baseline()
    peers = _flood(node.port, FLOOD, None)
    try:
        # Every connection the node accepted ends after the ACSE timeout. (Ones whose handshake a full listen
        # queue dropped may never reach it: the kernel's, not the node's; see the listen queue test above.)
        assert node.settled(FLOOD_BOUND_S), "silent connections outlived the ACSE timeout"
        answers = _reactions(peers, 0.5)
        assert sum(a.closed for a in answers) >= node.config.limits.max_associations
        assert node.serves()
    finally:
        for p in peers:
            p.close()
    after_case(node)
    _no_leak(before)


def test_flood_with_a_good_peer_storing_throughout(node: Node) -> None:
    """Waves of rejected callers while one good peer keeps storing on its own association."""
    before = _baseline()
    good = node.associate()
    assert good.is_established
    stop = threading.Event()
    flooded = [0]

    def waves() -> None:
        while not stop.is_set():
            for p in _flood(node.port, 10, associate_rq(calling="INTRUDER")):
                p.reaction(within=DROP_BOUND_S)
                p.close()
                flooded[0] += 1

    flooder = threading.Thread(target=waves)
    flooder.start()
    try:
        for i in range(20):
            sop = f"{SERIES}.{700 + i}"
            assert int(good.send_c_store(tiny_ct(STUDY, SERIES, sop, index=i)).Status) == Status.SUCCESS
            node.stored.append(sop)
    finally:
        stop.set()
        flooder.join()
        good.release()
    assert flooded[0] >= 10
    after_case(node)
    _no_leak(before)
