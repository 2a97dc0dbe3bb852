"""Damaged datasets over C-STORE: each gets a specific status, never an abort, a crash or a hang.

Two parts, both over one real pynetdicom association on 127.0.0.1:

- named cases: truncated datasets, wrong element lengths, missing or mismatched SOP Instance UID,
  missing Study/Series UID, pixel data of the wrong size, invalid UIDs, wrong VRs, a store on a context
  of another abstract syntax; each with the status it must get;
- property-based fuzzing (hypothesis) of the bytes a C-STORE carries: a valid encoded small CT dataset
  (``tests.helpers.tiny_ct``) in one of four transfer syntaxes, truncated, overwritten, with bytes inserted
  or deleted, element lengths and VRs changed, the request's UIDs changed; sent raw as the C-STORE dataset.

The rule for every C-STORE: SUCCESS when the bytes still parse into a storable instance (then the file is in
the spool, byte for byte what was sent, and in the index), else one of the named failure statuses (then
nothing is in the spool or the index). Never: no response within the DIMSE timeout (a hang), an aborted
association, PROCESSING_FAILURE (0x0110: a bug in the node), or a status without a name.

Statuses are tallied by kind, printed, and written to ``fuzz-store.json`` in the test's tmp dir. The
number of examples is bounded for CI (``FUZZ_EXAMPLES``, default 300); raise it for a long run::

    FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/integration/test_fuzz_store.py -k fuzz -s
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification  # type: ignore[attr-defined]

from node.analyse.volume import load_series
from node.children import load_models
from node.config import parse_config
from node.dicom.status import Status
from node.errors import UnreadableFileError
from node.jobs import JobState, JobStore
from node.jobs.kinds import ANALYSE
from node.receive import Receiver, StoreHandler
from node.send import send_kind
from node.store import DiskGuard, Index, Spool
from node.worker import Worker
from tests.helpers import node_toml, tiny_ct
from tests.peers import free_port

# pydicom warns about every malformed value it reads: here they are made on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

STUDY, SERIES = "1.2.826.0.1.3680043.10.9", "1.2.826.0.1.3680043.10.9.1"
SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)
# What a damaged dataset may be answered with (SOP_CLASS_NOT_SUPPORTED: a store on another class's context).
FAILURES = {
    Status.CANNOT_UNDERSTAND,
    Status.CANNOT_UNDERSTAND_MISSING_UID,
    Status.CANNOT_UNDERSTAND_UID_MISMATCH,
    Status.CANNOT_UNDERSTAND_INVALID_UID,
    Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    Status.SOP_CLASS_NOT_SUPPORTED,
}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


# -- encodings --------------------------------------------------------------------------------------------


def encode(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """The dataset's bytes in ``syntax`` (deflated: raw deflate of explicit VR little endian, PS3.5 A.5)."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = syntax != ExplicitVRBigEndian
    buffer.is_implicit_VR = syntax == ImplicitVRLittleEndian
    write_dataset(buffer, ds)
    data = buffer.getvalue()
    return deflate(data) if syntax == DeflatedExplicitVRLittleEndian else data


def deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@dataclass(frozen=True)
class Element:
    """Where one top-level element of an encoding sits."""

    tag: tuple[int, int]
    offset: int  # of the tag
    vr_offset: int | None  # of the two VR characters (explicit VR only)
    length_offset: int
    length_size: int  # 2 or 4 bytes
    value_offset: int
    length: int


def elements(data: bytes, syntax: str = ExplicitVRLittleEndian) -> list[Element]:
    """The top-level elements of an uncompressed encoding with defined lengths (all ``tiny_ct`` has)."""
    big = syntax == ExplicitVRBigEndian
    implicit = syntax == ImplicitVRLittleEndian
    order = ">" if big else "<"
    found, at = [], 0
    while at + 8 <= len(data):
        group, number = struct.unpack(order + "HH", data[at : at + 4])
        if implicit:
            (length,) = struct.unpack(order + "L", data[at + 4 : at + 8])
            found.append(Element((group, number), at, None, at + 4, 4, at + 8, length))
            at += 8 + length
        elif data[at + 4 : at + 6] in _LONG_VRS:
            if at + 12 > len(data):
                break
            (length,) = struct.unpack(order + "L", data[at + 8 : at + 12])
            found.append(Element((group, number), at, at + 4, at + 8, 4, at + 12, length))
            at += 12 + length
        else:
            (length,) = struct.unpack(order + "H", data[at + 6 : at + 8])
            found.append(Element((group, number), at, at + 4, at + 6, 2, at + 8, length))
            at += 8 + length
    return found


