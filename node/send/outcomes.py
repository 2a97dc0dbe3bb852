"""What became of a send: the verdict per file, the C-ECHO result, and how a peer's answer is judged.

How a peer's answer is classified (:func:`classify`), which the sender turns into job states:

=====================================  ==========  ====================================================
what happened                          verdict     why
=====================================  ==========  ====================================================
success 0x0000, warning 0x0001/0xBxxx  SENT        the peer has the instance
0xA7xx out of resources                RETRY       the peer may have room later
0x0110 processing failure, unknown     RETRY       may be transient; the job's attempts bound it
0xA9xx dataset does not match class    PARK        the same bytes will fail again: a person must look
0xCxxx cannot understand               PARK        idem
0x0122 SOP class not supported         PARK        the peer must be configured first
0x0124 not authorized                  PARK        idem
no accepted context / transfer syntax  PARK        idem (the association offered none for the file)
cannot decode for the peer             PARK        no decoder or plugin for the syntax, corrupt data
file missing, not Part-10, unreadable  PARK        the file must be restored or the job dropped
no connection, rejection, abort,       RETRY       the network or the peer may come back
timeout, stall retries used up
stop requested before the C-STORE      CANCELLED   give the job back (not an attempt)
=====================================  ==========  ====================================================

The status rows are :func:`classify`'s; the others are decided where they happen (reading the file meta:
:mod:`~node.send.contexts`; the association and each C-STORE: :mod:`~node.send.scu`). :func:`advice` words
what a person should do about a failure status.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydicom.uid import UID

from node.dicom.status import Status, is_success

__all__ = ["EchoResult", "FileOutcome", "Verdict", "advice", "classify"]

# Status ranges of C-STORE failures (PS3.4 B.2.3), named after their first code.
_OUT_OF_RESOURCES = range(Status.OUT_OF_RESOURCES, Status.OUT_OF_RESOURCES + 0x100)
_DATASET_MISMATCH = range(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, Status.DATASET_DOES_NOT_MATCH_SOP_CLASS + 0x100)
_CANNOT_UNDERSTAND = range(Status.CANNOT_UNDERSTAND, Status.CANNOT_UNDERSTAND + 0x1000)
_PEER_REFUSES = (Status.SOP_CLASS_NOT_SUPPORTED, Status.NOT_AUTHORIZED)


class Verdict(StrEnum):
    """What should happen to a file's send after this batch."""

    SENT = "sent"  # the peer answered success or a warning: it has the instance
    RETRY = "retry"  # failed or not sent; a later try may succeed
    PARK = "park"  # failed in a way another try cannot fix: a person must act
    CANCELLED = "cancelled"  # not tried: stop was requested first


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """What became of one file of a batch.

    Attributes
    ----------
    index
        Position of the file in the ``files`` given to :func:`~node.send.scu.store_files`.
    path
        The file.
    verdict
        See :class:`Verdict`.
    status
        The DIMSE status the peer answered, or ``None`` when the file was not sent (or got no answer).
    reason
        For people: what failed and what to do, naming the destination and the status; empty on a plain
        success. May name the file, never patient data.
    """

    index: int
    path: Path
    verdict: Verdict
    status: int | None = None
    reason: str = ""

    @property
    def sent(self) -> bool:
        """The peer has the instance (success or warning status)."""
        return self.verdict is Verdict.SENT


@dataclass(frozen=True, slots=True)
class EchoResult:
    """The answer to a C-ECHO: ``ok``, the seconds from connecting to the response, and why not."""

    ok: bool
    seconds: float
    reason: str = ""
    status: int | None = None


def classify(status: int) -> Verdict:
    """The verdict on a C-STORE response status (the table in the module docstring)."""
    if is_success(status):
        return Verdict.SENT
    if status in _OUT_OF_RESOURCES:
        return Verdict.RETRY
    if status in _DATASET_MISMATCH or status in _CANNOT_UNDERSTAND or status in _PEER_REFUSES:
        return Verdict.PARK
    return Verdict.RETRY


def advice(status: int, sop_class: UID, calling_ae: str) -> str:
    """What to do about a failure status, for the person reading the job's error."""
    if status in _OUT_OF_RESOURCES:
        return "the peer is out of resources (disk full?); another try later may succeed"
    if status in _DATASET_MISMATCH:
        return "the peer says the dataset does not match its SOP class; check the file (dciodvfy), then retry the job"
    if status in _CANNOT_UNDERSTAND:
        return "the peer cannot parse the dataset; check the file (dciodvfy) and the peer's log, then retry the job"
    if status == Status.SOP_CLASS_NOT_SUPPORTED:
        return f"the peer does not store {sop_class.name}; enable it at the peer, then retry the job"
    if status == Status.NOT_AUTHORIZED:
        return f"the peer does not let '{calling_ae}' store there; allow our AE title at the peer, then retry the job"
    return "an unexpected failure at the peer (see its log); another try may succeed"
