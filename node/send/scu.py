"""C-STORE and C-ECHO SCU: one association per batch of files, one outcome per file, no exceptions for the network.

:func:`store_files` sends Part-10 files to a :class:`~node.send.destination.Destination`:

- It reads only each file's meta information (SOP Class and Instance UID, transfer syntax) and proposes,
  per SOP class, one presentation context per transfer syntax the files are stored in, plus one for
  Explicit and one for Implicit VR Little Endian. One syntax per context lets the peer accept each one
  it supports (an acceptor picks a single syntax per context), so a batch mixing compressed and
  uncompressed files needs no conversion. At most 128 contexts fit in one association; a batch needing
  more is sent over several, one after the other.
- A file whose stored transfer syntax was accepted is sent as it is stored: the bytes after the file
  meta, read in chunks, never decoded (pynetdicom's ``STORE_SEND_CHUNKED_DATASET``, set once, see
  :func:`_pynetdicom_options`).
- A file whose stored syntax the peer refused, when the peer accepted Explicit or Implicit VR Little
  Endian for its SOP class, is decoded in memory, one file at a time, by
  :func:`node.send.transcode.decode_to` (compressed pixel data decoded, deflate inflated; the stored
  file untouched) and sent as Explicit VR Little Endian, or Implicit when only that was accepted:
  pynetdicom encodes the dataset. A lossless source arrives pixel-identical. A file that cannot be
  decoded (no decoder for its syntax, no plugin installed, corrupt data) or a peer that accepted no
  uncompressed syntax for the class is a failure that names the syntax.
- TCP_NODELAY on the socket (pynetdicom never sets it; with Nagle each C-STORE waits for a delayed
  ACK), our maximum PDU from the settings (0 = unlimited), a new Message ID for each C-STORE.
- Stalls: when a C-STORE gets no response within the DIMSE timeout (pynetdicom then aborts the
  association and returns an empty status) or the association is lost, a new association is opened and
  every file without an answer is sent again, at most ``stall_retries`` times per batch; what is still
  without an answer then is "not sent" (retryable). A resent instance may reach the peer twice (its
  response was lost): sends are idempotent per SOP Instance UID at the peer.
- ``stop``: checked before each C-STORE; the one in flight finishes, the rest are ``CANCELLED``.

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

Logs: one INFO line per association (destination, instances, outcome counts, how many were transcoded
(not sent as stored), seconds); UIDs only at DEBUG; never patient data.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.config import NodeConfig
from node.dicom.status import Status, describe, is_success
from node.send.destination import Destination
from node.send.transcode import TranscodeError, can_decode, decode_to

__all__ = [
    "MAX_CONTEXTS",
    "EchoResult",
    "FileOutcome",
    "ScuSettings",
    "Verdict",
    "classify",
    "echo",
    "presentation_contexts",
    "store_files",
]

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128  # presentation contexts in one A-ASSOCIATE-RQ (odd ids 1..255)
_UNCOMPRESSED_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_MAX_MESSAGE_ID = 0xFFFF
# Status ranges of C-STORE failures (PS3.4 B.2.3), named after their first code.
_OUT_OF_RESOURCES = range(Status.OUT_OF_RESOURCES, Status.OUT_OF_RESOURCES + 0x100)
_DATASET_MISMATCH = range(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, Status.DATASET_DOES_NOT_MATCH_SOP_CLASS + 0x100)
_CANNOT_UNDERSTAND = range(Status.CANNOT_UNDERSTAND, Status.CANNOT_UNDERSTAND + 0x1000)
_PEER_REFUSES = (Status.SOP_CLASS_NOT_SUPPORTED, Status.NOT_AUTHORIZED)
# An attempt that ended this close to its timeout is taken as the timeout (clocks and scheduling jitter).
_TIMEOUT_SLACK = 0.9


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
        Position of the file in the ``files`` given to :func:`store_files`.
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
class ScuSettings:
    """How associations are opened.

    Attributes
    ----------
    calling_ae
        Our AE title (Calling AE Title).
    acse_timeout
        Seconds for the TCP connection and for the association negotiation and release, each.
    dimse_timeout
        Seconds to wait for a C-STORE or C-ECHO response before the association counts as stalled.
    network_timeout
        Seconds of silence on an open association before pynetdicom aborts it.
    max_pdu
        Largest PDU we receive, bytes; 0 = unlimited (pynetdicom's default, 16382, is slow).
    stall_retries
        New associations a batch may open after a stall or a lost association.
    """

    calling_ae: str
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    max_pdu: int = 0
    stall_retries: int = 2

    def __post_init__(self) -> None:
        if min(self.acse_timeout, self.dimse_timeout, self.network_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if self.stall_retries < 0 or self.max_pdu < 0:
            raise ValueError("stall_retries and max_pdu must be 0 or more")

    @classmethod
    def from_config(cls, config: NodeConfig, calling_ae: str | None = None, stall_retries: int = 2) -> ScuSettings:
        """Settings from ``[limits]``; the calling AE is ``node.ae_title`` unless given."""
        limits = config.limits
        return cls(
            calling_ae=calling_ae or config.node.ae_title,
            acse_timeout=limits.acse_timeout_s,
            dimse_timeout=limits.dimse_timeout_s,
            network_timeout=limits.network_timeout_s,
            max_pdu=limits.max_pdu,
            stall_retries=stall_retries,
        )


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


def _advice(status: int, sop_class: UID, calling_ae: str) -> str:
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


# -- files and presentation contexts -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    """A file to send, with what its meta information says."""

    index: int
    path: Path
    sop_class: UID
    sop_instance: UID
    transfer_syntax: UID


def _inspect(index: int, path: Path) -> _Item | FileOutcome:
    """The file's UIDs and transfer syntax from its meta information, or why it cannot be sent."""

    def park(why: str) -> FileOutcome:
        return FileOutcome(index, path, Verdict.PARK, None, why)

    try:
        meta = read_file_meta_info(path)
    except FileNotFoundError:
        return park(f"file {path} is missing (deleted or moved after the send was queued); restore it or drop the job")
    except InvalidDicomError:
        return park(f"file {path} is not a DICOM Part-10 file (no 'DICM' header): it cannot be sent")
    except OSError as exc:
        return FileOutcome(index, path, Verdict.RETRY, None, f"file {path} cannot be read: {exc.strerror or exc}")
    except Exception as exc:  # pydicom raises assorted errors on a damaged file meta
        return park(f"file {path}: its DICOM file meta cannot be read ({type(exc).__name__}: {exc})")
    values = {k: str(meta.get(k, "") or "").strip() for k in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID")}
    syntax = str(meta.get("TransferSyntaxUID", "") or "").strip()
    missing = [keyword for keyword, value in {**values, "TransferSyntaxUID": syntax}.items() if not value]
    if missing:
        return park(f"file {path}: its file meta lacks {', '.join(missing)}; it cannot be sent as it is")
    sop_class, sop_instance = values["MediaStorageSOPClassUID"], values["MediaStorageSOPInstanceUID"]
    return _Item(index, path, UID(sop_class), UID(sop_instance), UID(syntax))


def _syntaxes(pairs: Iterable[tuple[str, str]]) -> dict[UID, list[UID]]:
    """Per SOP class, the transfer syntaxes to propose (each in its own context), in order of appearance."""
    wanted: dict[UID, list[UID]] = {}
    for sop_class, syntax in pairs:
        proposed = wanted.setdefault(UID(sop_class), [])
        if UID(syntax) not in _UNCOMPRESSED_LE and UID(syntax) not in proposed:
            proposed.append(UID(syntax))
    for proposed in wanted.values():
        proposed.extend(_UNCOMPRESSED_LE)
    return wanted


def presentation_contexts(pairs: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """The contexts proposed for files of these (SOP Class UID, transfer syntax UID) pairs.

    One context per SOP class and syntax: each stored syntax that is not uncompressed little endian,
    then Explicit VR Little Endian, then Implicit VR Little Endian.
    """
    return [
        build_context(sop_class, [syntax]) for sop_class, syntaxes in _syntaxes(pairs).items() for syntax in syntaxes
    ]


def _groups(items: Sequence[_Item]) -> list[list[_Item]]:
    """``items`` in order, split so that each group's contexts fit in one association."""
    groups: list[list[_Item]] = []
    current: list[_Item] = []
    proposed: dict[UID, set[UID]] = {}  # per SOP class, the stored syntaxes needing their own context

    def extra(item: _Item) -> int:  # contexts ``item`` adds to the current group
        own = 0 if item.transfer_syntax in _UNCOMPRESSED_LE else 1
        if item.sop_class not in proposed:
            return len(_UNCOMPRESSED_LE) + own
        return own if item.transfer_syntax not in proposed[item.sop_class] else 0

    contexts = 0
    for item in items:
        if current and contexts + extra(item) > MAX_CONTEXTS:
            groups.append(current)
            current, contexts = [], 0
            proposed.clear()
        contexts += extra(item)
        syntaxes = proposed.setdefault(item.sop_class, set())
        if item.transfer_syntax not in _UNCOMPRESSED_LE:
            syntaxes.add(item.transfer_syntax)
        current.append(item)
    if current:
        groups.append(current)
    return groups


# -- associations --------------------------------------------------------------------------------------


@functools.cache
def _pynetdicom_options() -> None:
    """Set pynetdicom's process-wide options this module needs, once.

    ``STORE_SEND_CHUNKED_DATASET``: ``send_c_store(path)`` sends the file's bytes after the file meta as
    they are, in PDU-sized chunks, instead of decoding and re-encoding the dataset. It only changes what
    ``send_c_store`` does when given a path; ``send_c_store(dataset)`` and the SCP (which never sends a
    C-STORE, and receives by ``STORE_RECV_CHUNKED_DATASET``) are unaffected.
    """
    _config.STORE_SEND_CHUNKED_DATASET = True


def _on_connect(event: Any, connected: threading.Event) -> None:
    """EVT_CONN_OPEN: TCP_NODELAY on the association's socket (pynetdicom leaves Nagle on)."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    connected.set()


def _make_ae(settings: ScuSettings) -> Any:
    ae = AE(ae_title=settings.calling_ae)
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.connection_timeout = settings.acse_timeout
    return ae


@dataclass(frozen=True, slots=True)
class _Opened:
    """An association attempt: the association when established, else why not in words."""

    assoc: Any = None
    why: str = ""
    nothing_accepted: bool = False  # the peer accepted the association but none of its contexts


def _open(ae: Any, destination: Destination, contexts: list[PresentationContext], settings: ScuSettings) -> _Opened:
    """Open an association; pynetdicom aborts one whose contexts were all refused (``nothing_accepted``)."""
    connected = threading.Event()
    started = time.monotonic()
    try:
        assoc = ae.associate(
            destination.host,
            destination.port,
            contexts,
            ae_title=destination.ae_title,
            max_pdu=settings.max_pdu,
            evt_handlers=[(evt.EVT_CONN_OPEN, _on_connect, [connected])],
        )
    except OSError as exc:  # socket.gaierror: the host name does not resolve
        return _Opened(why=f"cannot resolve host '{destination.host}' ({exc})")
    if assoc.is_established:
        return _Opened(assoc)
    elapsed = time.monotonic() - started
    where = f"{destination.host}:{destination.port}"
    answer = assoc.acceptor.primitive
    if assoc.is_rejected and answer is not None:
        how = f"{answer.result_str.lower()}, by the {answer.source_str.lower()}"
        return _Opened(why=f"association rejected by {destination.ae_title}: {answer.reason_str} ({how})")
    if answer is not None and answer.result == 0 and not assoc.accepted_contexts and assoc.rejected_contexts:
        return _Opened(why=f"{destination} accepted none of the presentation contexts", nothing_accepted=True)
    if not connected.is_set():
        if elapsed >= _TIMEOUT_SLACK * settings.acse_timeout:
            return _Opened(why=f"no answer from {where} within {settings.acse_timeout:g} s (connect timeout)")
        return _Opened(why=f"cannot connect to {where} (connection refused or host unreachable)")
    if elapsed >= _TIMEOUT_SLACK * settings.acse_timeout:
        return _Opened(why=f"no association answer from {where} within {settings.acse_timeout:g} s (ACSE timeout)")
    return _Opened(why=f"the association request to {where} was aborted or the connection closed")


def _close(assoc: Any) -> None:
    """Release an open association (abort it if the release fails); never raises."""
    try:
        if assoc.is_established:
            assoc.release()
        if assoc.is_established:
            assoc.abort()
    except Exception:  # closing is best effort: the association is done either way
        log.debug("closing the association failed", exc_info=True)


def _lost(settings: ScuSettings, elapsed: float) -> str:
    if elapsed >= _TIMEOUT_SLACK * settings.dimse_timeout:
        return f"no C-STORE response within {settings.dimse_timeout:g} s (DIMSE timeout)"
    return "the association was aborted or the connection lost while waiting for a C-STORE response"


def _no_context(destination: Destination, item: _Item) -> str:
    return (
        f"{destination} accepted no presentation context for {item.sop_class.name}: the peer does not store this "
        "SOP class; enable it at the peer, then retry the job"
    )


def _payload(assoc: Any, item: _Item, destination: Destination, tally: Counter[str]) -> Path | Dataset | FileOutcome:
    """What to give ``send_c_store`` for the file: its path (sent as stored), a dataset decoded for the
    peer (counted in ``tally["transcoded"]``), or the outcome when it cannot be sent on this association."""

    def outcome(verdict: Verdict, reason: str) -> FileOutcome:
        return FileOutcome(item.index, item.path, verdict, None, reason)

    accepted = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == item.sop_class and cx.as_scu]
    syntaxes = [UID(cx.transfer_syntax[0]) for cx in accepted]
    if item.transfer_syntax in syntaxes:
        return item.path  # the fast path: the bytes after the file meta as stored, not decoded
    if not syntaxes:
        return outcome(Verdict.PARK, _no_context(destination, item))
    targets = [syntax for syntax in _UNCOMPRESSED_LE if syntax in syntaxes]  # Explicit VR preferred
    if not targets or not can_decode(item.transfer_syntax):
        accepted_names = ", ".join(s.name for s in syntaxes)
        cannot = (
            f"we cannot decode {item.transfer_syntax.name}"
            if targets
            else "we decode only to Explicit or Implicit VR Little Endian, which it did not accept"
        )
        why = (
            f"{destination} does not accept {item.transfer_syntax.name} for {item.sop_class.name} (it accepted "
            f"{accepted_names}), and {cannot}: enable the syntax at the peer, then retry the job"
        )
        return outcome(Verdict.PARK, why)
    try:
        dataset = decode_to(item.path, targets[0])  # pynetdicom encodes it in the accepted syntax
    except FileNotFoundError:
        return outcome(Verdict.PARK, f"file {item.path} is missing (deleted or moved during the send)")
    except OSError as exc:
        return outcome(Verdict.RETRY, f"file {item.path} could not be read for decoding: {exc.strerror or exc}")
    except TranscodeError as exc:
        why = (
            f"{exc}; {destination} does not accept {item.transfer_syntax.name} for {item.sop_class.name}: enable it "
            "at the peer (or install the missing decoder, or repair the file), then retry the job"
        )
        return outcome(Verdict.PARK, why)
    tally["transcoded"] += 1
    return dataset


def _store_one(
    assoc: Any, item: _Item, msg_id: int, destination: Destination, settings: ScuSettings, tally: Counter[str]
) -> tuple[FileOutcome | None, str]:
    """Send one file: ``(outcome, "")``, ``(None, why)`` when the association was lost before its answer
    (the file stays to be resent), or ``(outcome, why)`` when the file is settled but the association
    cannot be used further."""

    def outcome(verdict: Verdict, reason: str, status: int | None = None) -> FileOutcome:
        return FileOutcome(item.index, item.path, verdict, status, reason)

    payload = _payload(assoc, item, destination, tally)
    if isinstance(payload, FileOutcome):
        return payload, ""
    started = time.monotonic()
    try:
        response = assoc.send_c_store(payload, msg_id=msg_id)
    except RuntimeError:  # pynetdicom: "must be established": the peer closed it since the last C-STORE
        return None, "the association was closed by the peer"
    except (ValueError, AttributeError) as exc:  # raised before anything is sent: the association is intact
        return outcome(Verdict.PARK, f"file {item.path} cannot be sent: {exc}"), ""
    except FileNotFoundError:
        why = f"file {item.path} is missing (deleted or moved during the send)"
        return outcome(Verdict.PARK, why), "a file vanished while being sent"
    except OSError as exc:
        why = f"file {item.path} could not be read while sending: {exc.strerror or exc}"
        return outcome(Verdict.RETRY, why), "a file could not be read while being sent"
    elapsed = time.monotonic() - started
    if response is None or "Status" not in response:
        return None, _lost(settings, elapsed)
    status = int(response.Status)
    log.debug("C-STORE %s %s -> %s", item.sop_class, item.sop_instance, describe(status))
    verdict = classify(status)
    if verdict is Verdict.SENT:
        reason = "" if status == Status.SUCCESS else f"{destination} stored it with warning {describe(status)}"
        return outcome(verdict, reason, status), ""
    comment = str(response.get("ErrorComment", "") or "").strip()
    said = f" ('{comment}')" if comment else ""
    advice = _advice(status, item.sop_class, settings.calling_ae)
    return outcome(verdict, f"{destination} answered {describe(status)}{said} for {item.path}: {advice}", status), ""


# -- batches --------------------------------------------------------------------------------------------


def _send_group(
    ae: Any,
    destination: Destination,
    settings: ScuSettings,
    group: list[_Item],
    report: Callable[[FileOutcome], None],
    stop: threading.Event | None,
) -> None:
    """Send one group over as few associations as stalls allow; report every file once."""
    pending = list(group)
    contexts = presentation_contexts((item.sop_class, item.transfer_syntax) for item in group)
    opened = 0

    def settle_all(verdict: Verdict, reason: str) -> None:
        for item in pending:
            report(FileOutcome(item.index, item.path, verdict, None, reason))
        pending.clear()

    while pending:
        if stop is not None and stop.is_set():
            settle_all(Verdict.CANCELLED, "not sent: the sender is stopping")
            return
        started = time.monotonic()
        opening = _open(ae, destination, contexts, settings)
        opened += 1
        assoc = opening.assoc
        if assoc is None:
            log.info(
                "C-STORE to %s: no association after %.2f s (%s); %d instances not sent",
                destination,
                time.monotonic() - started,
                opening.why,
                len(pending),
            )
            if opening.nothing_accepted:
                for item in pending:
                    report(FileOutcome(item.index, item.path, Verdict.PARK, None, _no_context(destination, item)))
                pending.clear()
            settle_all(Verdict.RETRY, f"not sent to {destination}: {opening.why}")
            return
        counts: Counter[Verdict] = Counter()
        tally: Counter[str] = Counter()
        tried = len(pending)
        lost = ""
        msg_id = 0
        try:
            while pending and not (stop is not None and stop.is_set()):
                msg_id = msg_id % _MAX_MESSAGE_ID + 1
                result, lost = _store_one(assoc, pending[0], msg_id, destination, settings, tally)
                if result is not None:
                    pending.pop(0)
                    counts[result.verdict] += 1
                    report(result)
                if lost:
                    break
        finally:
            _close(assoc)
        failed = counts[Verdict.RETRY] + counts[Verdict.PARK]
        log.info(
            "C-STORE to %s: %d instances, %d sent, %d failed, %d not sent, %d transcoded in %.2f s%s",
            destination,
            tried,
            counts[Verdict.SENT],
            failed,
            len(pending),
            tally["transcoded"],
            time.monotonic() - started,
            f" ({lost})" if lost else "",
        )
        if pending and lost and not (stop is not None and stop.is_set()):
            if opened > settings.stall_retries:
                settle_all(Verdict.RETRY, f"not sent to {destination}: {lost}, {opened} associations in a row")
                return
            log.warning(
                "C-STORE to %s: %s; resending %d instances without an answer on a new association",
                destination,
                lost,
                len(pending),
            )


def store_files(
    destination: Destination,
    files: Sequence[Path],
    settings: ScuSettings,
    *,
    on_result: Callable[[FileOutcome], None] | None = None,
    stop: threading.Event | None = None,
) -> list[FileOutcome]:
    """Send Part-10 files to ``destination`` over one association (more only after stalls).

    Parameters
    ----------
    destination
        The peer.
    files
        Part-10 files; sent in this order.
    settings
        Calling AE, timeouts, PDU size, stall retries.
    on_result
        Called once per file as soon as its outcome is known, on the calling thread (the association
        waits for it: keep it short). Files that cannot be read are reported first.
    stop
        When set, no further C-STORE starts; the remaining files are ``CANCELLED``.

    Returns
    -------
    list[FileOutcome]
        One outcome per file, in the order of ``files``. Network problems never raise.
    """
    _pynetdicom_options()
    outcomes: list[FileOutcome | None] = [None] * len(files)

    def report(outcome: FileOutcome) -> None:
        outcomes[outcome.index] = outcome
        if on_result is not None:
            on_result(outcome)

    items: list[_Item] = []
    for index, path in enumerate(files):
        inspected = _inspect(index, Path(path))
        if isinstance(inspected, FileOutcome):
            report(inspected)
        else:
            items.append(inspected)
    if items:
        ae = _make_ae(settings)
        try:
            for group in _groups(items):
                _send_group(ae, destination, settings, group, report, stop)
        finally:
            ae.shutdown()
    missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if missing:  # a bug: every file must be reported exactly once
        raise AssertionError(f"no outcome for files at {missing}")
    return [outcome for outcome in outcomes if outcome is not None]


def echo(destination: Destination, settings: ScuSettings) -> EchoResult:
    """C-ECHO: open an association for Verification, send one C-ECHO, release. Never raises for the network."""
    ae = _make_ae(settings)
    started = time.monotonic()
    try:
        opening = _open(ae, destination, [build_context(Verification)], settings)
        assoc = opening.assoc
        if assoc is None:
            why = "the peer does not accept Verification (C-ECHO)" if opening.nothing_accepted else opening.why
            return EchoResult(False, time.monotonic() - started, why)
        try:
            sent = time.monotonic()
            try:
                response = assoc.send_c_echo(msg_id=1)
            except RuntimeError:  # the peer closed the association right after accepting it
                response = None
            waited = time.monotonic() - sent
            seconds = time.monotonic() - started
        finally:
            _close(assoc)
        if response is None or "Status" not in response:
            return EchoResult(False, seconds, _lost(settings, waited).replace("C-STORE", "C-ECHO"))
        status = int(response.Status)
        if status != Status.SUCCESS:
            return EchoResult(False, seconds, f"the peer answered {describe(status)}", status)
        return EchoResult(True, seconds, "", status)
    finally:
        ae.shutdown()