def element(data: bytes, tag: tuple[int, int], syntax: str = ExplicitVRLittleEndian) -> Element:
    return next(e for e in elements(data, syntax) if e.tag == tag)


def with_length(data: bytes, tag: tuple[int, int], length: int) -> bytes:
    """``data`` with the length field of ``tag`` (explicit VR little endian) set to ``length``."""
    e = element(data, tag)
    packed = struct.pack("<H" if e.length_size == 2 else "<L", length)
    return data[: e.length_offset] + packed + data[e.length_offset + e.length_size :]


def with_vr(data: bytes, tag: tuple[int, int], vr: bytes) -> bytes:
    """``data`` with the VR of ``tag`` replaced, keeping the header layout (2-byte length VRs only)."""
    e = element(data, tag)
    assert e.vr_offset is not None
    return data[: e.vr_offset] + vr + data[e.vr_offset + 2 :]


SOP_INSTANCE, STUDY_UID, SERIES_UID, PIXELS = (0x0008, 0x0018), (0x0020, 0x000D), (0x0020, 0x000E), (0x7FE0, 0x0010)


# -- the node and the sender ------------------------------------------------------------------------------


class Node:
    """A receiver over a temp data dir and one association carrying raw dataset bytes to it."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.config = parse_config(node_toml(tmp / "data", self.port))
        node = self.config.node
        self.spool = Spool(node.spool_dir)
        self.index = Index(node.index_path)
        self.receiver = Receiver(self.config, StoreHandler(self.spool, self.index, DiskGuard(node.data_dir, 0)))
        self.receiver.start()
        self.assoc = self.associate()
        self.message_id = itertools.count(1)
        self.uids = itertools.count(1)

    def associate(self) -> Association:
        ae = AE(ae_title="STORESCU")
        for syntax in SYNTAXES:  # one context per transfer syntax, so each example picks its own
            ae.add_requested_context(CTImageStorage, syntax)
        ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.network_timeout = 30
        ae.dimse_timeout = 10  # a hang is no response within this
        assoc = ae.associate("127.0.0.1", self.port, ae_title="PACSNODE")
        assert assoc.is_established
        return assoc

    def context_id(self, abstract: str, syntax: str = ExplicitVRLittleEndian) -> int:
        return next(
            c.context_id
            for c in self.assoc.accepted_contexts
            if c.abstract_syntax == abstract and c.transfer_syntax[0] == syntax
        )

    def new_sop(self) -> str:
        return f"{SERIES}.{next(self.uids)}"

    def send(
        self,
        data: bytes,
        sop: str,
        *,
        sop_class: str = CTImageStorage,
        context: str = CTImageStorage,
        syntax: str = ExplicitVRLittleEndian,
    ) -> Dataset:
        """Send ``data`` as the dataset of a C-STORE request for ``sop``; return the response's command set."""
        if not self.assoc.is_established:  # an earlier example failed (and said so): go on with a new one
            self.assoc = self.associate()
        request = C_STORE()
        request.MessageID = next(self.message_id)
        request.AffectedSOPClassUID = sop_class
        request.AffectedSOPInstanceUID = sop
        request.Priority = 2
        request.DataSet = BytesIO(data)
        self.assoc._reactor_checkpoint.clear()  # as pynetdicom's own send_c_store does around a request
        try:
            self.assoc.dimse.send_msg(request, self.context_id(context, syntax))
            _, response = self.assoc.dimse.get_msg(block=True)
        finally:
            self.assoc._reactor_checkpoint.set()
        assert response is not None, f"no C-STORE response within {self.assoc.dimse_timeout} s (a hang)"
        assert response.MessageIDBeingRespondedTo == request.MessageID
        assert self.assoc.is_established, "the node aborted the association"
        return response

    def status(self, data: bytes, sop: str | None = None, **kwargs: str) -> int:
        """Send, check what the node kept against the status, and return the status."""
        sop = sop or self.new_sop()
        before = self.spool_files()
        response = self.send(data, sop, **kwargs)
        status = int(response.Status)
        assert status == Status.SUCCESS or status in FAILURES, f"0x{status:04X}: {response}"
        assert not list(self.spool.temp_dir.iterdir()), "a temp file was left in the spool"
        row = self.index.get(sop)
        if status == Status.SUCCESS:
            assert row is not None, "success without an index row"
            stored = (self.spool.root / row.path).read_bytes()
            syntax = kwargs.get("syntax", ExplicitVRLittleEndian)
            assert stored.endswith(data) and stored[: -len(data) or None].startswith(b"\0" * 128 + b"DICM")
            back = dcmread(BytesIO(stored), stop_before_pixels=True)
            assert back.file_meta.TransferSyntaxUID == syntax and back.SOPInstanceUID == sop
            assert (back.StudyInstanceUID, back.SeriesInstanceUID) == (row.study_instance_uid, row.series_instance_uid)
        else:
            assert getattr(response, "ErrorComment", None), "a failure must say why"
            assert row is None and self.spool_files() == before, "a refused dataset left something behind"
        return status

    def spool_files(self) -> int:
        return len(list(self.spool.root.glob("*/*/*.dcm")))

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()
        self.receiver.stop()
        self.index.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("fuzz-store"))
    yield n
    n.close()


