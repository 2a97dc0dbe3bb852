"""Read the few UIDs the spool needs from a received dataset's bytes, leaving pixel data untouched."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from node.dicom.status import Status

_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]


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
        With CANNOT_UNDERSTAND (unparseable), CANNOT_UNDERSTAND_MISSING_UID, CANNOT_UNDERSTAND_UID_MISMATCH
        or DATASET_DOES_NOT_MATCH_SOP_CLASS. The reason names attributes, never their values.
    """
    try:
        ds = dcmread(BytesIO(part10), stop_before_pixels=True, specific_tags=_TAGS)
        values = {tag: str(ds.get(tag, "") or "").strip() for tag in _TAGS}
    except (InvalidDicomError, ValueError, TypeError, KeyError, EOFError, OSError, NotImplementedError) as exc:
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
