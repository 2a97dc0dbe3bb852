"""Read the few UIDs the spool needs from a received dataset's bytes, leaving pixel data untouched.

A hand-written walker over the top-level elements: the C-STORE hot path only needs four UIDs and the proof
that the bytes form a whole dataset, and pydicom's reader (which builds a Dataset, converts values and
copies the file meta) cost half of the handler's time for that. The walker reads the layout the way
pydicom's reader does where pydicom is lenient (an element whose VR is not two capitals read as implicit VR,
the first element deciding implicit or explicit VR), so that a dataset accepted here reads back the same
with pydicom, which the rest of the node uses on the stored file.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from struct import Struct

from node.dicom.status import Status

_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]
# The tags of _TAGS, in the same order: the index of each in the values found.
_WANTED = {0x00080016: 0, 0x00080018: 1, 0x0020000D: 2, 0x0020000E: 3}
_IMPLICIT_LE, _EXPLICIT_BE, _DEFLATED = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# Explicit VR: these have two reserved bytes and a 4-byte length (PS3.5 §7.1.2); every other VR a 2-byte one.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
# VRs whose value pydicom reads as the text it is: a UID under one of these reads back as that UID. Under
# any other (US, FD, ...) it reads back as numbers, so it cannot be the UID the request names. UN: pydicom
# takes the dictionary's VR (UI) for a known tag. None: implicit VR, the dictionary's VR (UI) too.
_TEXT_VRS = frozenset(b"AS CS DA DS DT IS LO LT PN SH ST TM UC UI UN UR UT".split()) | {None}
# Binary VRs and the size of their values: a length that is not a multiple cannot be read (pydicom raises).
_SIZES = {b"AT": 1, b"FD": 8, b"FL": 4, b"OD": 8, b"OF": 4, b"OL": 4, b"OV": 8, b"OW": 2, b"SL": 4, b"SS": 2}
_SIZES |= {b"SV": 8, b"UL": 4, b"US": 2, b"UV": 8, b"OB": 1, b"SQ": 1}
# A value that can never be a UID nor equal one a request names (a NUL is stripped from requests).
_NOT_A_UID = "\x00not a UID"
_PREAMBLE = 128 + 4
_TRUNCATED = "dataset is truncated: its last element is incomplete"
_NOT_TO_END = "dataset cannot be parsed to its end (truncated?)"
_OUT_OF_ORDER = "dataset elements are not in ascending tag order"
# group, element, VR, 2-byte length (explicit VR); group, element, 4-byte length (implicit VR); a length.
_EXPLICIT = {True: Struct("<HH2sH"), False: Struct(">HH2sH")}
_IMPLICIT = {True: Struct("<HHL"), False: Struct(">HHL")}
_U32 = {True: Struct("<L"), False: Struct(">L")}


@dataclass(frozen=True, slots=True)
class Identity:
    """Where an instance belongs."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str