def ct(node: Node, size: int = 16) -> tuple[str, bytes]:
    """A fresh SOP Instance UID and a valid CT dataset for it, explicit VR little endian."""
    sop = node.new_sop()
    return sop, encode(tiny_ct(STUDY, SERIES, sop, size=size))


# -- named cases ------------------------------------------------------------------------------------------


def test_a_valid_dataset_in_every_transfer_syntax_is_stored(node: Node) -> None:
    for syntax in SYNTAXES:
        sop = node.new_sop()
        assert node.status(encode(tiny_ct(STUDY, SERIES, sop), syntax), sop, syntax=syntax) == Status.SUCCESS


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("inside the pixel data", Status.CANNOT_UNDERSTAND),
        ("one byte short", Status.CANNOT_UNDERSTAND),
        ("inside the pixel data header", Status.CANNOT_UNDERSTAND),
        ("inside the Study Instance UID", Status.CANNOT_UNDERSTAND),
        ("inside the SOP Instance UID", Status.CANNOT_UNDERSTAND),
        ("after the SOP Instance UID", Status.CANNOT_UNDERSTAND_MISSING_UID),
        ("before the pixel data", Status.SUCCESS),  # ends at an element: a valid dataset without pixels
        ("a single byte", Status.CANNOT_UNDERSTAND),
        ("half an element header", Status.CANNOT_UNDERSTAND),
    ],
)
def test_truncated_datasets(node: Node, where: str, expected: Status) -> None:
    sop, data = ct(node)
    pixels, study, instance = element(data, PIXELS), element(data, STUDY_UID), element(data, SOP_INSTANCE)
    cut = {
        "inside the pixel data": pixels.value_offset + 100,
        "one byte short": len(data) - 1,
        "inside the pixel data header": pixels.offset + 6,
        "inside the Study Instance UID": study.value_offset + 5,
        "inside the SOP Instance UID": instance.value_offset + 5,
        "after the SOP Instance UID": instance.value_offset + instance.length,
        "before the pixel data": pixels.offset,
        "a single byte": 1,  # (no bytes at all: pynetdicom sends no dataset, and the node waits for one)
        "half an element header": 5,
    }[where]
    assert node.status(data[:cut], sop) == expected


