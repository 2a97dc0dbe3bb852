"""node.receive.identify's hand-written walker against the pydicom-based reader it replaced.

The reference (``reference_identify``, below) is the former implementation, kept here only: every file pydicom
ships that it can read offline must give the same Identity, and damaged variants (truncated at many offsets,
elements swapped, bad lengths, an undefined-length sequence without its delimiter) the same Status.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Iterator, Sequence
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from node.dicom.status import Status
from node.receive.identify import Identity, UnacceptableError, identify, identify_dataset
from tests.helpers import encode_dataset, tiny_ct

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY, SERIES = "1.2.826.0.1.3680043.10.9", "1.2.826.0.1.3680043.10.9.1"
SOP = SERIES + ".7"
SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


# -- the reference: node.receive.identify as it was, on pydicom's reader ------------------------------------

_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]
_DEFER_BYTES = 1024
_UNDEFINED_LENGTH = 0xFFFFFFFF
_BEFORE_META = 128 + 4 + 12
_DELIMITER_LE, _DELIMITER_BE = bytes.fromhex("feffdde000000000"), bytes.fromhex("fffee0dd00000000")


def reference_identify(part10: bytes, requested_sop_class: str, requested_sop_instance: str) -> Identity:
    try:
        ds = _reference_parse(part10)
        values = {tag: str(ds.get(tag, "") or "").strip() for tag in _TAGS}
    except UnacceptableError:
        raise
    except Exception as exc:
        raise UnacceptableError(Status.CANNOT_UNDERSTAND, f"dataset cannot be parsed ({type(exc).__name__})") from exc
    missing = [tag for tag in _TAGS if not values[tag]]
    if missing:
        raise UnacceptableError(Status.CANNOT_UNDERSTAND_MISSING_UID, f"dataset has no {', '.join(missing)}")
    if values["SOPInstanceUID"] != requested_sop_instance.strip():
        raise UnacceptableError(Status.CANNOT_UNDERSTAND_UID_MISMATCH, "instance mismatch")
    if values["SOPClassUID"] != requested_sop_class.strip():
        raise UnacceptableError(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "class mismatch")
    return Identity(*(values[tag] for tag in _TAGS))


def _reference_parse(part10: bytes) -> Dataset:
    stream = BytesIO(part10)
    ds: Dataset = dcmread(stream, defer_size=_DEFER_BYTES)
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        start = _BEFORE_META + int(ds.file_meta.FileMetaInformationGroupLength)
        stream = BytesIO(zlib.decompress(part10[start:], -zlib.MAX_WBITS))
        ds = read_dataset(stream, is_implicit_VR=False, is_little_endian=True, defer_size=_DEFER_BYTES)
    data = stream.getbuffer()
    elements = [ds.get_item(tag, keep_deferred=True) for tag in sorted(ds.keys())]
    if any(later <= earlier for earlier, later in itertools.pairwise(map(_value_tell, elements))):
        raise UnacceptableError(Status.CANNOT_UNDERSTAND, "dataset elements are not in ascending tag order")
    if stream.tell() < len(data):
        raise UnacceptableError(Status.CANNOT_UNDERSTAND, "dataset cannot be parsed to its end (truncated?)")
    if _end_of_last_element(elements, data) != len(data):
        raise UnacceptableError(Status.CANNOT_UNDERSTAND, "dataset is truncated: its last element is incomplete")
    return ds


def _end_of_last_element(elements: Sequence[object], data: memoryview) -> int:
    if not elements:
        return 0
    last = elements[-1]
    if isinstance(last, RawDataElement) and last.length != _UNDEFINED_LENGTH:
        return int(last.value_tell + last.length)
    return len(data) if bytes(data[-8:]) in (_DELIMITER_LE, _DELIMITER_BE) else -1


def _value_tell(element: object) -> int:
    tell = element.value_tell if isinstance(element, RawDataElement) else getattr(element, "file_tell", None)
    return -1 if tell is None else int(tell)


# -- helpers ------------------------------------------------------------------------------------------------


def header(syntax: str, sop: str = SOP, sop_class: str = CT) -> bytes:
    """Preamble, DICM and a file meta naming `syntax` (pydicom's writer, independent of node.store)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID = sop_class, sop, syntax
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + buffer.getvalue()


def outcome(function: object, part10: bytes, sop_class: str, sop: str) -> Identity | Status:
    try:
        return function(part10, sop_class, sop)  # type: ignore[operator, no-any-return]
    except UnacceptableError as exc:
        return exc.status


def assert_same(part10: bytes, sop_class: str = CT, sop: str = SOP) -> Identity | Status:
    expected = outcome(reference_identify, part10, sop_class, sop)
    assert outcome(identify, part10, sop_class, sop) == expected
    return expected


def top_level(data: bytes, syntax: str) -> list[tuple[int, int, int, int]]:
    """(offset, length offset, length size, end) of each top-level element with a defined length."""
    big, implicit = syntax == ExplicitVRBigEndian, syntax == ImplicitVRLittleEndian
    order = ">" if big else "<"
    found, at = [], 0
    while at + 8 <= len(data):
        if implicit or data[at + 4 : at + 6] in _LONG_VRS:
            where, size = (at + 4, 4) if implicit else (at + 8, 4)
        else:
            where, size = at + 6, 2
        (length,) = struct.unpack(order + ("L" if size == 4 else "H"), data[where : where + size])
        if length == _UNDEFINED_LENGTH:
            break
        found.append((at, where, size, where + size + length))
        at = where + size + length
    return found


def shipped_files() -> Iterator[Path]:
    """pydicom's own test files on this machine (never downloaded)."""
    ct = get_testdata_file("CT_small.dcm", download=False)
    assert isinstance(ct, str)
    yield from sorted(Path(ct).parent.glob("*.dcm"))


# -- the same Identity on every shipped file ----------------------------------------------------------------


def test_every_shipped_file_gives_the_same_identity() -> None:
    compared = 0
    for path in shipped_files():
        raw = path.read_bytes()
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:  # not a file pydicom reads: not a reference
            continue
        meta = ds.file_meta
        if "TransferSyntaxUID" not in meta or "FileMetaInformationGroupLength" not in meta or raw[128:132] != b"DICM":
            continue  # identify reads what part10_header writes: a well-formed file meta
        sop_class, sop = str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
        expected = assert_same(raw, sop_class, sop)
        start = _BEFORE_META + int(meta.FileMetaInformationGroupLength)
        try:
            got: Identity | Status = identify_dataset(raw[start:], str(meta.TransferSyntaxUID), sop_class, sop)
        except UnacceptableError as exc:
            got = exc.status
        assert got == expected, path.name
        compared += 1
    assert compared >= 60  # JPEG, RLE, deflated, big endian, implicit, SR, waveform, private sequences...


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_a_valid_dataset_in_each_syntax(syntax: str) -> None:
    data = encode_dataset(tiny_ct(STUDY, SERIES, SOP), syntax)
    assert assert_same(header(syntax) + data) == Identity(CT, SOP, STUDY, SERIES)
    assert identify_dataset(data, syntax, CT, SOP) == Identity(CT, SOP, STUDY, SERIES)


# -- the same Status on damaged variants --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm",
                                  "image_dfl.dcm", "reportsi.dcm", "waveform_ecg.dcm", "nested_priv_SQ.dcm",
                                  "UN_sequence.dcm", "MR_small_RLE.dcm"])  # fmt: skip
