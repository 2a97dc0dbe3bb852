"""Read the few UIDs the spool needs from a received dataset's bytes, leaving pixel data untouched."""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from node.dicom.status import Status

_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]
# Values longer than this are skipped, not read (pixel data): the parse checks lengths, not contents.
_DEFER_BYTES = 1024
_UNDEFINED_LENGTH = 0xFFFFFFFF
# Preamble, "DICM" and the File Meta Information Group Length element, before the rest of the file meta.
_BEFORE_META = 128 + 4 + 12
# (FFFE,E0DD) Sequence Delimitation Item with its zero length: how an undefined length ends.
_DELIMITER_LE, _DELIMITER_BE = bytes.fromhex("feffdde000000000"), bytes.fromhex("fffee0dd00000000")


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


def identify(part10: bytes, requested_sop_class: str, requested_sop_instance: str) -> Identity:
    """The dataset's UIDs, checked against the C-STORE request.

    Parameters
    ----------
    part10
        The whole Part-10 encoding (preamble, file meta, dataset as received).
    requested_sop_class, requested_sop_instance
        Affected SOP Class and Instance UIDs of the C-STORE request.

    Raises
    ------
    UnacceptableError
        With CANNOT_UNDERSTAND (unparseable, truncated, or its elements out of tag order),
        CANNOT_UNDERSTAND_MISSING_UID, CANNOT_UNDERSTAND_UID_MISMATCH or DATASET_DOES_NOT_MATCH_SOP_CLASS.
        The reason names attributes, never their values.
    """
    try:
        ds = _parse(part10)
        values = {tag: str(ds.get(tag, "") or "").strip() for tag in _TAGS}
    except UnacceptableError:
        raise
    except Exception as exc:  # pydicom raises any type on damaged bytes (struct.error, zlib.error, ...)
        raise UnacceptableError(Status.CANNOT_UNDERSTAND, f"dataset cannot be parsed ({type(exc).__name__})") from exc
    missing = [tag for tag in _TAGS if not values[tag]]
    if missing:
        raise UnacceptableError(Status.CANNOT_UNDERSTAND_MISSING_UID, f"dataset has no {', '.join(missing)}")
    if values["SOPInstanceUID"] != requested_sop_instance.strip():
        raise UnacceptableError(
            Status.CANNOT_UNDERSTAND_UID_MISMATCH,
            "the dataset's SOP Instance UID differs from the C-STORE request's Affected SOP Instance UID",
        )
    if values["SOPClassUID"] != requested_sop_class.strip():
        raise UnacceptableError(
            Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
            "the dataset's SOP Class UID differs from the C-STORE request's Affected SOP Class UID",
        )
    return Identity(*(values[tag] for tag in _TAGS))


def _parse(part10: bytes) -> Dataset:
    """Every top-level element's header, values longer than ``_DEFER_BYTES`` skipped (pixel data is not read).

    pydicom reads a truncated dataset without a word: a short last value, a skip past the end of the bytes,
    a last header cut short, an undefined length without its delimiter all end the parse quietly. A sender
    whose transfer broke off must keep its copy, so the last element must end where the received bytes end.
    """
    stream = BytesIO(part10)
    ds: Dataset = dcmread(stream, defer_size=_DEFER_BYTES)
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        # pydicom inflated the dataset into a buffer of its own: inflate it again to see where the parse ends.
        start = _BEFORE_META + int(ds.file_meta.FileMetaInformationGroupLength)
        stream = BytesIO(zlib.decompress(part10[start:], -zlib.MAX_WBITS))
        ds = read_dataset(stream, is_implicit_VR=False, is_little_endian=True, defer_size=_DEFER_BYTES)
    data = stream.getbuffer()
    # By tag, still raw (iterating a Dataset would convert every value); deferred values stay unread.
    elements = [ds.get_item(tag, keep_deferred=True) for tag in sorted(ds.keys())]
    if any(later <= earlier for earlier, later in itertools.pairwise(map(_value_tell, elements))):
        # PS3.5 §7.1; a reader that stops before Pixel Data would miss what follows it.
        raise UnacceptableError(Status.CANNOT_UNDERSTAND, "dataset elements are not in ascending tag order")
    if stream.tell() < len(data):
        raise UnacceptableError(Status.CANNOT_UNDERSTAND, "dataset cannot be parsed to its end (truncated?)")
    if _end_of_last_element(elements, data) != len(data):
        raise UnacceptableError(Status.CANNOT_UNDERSTAND, "dataset is truncated: its last element is incomplete")
    return ds


def _end_of_last_element(elements: Sequence[object], data: memoryview) -> int:
    """Where the last of the (tag-ordered) top-level elements ends; for one of undefined length, the end of the
    bytes if they end with a Sequence Delimitation Item, else -1."""
    if not elements:
        return 0
    last = elements[-1]
    if isinstance(last, RawDataElement) and last.length != _UNDEFINED_LENGTH:
        return int(last.value_tell + last.length)
    tail = bytes(data[-8:])
    return len(data) if tail in (_DELIMITER_LE, _DELIMITER_BE) else -1


def _value_tell(element: object) -> int:
    tell = element.value_tell if isinstance(element, RawDataElement) else getattr(element, "file_tell", None)
    return -1 if tell is None else int(tell)