@pytest.mark.parametrize(
    ("tag", "length", "expected"),
    [
        (PIXELS, 0xFFFFFFF0, Status.CANNOT_UNDERSTAND),  # longer than the dataset
        (PIXELS, 600, Status.CANNOT_UNDERSTAND),  # a little longer than what follows
        (SOP_INSTANCE, 0xFFFF, Status.CANNOT_UNDERSTAND),  # a UID running past the end
        (SOP_INSTANCE, 4, Status.CANNOT_UNDERSTAND),  # a short UID: the rest of it read as elements
        (STUDY_UID, 0, Status.CANNOT_UNDERSTAND),  # an empty UID: its value read as elements
        (STUDY_UID, 3, Status.CANNOT_UNDERSTAND),
    ],
)
def test_wrong_element_lengths(node: Node, tag: tuple[int, int], length: int, expected: Status) -> None:
    sop, data = ct(node)
    assert node.status(with_length(data, tag, length), sop) == expected


def test_elements_out_of_order_are_refused(node: Node) -> None:
    """PS3.5 §7.1: ascending tags. Pixel Data first would hide every UID from a reader that stops before it."""
    sop, data = ct(node)
    pixels = element(data, PIXELS)
    moved = data[pixels.offset :] + data[: pixels.offset]
    assert node.status(moved, sop) == Status.CANNOT_UNDERSTAND
    sop, data = ct(node)
    study, series = element(data, STUDY_UID), element(data, SERIES_UID)
    swapped = (
        data[: study.offset]
        + data[series.offset : series.value_offset + series.length]
        + data[study.offset : series.offset]
        + data[series.value_offset + series.length :]
    )
    assert node.status(swapped, sop) == Status.CANNOT_UNDERSTAND


def test_missing_and_mismatched_uids(node: Node) -> None:
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"):
        sop = node.new_sop()
        ds = tiny_ct(STUDY, SERIES, sop)
        delattr(ds, keyword)
        assert node.status(encode(ds), sop) == Status.CANNOT_UNDERSTAND_MISSING_UID, keyword
    sop = node.new_sop()
    ds = tiny_ct(STUDY, SERIES, sop)
    ds.StudyInstanceUID = ""
    assert node.status(encode(ds), sop) == Status.CANNOT_UNDERSTAND_MISSING_UID
    sop, data = ct(node)
    assert node.status(data, node.new_sop()) == Status.CANNOT_UNDERSTAND_UID_MISMATCH
    # The dataset is an MR image, the request and its context say CT: does not match the SOP class.
    sop = node.new_sop()
    ds = tiny_ct(STUDY, SERIES, sop)
    ds.SOPClassUID = MRImageStorage
    assert node.status(encode(ds), sop) == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS


def test_a_store_on_a_context_of_another_abstract_syntax_is_refused(node: Node) -> None:
    """pynetdicom serves a C-STORE by its SOP Class whatever context it came on: the handler refuses it."""
    sop, data = ct(node)
    assert node.status(data, sop, context=Verification, syntax=ImplicitVRLittleEndian) == Status.SOP_CLASS_NOT_SUPPORTED
    sop, data = ct(node)
    assert node.status(data, sop, context=MRImageStorage) == Status.SOP_CLASS_NOT_SUPPORTED
    # The dataset and the request say MR, the context is CT's.
    sop = node.new_sop()
    ds = tiny_ct(STUDY, SERIES, sop)
    ds.SOPClassUID = MRImageStorage
    assert node.status(encode(ds), sop, sop_class=MRImageStorage) == Status.SOP_CLASS_NOT_SUPPORTED


@pytest.mark.parametrize(
    ("pixels", "loads"),
    [
        (b"", False),
        (b"\x01", False),
        (bytes(16 * 16 * 2 - 2), False),
        (bytes(16 * 16), False),
        (bytes(16 * 16 * 2 + 2), True),  # trailing bytes after the frame: pydicom ignores them
        (bytes(16 * 16 * 2 * 3), False),  # three frames' worth in a single-frame image: ambiguous
    ],
    ids=["empty", "one byte", "two bytes short", "half", "two bytes long", "three frames long"],
)
def test_pixel_data_of_the_wrong_size_is_stored_as_received(node: Node, pixels: bytes, loads: bool) -> None:
    """Tolerant on what we receive: the bytes are stored as sent; the loader refuses them, with its reason,
    when they are too few for the image."""
    sop = node.new_sop()
    ds = tiny_ct(STUDY, SERIES, sop)
    ds.PixelData = pixels
    assert node.status(encode(ds), sop) == Status.SUCCESS
    row = node.index.get(sop)
    assert row is not None
    if loads:
        assert load_series([node.spool.root / row.path]).shape == (1, 16, 16)
    else:
        with pytest.raises(UnreadableFileError, match="pixel data"):
            load_series([node.spool.root / row.path])


