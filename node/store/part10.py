"""The Part-10 header the spool writes before a dataset as received (PS3.10 §7.1): preamble, "DICM" and the
File Meta Information group, built by hand for what a receiver writes, by pydicom for anything else."""

from __future__ import annotations

import copy
import struct

from pydicom import __version_info__
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

_UID_MAX = 64


def part10_header(file_meta: FileMetaDataset) -> bytes:
    """Encode the 128-byte preamble, ``DICM`` and the File Meta Information group.

    This is what goes in front of the dataset bytes a C-STORE carried, so that the spool file is a valid
    Part-10 file without decoding and re-encoding the dataset. The group (always Explicit VR Little Endian)
    is encoded by hand (:func:`part10_header_for`) when it holds only the elements a receiver writes:
    pydicom's ``write_file_meta_info`` on a copy of the dataset cost a fifth of a C-STORE's handling. The
    bytes are those ``write_file_meta_info`` writes (it fills in the group length and adds the Type 1
    elements that are missing, as pynetdicom's ``Event.encoded_dataset()`` does); any other element, or a
    value the hand encoder does not take, goes through ``write_file_meta_info`` itself.

    Parameters
    ----------
    file_meta : pydicom.dataset.FileMetaDataset
        Group 0002 elements, e.g. pynetdicom's ``event.file_meta``. It must name the Media Storage SOP
        Class and Instance UIDs and the Transfer Syntax UID. It is copied, never modified.

    Raises
    ------
    ValueError
        A required element is missing, or `file_meta` holds an element outside group 0002.
    """
    fast = _hand_header(file_meta)
    if fast is not None:
        return fast
    meta = copy.deepcopy(file_meta)  # write_file_meta_info adds and updates elements in place
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    try:
        write_file_meta_info(buffer, meta, enforce_standard=True)
    except AttributeError as error:  # pydicom 3 reports missing Type 1 elements this way
        raise ValueError(str(error)) from error
    return b"\x00" * 128 + b"DICM" + buffer.getvalue()


def part10_header_for(
    transfer_syntax_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    implementation_class_uid: str,
    implementation_version_name: str | None,
    source_ae_title: str | None,
) -> bytes:
    """The bytes of :func:`part10_header` for a file meta made of these values, built without pydicom.

    Parameters
    ----------
    transfer_syntax_uid, sop_class_uid, sop_instance_uid
        (0002,0010) and the Media Storage SOP Class and Instance UIDs (0002,0002), (0002,0003).
    implementation_class_uid
        (0002,0012), this node's.
    implementation_version_name, source_ae_title
        (0002,0013) and (0002,0016); ``None``: the element is left out.

    Raises
    ------
    ValueError
        A UID that is empty, longer than 64 characters or not ASCII; a name or AE title longer than 16
        characters or outside Latin-1. The message names the attribute, not the value.
    """
    uids = {
        "Transfer Syntax UID": transfer_syntax_uid,
        "Media Storage SOP Class UID": sop_class_uid,
        "Media Storage SOP Instance UID": sop_instance_uid,
        "Implementation Class UID": implementation_class_uid,
    }
    for name, uid in uids.items():
        if not uid or not _fits_uid(uid):
            raise ValueError(
                f"{name} cannot be written to the file meta (empty, not ASCII or over {_UID_MAX} characters)"
            )
    for name, text in (
        ("Implementation Version Name", implementation_version_name),
        ("Source AE Title", source_ae_title),
    ):
        if text is not None and not _fits_text(text):
            raise ValueError(f"{name} cannot be written to the file meta (not Latin-1 or over 16 characters)")
    return _meta_bytes(
        transfer_syntax_uid, sop_class_uid, sop_instance_uid, implementation_class_uid,
        implementation_version_name, source_ae_title,
    )  # fmt: skip


# What write_file_meta_info(enforce_standard=True) adds when they are missing (pydicom's own identity).
_PYDICOM_CLASS_UID = PYDICOM_IMPLEMENTATION_UID
_PYDICOM_VERSION_NAME = f"PYDICOM {'.'.join(__version_info__)}"
# The File Meta Information group: the elements the hand encoder writes (the group length is recomputed).
_HAND_TAGS = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013, 0x00020016})
_VERSION = b"\x00\x01"


def _hand_header(file_meta: FileMetaDataset) -> bytes | None:
    """:func:`part10_header` by hand, or ``None`` where only ``write_file_meta_info`` gives its bytes (another
    element, a missing Type 1 element to report, a value of another type or beyond what the VR holds)."""
    if not _HAND_TAGS.issuperset(file_meta.keys()):
        return None
    values = {tag: file_meta[tag].value for tag in _HAND_TAGS if tag in file_meta}
    if values.get(0x00020001) not in (None, b"", _VERSION):
        return None
    ts, sop_class, sop = values.get(0x00020010), values.get(0x00020002), values.get(0x00020003)
    implementation = values.get(0x00020012) or _PYDICOM_CLASS_UID  # an empty one is replaced, as pydicom does
    name, title = values.get(0x00020013, _PYDICOM_VERSION_NAME), values.get(0x00020016)
    # An element present without a value is written empty, as pydicom does; an absent title is left out.
    name = "" if name is None else name
    title = "" if title is None and 0x00020016 in values else title
    if not all(isinstance(uid, str) and uid and _fits_uid(uid) for uid in (ts, sop_class, sop, implementation)):
        return None
    if not all(text is None or (isinstance(text, str) and _fits_text(text)) for text in (name, title)):
        return None
    return _meta_bytes(str(ts), str(sop_class), str(sop), str(implementation), name, title)


def _fits_uid(uid: str) -> bool:
    return len(uid) <= _UID_MAX and uid.isascii()


def _fits_text(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return len(text) <= 16


def _meta_bytes(ts: str, sop_class: str, sop: str, implementation: str, name: str | None, title: str | None) -> bytes:
    """Preamble, ``DICM`` and the group, explicit VR little endian, elements in tag order (PS3.10 §7.1)."""
    body = [_element(0x0001, b"OB", _VERSION), _uid(0x0002, sop_class), _uid(0x0003, sop), _uid(0x0010, ts)]
    body.append(_uid(0x0012, implementation))
    if name is not None:
        body.append(_text(0x0013, b"SH", name))
    if title is not None:
        body.append(_text(0x0016, b"AE", title))
    group = b"".join(body)
    return b"\x00" * 128 + b"DICM" + _element(0x0000, b"UL", struct.pack("<L", len(group))) + group


def _uid(element: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    return _element(element, b"UI", value + b"\x00" * (len(value) % 2))  # UI pads with NUL (PS3.5 §6.2)


def _text(element: int, vr: bytes, text: str) -> bytes:
    value = text.encode("latin-1")
    return _element(element, vr, value + b" " * (len(value) % 2))  # text pads with a space


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":  # two reserved bytes and a 4-byte length (PS3.5 §7.1.2)
        return struct.pack("<HH2s2xL", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def part10_bytes(file_meta: FileMetaDataset, dataset_bytes: bytes) -> bytes:
    """Return a whole Part-10 file: :func:`part10_header` followed by the dataset bytes as received.

    `dataset_bytes` is the dataset encoded in the transfer syntax that `file_meta` names (for a handler:
    ``event.request.DataSet.getvalue()``, or ``event.encoded_dataset(include_meta=False)``); deflated
    datasets stay deflated.
    """
    return part10_header(file_meta) + dataset_bytes