def test_truncated_files(name: str) -> None:
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str)
    raw = Path(path).read_bytes()
    ds = dcmread(path, stop_before_pixels=True)
    sop_class, sop = str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
    start = _BEFORE_META + int(ds.file_meta.FileMetaInformationGroupLength)
    step = max(97, (len(raw) - start) // 150)  # pydicom's reader is slow on a long truncated waveform
    cuts = {*range(start + 1, len(raw), step), *range(start + 1, start + 16), *range(len(raw) - 16, len(raw))}
    refused = 0
    for cut in sorted(cuts):
        refused += isinstance(assert_same(raw[:cut], sop_class, sop), Status)
    assert refused >= len(cuts) // 2


@pytest.mark.parametrize("syntax", SYNTAXES[:3])
def test_truncated_swapped_and_bad_lengths(syntax: str) -> None:
    data = encode_dataset(tiny_ct(STUDY, SERIES, SOP, size=16), syntax)
    meta = header(syntax)
    for cut in range(1, len(data)):
        assert_same(meta + data[:cut])
    elements = top_level(data, syntax)
    assert len(elements) > 15
    for (a, _, _, a_end), (b, _, _, b_end) in itertools.combinations(elements, 2):
        swapped = data[:a] + data[b:b_end] + data[a_end:b] + data[a:a_end] + data[b_end:]
        assert assert_same(meta + swapped) == Status.CANNOT_UNDERSTAND
    order = ">" if syntax == ExplicitVRBigEndian else "<"
    for _, where, size, end in elements:
        length = end - where - size
        for bad in {0, 1, 2, length - 1, length + 1, length * 2, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFF0}:
            if bad < 0 or bad >= 1 << (8 * size):
                continue
            packed = struct.pack(order + ("L" if size == 4 else "H"), bad)
            assert_same(meta + data[:where] + packed + data[where + size :])
    assert_same(meta + data + b"\x00" * 3)  # bytes left that make no element
    assert_same(meta + data + bytes.fromhex("feff0de000000000") + data[:8])  # an item delimiter at the top


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_undefined_length_sequences(syntax: str) -> None:
    ds = tiny_ct(STUDY, SERIES, SOP)
    item = Dataset()
    item.CodeValue, item.CodeMeaning = "T-D0050", "Tissue"
    nested = Dataset()
    nested.ReferencedSOPInstanceUID = SOP
    item.ReferencedImageSequence = DicomSequence([nested])
    del ds.PixelData
    ds.add_new(0x00091010, "LO", "PRIVATE")  # a private creator, then its sequence
    ds.AnatomicRegionSequence = DicomSequence([item, item])
    ds.add_new(0x00091011, "SQ", DicomSequence([nested]))
    ds.PerformedProtocolCodeSequence = DicomSequence([item])  # the last element
    sequences = (ds["AnatomicRegionSequence"], item["ReferencedImageSequence"], ds[0x00091011])
    for element in (*sequences, ds["PerformedProtocolCodeSequence"]):
        element.is_undefined_length = True
    for dataset in (item, nested):
        dataset.is_undefined_length_sequence_item = True
    data = encode_dataset(ds, syntax)
    meta = header(syntax)
    assert assert_same(meta + data) == Identity(CT, SOP, STUDY, SERIES)
    if syntax == DeflatedExplicitVRLittleEndian:
        return
    assert data.endswith(_DELIMITER_BE if syntax == ExplicitVRBigEndian else _DELIMITER_LE)
    for cut in range(1, 48):  # the last sequence without its delimiter, its item delimiters cut
        assert assert_same(meta + data[:-cut]) == Status.CANNOT_UNDERSTAND
    for cut in range(len(data) - 400, len(data), 7):
        assert_same(meta + data[:cut])


def test_pydicom_version_is_the_reference_one() -> None:
    # The reference's behaviour is pydicom 3's reader: a major update must be looked at again.
    assert pydicom.__version__.startswith("3.")