_BAD_UIDS = ["1.2.x.3", "1..2", ".1.2", "1.2.", "../../etc", "1.2/3", "1.2 3", "1." + "2" * 63]


@pytest.mark.parametrize(
    ("field", "uid"),
    [
        (field, uid)
        for field in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        for uid in _BAD_UIDS
        if field != "SOPInstanceUID" or len(uid) <= 64  # pynetdicom refuses to put a longer one in the request
    ],
)
def test_invalid_uids(node: Node, field: str, uid: str) -> None:
    sop, data = ct(node)
    data = with_value(data, field, uid)
    if field == "SOPInstanceUID":
        sop = uid  # the request names the same UID as the dataset
    assert node.status(data, sop) == Status.CANNOT_UNDERSTAND_INVALID_UID


@pytest.mark.parametrize("field", ["StudyInstanceUID", "SeriesInstanceUID"])
def test_non_ascii_uids(node: Node, field: str) -> None:
    sop, data = ct(node)
    assert node.status(with_value(data, field, "١.٢"), sop) == Status.CANNOT_UNDERSTAND_INVALID_UID


def test_uids_with_leading_zeros_are_stored(node: Node) -> None:
    """PS3.5 §9.1 forbids them, but old modalities send them and they make good file names: tolerated."""
    sop = node.new_sop()
    assert node.status(encode(tiny_ct("1.2.826.0.1.3680043.10.9.01", SERIES, sop)), sop) == Status.SUCCESS


def with_value(data: bytes, keyword: str, value: str) -> bytes:
    tag = {"StudyInstanceUID": STUDY_UID, "SeriesInstanceUID": SERIES_UID, "SOPInstanceUID": SOP_INSTANCE}[keyword]
    e = element(data, tag)
    raw = value.encode("utf-8")
    raw += b"\0" * (len(raw) % 2)
    header = data[e.offset : e.length_offset] + struct.pack("<H", len(raw))
    return data[: e.offset] + header + raw + data[e.value_offset + e.length :]


@pytest.mark.parametrize(
    ("tag", "vr", "expected"),
    [
        (SOP_INSTANCE, b"US", None),  # a UID read as unsigned shorts
        (SOP_INSTANCE, b"SQ", Status.CANNOT_UNDERSTAND),  # 2-byte length where SQ has 4: the layout breaks
        (STUDY_UID, b"ZZ", None),  # not a VR at all
        (STUDY_UID, b"\0\0", None),
        (STUDY_UID, b"DS", None),
        (PIXELS, b"UT", None),
        (SERIES_UID, b"FD", None),
    ],
)
def test_wrong_vrs(node: Node, tag: tuple[int, int], vr: bytes, expected: Status | None) -> None:
    sop, data = ct(node)
    e = element(data, tag)
    assert e.vr_offset is not None
    damaged = data[: e.vr_offset] + vr + data[e.vr_offset + 2 :]  # the header's layout stays the old VR's
    status = node.status(damaged, sop)  # any named status; never 0x0110 or silence (checked in status())
    if expected is not None:
        assert status == expected


# -- property-based fuzzing -------------------------------------------------------------------------------

# Byte-level operations on an encoding: (name, position in [0, 1), argument).
_OPS = ("truncate", "overwrite", "insert", "delete", "length", "vr", "swap", "value", "value")
_VRS = [b"UI", b"US", b"UL", b"OB", b"OW", b"SQ", b"UN", b"LO", b"DS", b"IS", b"ZZ", b"\0\0", b"\xff\xff"]


@st.composite
def mutations(draw: st.DrawFn) -> dict[str, object]:
    """A recipe: transfer syntax, pixel size, the request's claims, 1-4 operations on the inner encoding and,
    for deflated data, 0-2 on the compressed stream."""

    def op() -> st.SearchStrategy[tuple[str, float, int]]:
        return st.tuples(st.sampled_from(_OPS), st.floats(0, 1, exclude_max=True), st.integers(0, 2**32 - 1))

    return {
        "syntax": draw(st.sampled_from(SYNTAXES)),
        "size": draw(st.sampled_from([2, 4, 16])),
        "claim": draw(st.sampled_from(["same"] * 8 + ["other instance", "other class", "other context"])),
        "inner": draw(st.lists(op(), max_size=4)),
        "outer": draw(st.lists(op(), max_size=2)),
    }