class UnacceptableError(Exception):
    """The dataset cannot be stored; ``status`` is the C-STORE failure to answer, ``reason`` says why."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _broken(reason: str) -> UnacceptableError:
    return UnacceptableError(Status.CANNOT_UNDERSTAND, reason)


def identify(part10: bytes, requested_sop_class: str, requested_sop_instance: str) -> Identity:
    """The dataset's UIDs, checked against the C-STORE request: :func:`identify_dataset` on a Part-10 file.

    Parameters
    ----------
    part10
        The whole Part-10 encoding (preamble, file meta, dataset as received).
    requested_sop_class, requested_sop_instance
        Affected SOP Class and Instance UIDs of the C-STORE request.

    Raises
    ------
    UnacceptableError
        As :func:`identify_dataset`; CANNOT_UNDERSTAND too when the file meta cannot be read.
    """
    view = memoryview(part10)
    # The File Meta Information Group Length comes first (PS3.10 §7.1): explicit VR little endian, UL.
    if len(view) < _PREAMBLE + 12 or bytes(view[_PREAMBLE : _PREAMBLE + 6]) != b"\x02\x00\x00\x00UL":
        raise _broken("dataset cannot be parsed (no File Meta Information Group Length)")
    start = _PREAMBLE + 12 + _U32[True].unpack_from(view, _PREAMBLE + 8)[0]
    if start > len(view):
        raise _broken("dataset cannot be parsed (file meta longer than the file)")
    syntax = None
    at = _PREAMBLE + 12
    while at + 8 <= start:  # group 0002 is always explicit VR little endian
        group, element, vr, length = _EXPLICIT[True].unpack_from(view, at)
        header = 8
        if vr in _LONG_VRS:
            if at + 12 > start:
                break
            length, header = _U32[True].unpack_from(view, at + 8)[0], 12
        if (group, element) == (0x0002, 0x0010):
            syntax = _text(view[at + header : at + header + length])
        at += header + length
    if not syntax:
        raise _broken("dataset cannot be parsed (no Transfer Syntax UID in the file meta)")
    return identify_dataset(view[start:], syntax, requested_sop_class, requested_sop_instance)


def identify_dataset(
    dataset: bytes | memoryview, transfer_syntax_uid: str, requested_sop_class: str, requested_sop_instance: str
) -> Identity:
    """The dataset's UIDs, checked against the C-STORE request, read from its bytes alone.

    Only the top-level element headers are read (and the items of undefined-length values, to find where
    they end); pixel data and every value but the four UIDs are skipped.

    Parameters
    ----------
    dataset
        The dataset as received (no preamble, no file meta), encoded in `transfer_syntax_uid`.
    transfer_syntax_uid
        Implicit VR little endian, explicit VR big endian, deflated explicit VR little endian; any other
        is read as explicit VR little endian (as every encapsulated syntax is, PS3.5 §A.4).
    requested_sop_class, requested_sop_instance
        Affected SOP Class and Instance UIDs of the C-STORE request.

    Returns
    -------
    Identity
        The SOP Class, SOP Instance, Study Instance and Series Instance UIDs, stripped of their padding.

    Raises
    ------
    UnacceptableError
        With CANNOT_UNDERSTAND (unparseable, truncated, or its elements out of tag order),
        CANNOT_UNDERSTAND_MISSING_UID, CANNOT_UNDERSTAND_UID_MISMATCH or DATASET_DOES_NOT_MATCH_SOP_CLASS.
        The reason names attributes, never their values.
    """
    syntax = transfer_syntax_uid.strip().rstrip("\x00")
    data = memoryview(dataset)
    try:
        if syntax == _DEFLATED:
            data = memoryview(zlib.decompress(data, -zlib.MAX_WBITS))  # PS3.5 §A.5: raw deflate
        values = _top_level(data, implicit=syntax == _IMPLICIT_LE, little=syntax != _EXPLICIT_BE)
    except (zlib.error, RecursionError) as exc:  # a broken deflate stream; items nested beyond reason
        raise _broken(f"dataset cannot be parsed ({type(exc).__name__})") from exc
    missing = [keyword for keyword, value in zip(_TAGS, values, strict=True) if not value]
    if missing:
        raise UnacceptableError(Status.CANNOT_UNDERSTAND_MISSING_UID, f"dataset has no {', '.join(missing)}")
    if values[1] != requested_sop_instance.strip():
        raise UnacceptableError(
            Status.CANNOT_UNDERSTAND_UID_MISMATCH,
            "the dataset's SOP Instance UID differs from the C-STORE request's Affected SOP Instance UID",
        )
    if values[0] != requested_sop_class.strip():
        raise UnacceptableError(
            Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
            "the dataset's SOP Class UID differs from the C-STORE request's Affected SOP Class UID",
        )
    return Identity(*values)


def _top_level(data: memoryview, implicit: bool, little: bool) -> list[str]:
    """The values of the four UIDs ("" when absent) after checking that the top-level elements are in
    ascending tag order and that the last one ends where the bytes end.

    A sender whose transfer broke off must keep its copy, so a value, a header or an undefined length
    running past the end is refused, and so are bytes left over that do not make an element.
    """
    end = len(data)
    if end >= 6:
        # pydicom decides implicit or explicit VR by the first element (and warns): so must we, or a dataset
        # accepted here would read back differently.
        implicit = not (0x40 < data[4] < 0x5B and 0x40 < data[5] < 0x5B)
    explicit_header, implicit_header = _EXPLICIT[little], _IMPLICIT[little]
    values = ["", "", "", ""]
    unreadable: UnacceptableError | None = None
    previous = -1
    at = 0
    while at < end:
        if at + 8 > end:
            raise _broken(_TRUNCATED)  # a header cut short
        vr: bytes | None
        if implicit:
            group, element, length = implicit_header.unpack_from(data, at)
            vr, header = None, 8
        else:
            group, element, vr, length = explicit_header.unpack_from(data, at)
            vr, length, header = _explicit_layout(data, at, vr, length, little)
        tag = group << 16 | element
        if tag == _ITEM_END:  # pydicom's reader stops here: what follows would be lost
            raise _broken(_TRUNCATED if at + 8 == end else _NOT_TO_END)
        if tag <= previous:
            # PS3.5 §7.1 (each tag at most once, ascending); a reader that stops before Pixel Data would miss
            # what follows it.
            raise _broken(_OUT_OF_ORDER)
        if group in (0x0000, 0x0002):
            # Command or file meta elements in a dataset: pydicom moves them out of it when it reads the file.
            raise _broken(f"dataset cannot be parsed (a group {group:04X} element in the dataset)")
        previous = tag
        at += header
        if length == _UNDEFINED_LENGTH:
            # PS3.5 §6.2.2: an undefined-length UN is implicit VR little endian inside.
            un = vr == b"UN"
            at = _skip_items(data, at, implicit or un, little or un)
            if tag in _WANTED:
                values[_WANTED[tag]] = _NOT_A_UID
            continue
        if at + length > end:
            raise _broken(_TRUNCATED)
        if tag in _WANTED and length:
            try:
                values[_WANTED[tag]] = _value(data[at : at + length], vr)
            except UnacceptableError as exc:  # as pydicom: values are read once the layout is known good
                unreadable = unreadable or exc
        at += length
    if unreadable:
        raise unreadable
    return values


def _explicit_layout(data: memoryview, at: int, vr: bytes, length: int, little: bool) -> tuple[bytes | None, int, int]:
    """The VR, length and header size of the explicit VR element at `at` (its VR and 2-byte length read).

    As pydicom's reader: a VR that is not two capitals (``b"AA" <= vr <= b"ZZ"``) means an implicit VR
    element, tag and 4-byte length; an unknown VR of two capitals has a 2-byte length.
    """
    if vr in _LONG_VRS:
        if at + 12 > len(data):
            raise _broken(_TRUNCATED)
        return vr, _U32[little].unpack_from(data, at + 8)[0], 12
    if b"AA" <= vr <= b"ZZ":
        return vr, length, 8
    return None, _U32[little].unpack_from(data, at + 4)[0], 8


def _skip_items(data: memoryview, at: int, implicit: bool, little: bool) -> int:
    """Where the undefined-length value starting at `at` ends: after its Sequence Delimitation Item.

    Its items (of a sequence, or fragments of encapsulated pixel data) are skipped by their length, or,
    when undefined, element by element up to their Item Delimitation Item.
    """
    end = len(data)
    header = _IMPLICIT[little]
    while True:
        if at + 8 > end:
            raise _broken(_TRUNCATED)  # no delimiter before the end
        group, element, length = header.unpack_from(data, at)
        tag = group << 16 | element
        at += 8
        if tag == _SEQUENCE_END:
            return at
        if tag != _ITEM:
            raise _broken("dataset cannot be parsed (no item where a sequence item must be)")
        if length == _UNDEFINED_LENGTH:
            at = _skip_item_dataset(data, at, implicit, little)
        elif at + length > end:
            raise _broken(_TRUNCATED)
        else:
            at += length


def _skip_item_dataset(data: memoryview, at: int, implicit: bool, little: bool) -> int:
    """Where the undefined-length item whose dataset starts at `at` ends: after its Item Delimitation Item."""
    end = len(data)
    if not implicit and at + 6 <= end:
        # As pydicom: an item inside an explicit VR sequence may be implicit VR (some writers do; an
        # undefined-length UN must), seen from its first element's VR.
        implicit = not (0x40 < data[at + 4] < 0x5B and 0x40 < data[at + 5] < 0x5B)
    while True:
        if at + 8 > end:
            raise _broken(_TRUNCATED)
        vr: bytes | None
        if implicit:
            group, element, length = _IMPLICIT[little].unpack_from(data, at)
            vr, header = None, 8
        else:
            group, element, vr, length = _EXPLICIT[little].unpack_from(data, at)
            vr, length, header = _explicit_layout(data, at, vr, length, little)
        at += header
        if group << 16 | element == _ITEM_END:
            return at
        if length == _UNDEFINED_LENGTH:
            un = vr == b"UN"
            at = _skip_items(data, at, implicit or un, little or un)
        elif at + length > end:
            raise _broken(_TRUNCATED)
        else:
            at += length


def _value(value: memoryview, vr: bytes | None) -> str:
    """A UID's value as pydicom reads it under `vr` (a damaged dataset may give a UID another VR)."""
    if vr in _TEXT_VRS:
        return _text(value)
    if vr == b"AE":  # pydicom strips an AE of spaces only: a NUL pad stays
        return str(value, "latin-1").strip()
    size = _SIZES.get(vr or b"")
    if size is None:
        raise _broken("dataset cannot be parsed (NotImplementedError)")  # pydicom: an unknown VR
    if len(value) % size:
        raise _broken("dataset cannot be parsed (BytesLengthException)")
    return _NOT_A_UID  # pydicom reads numbers: never the UID of the request, nor a valid one


def _text(value: memoryview) -> str:
    """A UI value as pydicom reads it: Latin-1, trailing NULs and spaces dropped, then surrounding spaces."""
    return str(value, "latin-1").rstrip("\x00 ").strip()