def apply(data: bytes, ops: list[tuple[str, float, int]], syntax: str) -> bytes:
    for name, where, arg in ops:
        at = int(where * (len(data) + 1))
        if name == "truncate":
            data = data[:at]
        elif name == "overwrite":
            run = bytes((arg >> (8 * k)) & 0xFF for k in range(1 + arg % 4))
            data = data[:at] + run + data[at + len(run) :]
        elif name == "insert":
            data = data[:at] + bytes((arg >> (8 * k)) & 0xFF for k in range(1 + arg % 8)) + data[at:]
        elif name == "delete":
            data = data[:at] + data[at + 1 + arg % 16 :]
        elif name == "swap":  # two elements change places: tags out of order
            found = elements(data, syntax) if syntax != DeflatedExplicitVRLittleEndian else []
            i, j = sorted((int(where * len(found)), arg % max(len(found), 1)))
            if i != j:
                a, b = found[i], found[j]
                a_end, b_end = a.value_offset + a.length, b.value_offset + b.length
                data = (
                    data[: a.offset]
                    + data[b.offset : b_end]
                    + data[a_end : b.offset]
                    + data[a.offset : a_end]
                    + data[b_end:]
                )
        elif syntax != DeflatedExplicitVRLittleEndian:  # length / vr: aimed at an element's header
            found = elements(data, syntax)
            if not found:
                continue
            e = found[int(where * len(found))]
            if name == "value":  # one character of a value changed: the layout stays, the content is wrong
                if e.length:
                    at = e.value_offset + arg % e.length
                    data = data[:at] + bytes([32 + (arg >> 8) % 95]) + data[at + 1 :]
            elif name == "length":
                lengths = [0, 1, 2, e.length + 1, e.length - 1, e.length * 2, 0xFFFF, 0xFFFFFFFF, arg]
                value = lengths[arg % len(lengths)] % (1 << (8 * e.length_size))
                order = ">" if syntax == ExplicitVRBigEndian else "<"
                packed = struct.pack(order + ("H" if e.length_size == 2 else "L"), value)
                data = data[: e.length_offset] + packed + data[e.length_offset + e.length_size :]
            elif e.vr_offset is not None:
                data = data[: e.vr_offset] + _VRS[arg % len(_VRS)] + data[e.vr_offset + 2 :]
    return data


def build(node: Node, recipe: dict[str, object]) -> tuple[bytes, str, dict[str, str]]:
    """The damaged bytes, the SOP Instance UID the request names, and how to send them."""
    syntax, size, claim = str(recipe["syntax"]), int(recipe["size"]), str(recipe["claim"])  # type: ignore[call-overload]
    sop = node.new_sop()
    inner_syntax = ExplicitVRLittleEndian if syntax == DeflatedExplicitVRLittleEndian else syntax
    inner = encode(tiny_ct(STUDY, SERIES, sop, size=size), inner_syntax)
    data = apply(inner, recipe["inner"], inner_syntax)  # type: ignore[arg-type]
    if syntax == DeflatedExplicitVRLittleEndian:
        data = apply(deflate(data), recipe["outer"], syntax)  # type: ignore[arg-type]
    how = {"syntax": syntax}
    if claim == "other instance":
        sop = node.new_sop()
    elif claim == "other class":
        how["sop_class"] = MRImageStorage  # on the CT context: refused before the bytes are read
    elif claim == "other context":
        how.update(sop_class=MRImageStorage, context=MRImageStorage, syntax=ExplicitVRLittleEndian)
    return data, sop, how


def test_fuzz_dataset_bytes_over_c_store(node: Node, tmp_path: Path) -> None:
    tally: Counter[str] = Counter()
    by_syntax: Counter[str] = Counter()
    slowest = [0.0]
    start = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(recipe=mutations())
    def one(recipe: dict[str, object]) -> None:
        data, sop, how = build(node, recipe)
        assume(data)  # no bytes at all: pynetdicom sends no dataset, and the node waits for one (a peer stall)
        began = time.monotonic()
        status = node.status(data, sop, **how)
        slowest[0] = max(slowest[0], time.monotonic() - began)
        tally[Status(status).name] += 1
        by_syntax[f"{UID(str(recipe['syntax'])).name}: {Status(status).name}"] += 1

    one()
    report = {
        "cases": sum(tally.values()),
        "crashes": 0,  # a crash, an abort, a 0x0110 or a hang fails the test before this line
        "hangs": 0,
        "statuses": dict(tally.most_common()),
        "by_transfer_syntax": dict(sorted(by_syntax.items())),
        "slowest_store_s": round(slowest[0], 3),
        "seconds": round(time.monotonic() - start, 1),
    }
    (tmp_path / "fuzz-store.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nC-STORE fuzzing: {json.dumps(report, indent=2)}\nwritten to {tmp_path / 'fuzz-store.json'}")
    assert report["cases"] >= min(EXAMPLES, 50)
    assert Status.SUCCESS.name in tally and len(tally) >= 3  # the mutations reach both sides of the rule
    assert node.assoc.is_established


# -- bad pixels downstream: the analysis job fails with its reason, the queue goes on ---------------------

PEERS = """
[[peers]]
name = "scanner"
ae_title = "STORESCU"
allow_store = true
[[peers]]
name = "pacs"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = 4242
"""


def test_an_analysis_job_on_bad_pixels_fails_with_its_reason_and_the_next_job_runs(tmp_path: Path) -> None:
    """Stored (tolerant), then refused by the analysis: the job is dead with the loader's reason, at the first
    attempt, and the worker takes the next job, which completes."""
    port = free_port()
    analysis = '\n[analysis]\nmodels = ["lung-nodule-ct"]\nsend_results_to = ["pacs"]\n'
    config = parse_config(node_toml(tmp_path / "data", port, peers=PEERS) + analysis)
    data = config.node
    spool, index, jobs = Spool(data.spool_dir), Index(data.index_path), JobStore(data.jobs_path)
    receiver = Receiver(config, StoreHandler(spool, index, DiskGuard(data.data_dir, 0)))
    receiver.start()
    try:
        ae = AE(ae_title="STORESCU")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
        assert assoc.is_established
        studies = {"bad": f"{STUDY}.100", "good": f"{STUDY}.200"}
        for name, study in studies.items():
            series = f"{study}.1"
            for i in range(12):  # the model needs at least 10 slices
                ds = tiny_ct(study, series, f"{series}.{i + 1}", index=i)
                # Type 2 attributes results copy from their source (tiny_ct leaves them out).
                ds.PatientBirthDate = ds.PatientSex = ds.ReferringPhysicianName = ds.AccessionNumber = ""
                ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber = "20240101", "120000", "1", 1
                if name == "bad" and i == 5:
                    ds.PixelData = ds.PixelData[:100]  # stored as received: the C-STORE succeeds
                assert int(assoc.send_c_store(ds).Status) == Status.SUCCESS
        assoc.release()
        payload = {"series": None, "model": "lung-nodule-ct", "results_to": ["pacs"]}
        bad = jobs.enqueue(ANALYSE, {"study": studies["bad"], **payload})
        good = jobs.enqueue(ANALYSE, {"study": studies["good"], **payload})
        worker = Worker(config, jobs, index, load_models(config), threading.Event())
        assert worker.run_once()
        failed = jobs.get(bad)
        assert failed is not None and failed.state is JobState.DEAD and failed.attempts == 1
        assert failed.last_error is not None
        assert "pixel data cannot be decoded" in failed.last_error and f"{studies['bad']}.1.6.dcm" in failed.last_error
        assert worker.run_once()
        done = jobs.get(good)
        assert done is not None and done.state is JobState.DONE, done
        assert jobs.list(kind=send_kind("pacs")), "the good study's results were not queued for the PACS"
        assert not worker.run_once()  # nothing left, nothing stuck
    finally:
        receiver.stop()
        jobs.close()
        index.close()
