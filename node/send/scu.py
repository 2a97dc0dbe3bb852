"""C-STORE and C-ECHO SCU: batches of files over an association, one outcome per file, no exceptions for the network.

:func:`store_files` sends Part-10 files to a :class:`~node.send.destination.Destination`:

- What is proposed and how a batch is split: :mod:`~node.send.contexts` (per SOP class, one presentation
  context per stored transfer syntax plus Explicit and Implicit VR Little Endian; at most 128 contexts
  per association, a batch needing more is sent over several, one after the other). Opening and closing
  associations (TCP_NODELAY, our maximum PDU, timeouts, TLS) on a plain socket, without pynetdicom's
  polling threads: :mod:`~node.send.requestor`. How answers are judged: :mod:`~node.send.outcomes`.
- A file whose stored transfer syntax was accepted is sent as it is stored: the file is read once and
  the bytes after its file meta are written from that buffer, never decoded (:func:`stored_dataset`).
- A file whose stored syntax the peer refused, when the peer accepted Explicit or Implicit VR Little
  Endian for its SOP class, is decoded in memory, one file at a time, by
  :func:`node.send.transcode.decode_to` (compressed pixel data decoded, deflate inflated; the stored
  file untouched) and sent as Explicit VR Little Endian, or Implicit when only that was accepted
  (encoded by ``pynetdicom.dsutils.encode``, as pynetdicom's ``send_c_store`` did). A lossless source
  arrives pixel-identical. A file that cannot be decoded (no decoder for its syntax, no plugin
  installed, corrupt data) or a peer that accepted no
  uncompressed syntax for the class is a failure that names the syntax.
- A new Message ID for each C-STORE.
- Stalls: when a C-STORE gets no response within the DIMSE timeout (the association is then aborted)
  or the association is lost, a new association is opened and
  every file without an answer is sent again, at most ``stall_retries`` times per batch; what is still
  without an answer then is "not sent" (retryable). A resent instance may reach the peer twice (its
  response was lost): sends are idempotent per SOP Instance UID at the peer.
- ``stop``: checked before each C-STORE; the one in flight finishes, the rest are ``CANCELLED``.

Each file's outcome is a :class:`~node.send.outcomes.FileOutcome`, whose verdict the sender turns into a
job state (the table in :mod:`~node.send.outcomes`). :func:`echo` sends one C-ECHO. The names callers use
with these (:class:`ScuSettings`, :class:`FileOutcome`, :class:`Verdict`, :func:`classify`, ...) are
re-exported here.

An association may carry several batches (calls) when the caller passes a
:class:`~node.send.keepalive.HeldAssociation` (the sender threads do); Message IDs go on across them.

Logs: one INFO line per association, at its release (destination, instances, outcome counts, how many
were transcoded (not sent as stored), seconds, batches); UIDs only at DEBUG; never patient data.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from pydicom.uid import UID
from pynetdicom import build_context
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.dicom.status import Status, describe
from node.send.association import ScuSettings
from node.send.contexts import MAX_CONTEXTS, UNCOMPRESSED_LE, Item, groups, inspect, presentation_contexts
from node.send.deidentify import DeidentifyError, deidentified
from node.send.destination import Destination
from node.send.keepalive import HeldAssociation
from node.send.outcomes import EchoResult, FileOutcome, Verdict, advice, classify
from node.send.requestor import Requestor, request_association
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
    "stored_dataset",
]

log = logging.getLogger(__name__)

_MAX_MESSAGE_ID = 0xFFFF
# File meta elements whose VR has a 4-byte length after 2 reserved bytes (PS3.5 §7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


class _Payload(NamedTuple):
    context_id: int
    sop_class: str
    sop_instance: str
    data: bytes | memoryview


def stored_dataset(path: Path) -> memoryview:
    """The dataset of a Part-10 file as stored: the bytes after the preamble, ``DICM`` and the file meta.

    The file is read once and the dataset is a view into that buffer (no second copy). The file meta
    (group 0002, always explicit VR little endian) is walked element by element rather than trusting
    (0002,0000), which some writers get wrong.

    Raises
    ------
    OSError
        The file cannot be read; ValueError: it is not Part-10 or its file meta runs past its end.
    """
    data = path.read_bytes()
    if data[128:132] != b"DICM":
        raise ValueError("no 'DICM' after the preamble")
    offset, end = 132, len(data)
    while offset + 8 <= end and data[offset : offset + 2] == b"\x02\x00":
        if data[offset + 4 : offset + 6] in _LONG_VRS:
            offset += 12 + int.from_bytes(data[offset + 8 : offset + 12], "little")
        else:
            offset += 8 + int.from_bytes(data[offset + 6 : offset + 8], "little")
    if offset > end:
        raise ValueError("its file meta runs past the end of the file")
    return memoryview(data)[offset:]


def _no_context(destination: Destination, item: Item) -> str:
    return (
        f"{destination} accepted no presentation context for {item.sop_class.name}: the peer does not store this "
        "SOP class; enable it at the peer, then retry the job"
    )


def _payload(requestor: Requestor, item: Item, destination: Destination, tally: Counter[str]) -> _Payload | FileOutcome:
    """What to send for the file: its stored dataset bytes, a dataset decoded for the peer and encoded
    (counted in ``tally["transcoded"]``), or the outcome when it cannot be sent on this association.

    A destination with ``deidentify`` always gets a dataset: read as stored (or decoded, as above), then
    de-identified in memory (:mod:`node.send.deidentify`); the file and the job's SOP Instance UID stay."""

    def outcome(verdict: Verdict, reason: str) -> FileOutcome:
        return FileOutcome(item.index, item.path, verdict, None, reason)

    syntaxes = [cx.transfer_syntax for cx in requestor.accepted if cx.abstract_syntax == item.sop_class]
    as_stored = item.transfer_syntax in syntaxes
    if as_stored and destination.deidentify is None:  # the fast path: the bytes as stored, not decoded
        context_id = requestor.context_for(item.sop_class, item.transfer_syntax)
        assert context_id is not None
        try:
            return _Payload(context_id, item.sop_class, item.sop_instance, stored_dataset(item.path))
        except FileNotFoundError:
            return outcome(Verdict.PARK, f"file {item.path} is missing (deleted or moved during the send)")
        except OSError as exc:
            return outcome(Verdict.RETRY, f"file {item.path} could not be read while sending: {exc.strerror or exc}")
        except ValueError as exc:
            return outcome(Verdict.PARK, f"file {item.path} cannot be sent: {exc}")
    if not syntaxes:
        return outcome(Verdict.PARK, _no_context(destination, item))
    targets = [syntax for syntax in UNCOMPRESSED_LE if syntax in syntaxes]  # Explicit VR preferred
    if not as_stored and (not targets or not can_decode(item.transfer_syntax)):
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
    target = None if as_stored else targets[0]
    try:
        if destination.deidentify is None:
            dataset = decode_to(item.path, targets[0])
        else:
            dataset = deidentified(item.path, destination.deidentify, target)
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
    except DeidentifyError as exc:
        return outcome(Verdict.PARK, f"{exc}; {destination} is sent de-identified instances only")
    syntax = UID(item.transfer_syntax if target is None else target)
    context_id = requestor.context_for(item.sop_class, syntax)
    try:
        sop_class, sop_instance = str(dataset.SOPClassUID), str(dataset.SOPInstanceUID)
        encoded = encode(dataset, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    except (AttributeError, ValueError) as exc:  # no SOP UIDs, or a private syntax pydicom cannot encode
        return outcome(Verdict.PARK, f"file {item.path} cannot be sent: {exc}")
    if encoded is None or context_id is None:
        return outcome(Verdict.PARK, f"file {item.path} cannot be sent: its dataset cannot be encoded in {syntax.name}")
    if target is not None:
        tally["transcoded"] += 1
    return _Payload(context_id, sop_class, sop_instance, encoded)


def _store_one(
    requestor: Requestor, item: Item, msg_id: int, destination: Destination, settings: ScuSettings, tally: Counter[str]
) -> tuple[FileOutcome | None, str]:
    """Send one file: ``(outcome, "")``, or ``(None, why)`` when the association was lost (or stalled)
    before its answer (the file stays to be resent)."""

    def outcome(verdict: Verdict, reason: str, status: int | None = None) -> FileOutcome:
        return FileOutcome(item.index, item.path, verdict, status, reason)

    payload = _payload(requestor, item, destination, tally)
    if isinstance(payload, FileOutcome):
        return payload, ""
    response = requestor.store(payload.context_id, msg_id, payload.sop_class, payload.sop_instance, payload.data)
    status = response.status
    if status is None:
        return None, response.why
    log.debug("C-STORE %s %s -> %s", item.sop_class, item.sop_instance, describe(status))
    verdict = classify(status)
    if verdict is Verdict.SENT:
        reason = "" if status == Status.SUCCESS else f"{destination} stored it with warning {describe(status)}"
        return outcome(verdict, reason, status), ""
    said = f" ('{response.comment}')" if response.comment else ""
    hint = advice(status, item.sop_class, settings.calling_ae)
    return outcome(verdict, f"{destination} answered {describe(status)}{said} for {item.path}: {hint}", status), ""


def _send_group(
    held: HeldAssociation,
    group: list[Item],
    report: Callable[[FileOutcome], None],
    stop: threading.Event | None,
) -> None:
    """Send one group over the held association (or new ones, as :mod:`~node.send.keepalive` decides and
    as stalls require); report every file once."""
    destination, settings = held.destination, held.settings
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
        opening, reused = held.obtain(contexts)
        requestor = opening.requestor
        if requestor is None:
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
        msg_id = held.last_message_id
        try:
            while pending and not (stop is not None and stop.is_set()):
                msg_id = msg_id % _MAX_MESSAGE_ID + 1
                result, lost = _store_one(requestor, pending[0], msg_id, destination, settings, tally)
                if result is not None:
                    pending.pop(0)
                    counts[result.verdict] += 1
                    report(result)
                if lost:
                    break
        except BaseException:  # a bug or a failing callback: the association's state is unknown, end it
            requestor.abort()
            held.record(Counter(tried=tried), time.monotonic() - started, "an error in the sender")
            raise
        held.last_message_id = msg_id
        # A held association the peer dropped while it was idle, found out before any answer, is not a
        # stall of this batch: it does not use up one of its new associations.
        opened += 0 if reused and lost and len(pending) == tried else 1
        tally.update(
            tried=tried,
            sent=counts[Verdict.SENT],
            failed=counts[Verdict.RETRY] + counts[Verdict.PARK],
        )
        tally["not sent"] += len(pending)
        held.record(tally, time.monotonic() - started, lost)
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
    held: HeldAssociation | None = None,
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
    held
        An association to ``destination`` kept across calls (:mod:`~node.send.keepalive`): used when it
        can carry these files, and left open for the next call; the caller releases it. Without it, the
        association is opened here and released before returning.

    Returns
    -------
    list[FileOutcome]
        One outcome per file, in the order of ``files``. Network problems never raise.
    """
    outcomes: list[FileOutcome | None] = [None] * len(files)

    def report(outcome: FileOutcome) -> None:
        outcomes[outcome.index] = outcome
        if on_result is not None:
            on_result(outcome)

    items: list[Item] = []
    for index, path in enumerate(files):
        inspected = inspect(index, Path(path))
        if isinstance(inspected, FileOutcome):
            report(inspected)
        else:
            items.append(inspected)
    if held is not None and held.destination != destination:
        raise ValueError(f"the held association is to {held.destination}, not to {destination}")
    own = held is None
    association = HeldAssociation(destination, settings) if held is None else held
    try:
        for group in groups(items):
            _send_group(association, group, report, stop)
    finally:
        if own:
            association.release()
    missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if missing:  # a bug: every file must be reported exactly once
        raise AssertionError(f"no outcome for files at {missing}")
    return [outcome for outcome in outcomes if outcome is not None]


def echo(destination: Destination, settings: ScuSettings) -> EchoResult:
    """C-ECHO: open an association for Verification, send one C-ECHO, release. Never raises for the network."""
    started = time.monotonic()
    opening = request_association(destination, [build_context(Verification)], settings)
    requestor = opening.requestor
    if requestor is None:
        why = "the peer does not accept Verification (C-ECHO)" if opening.nothing_accepted else opening.why
        return EchoResult(False, time.monotonic() - started, why)
    try:
        response = requestor.echo(1)
        seconds = time.monotonic() - started
    finally:
        requestor.release()
    if response.status is None:
        return EchoResult(False, seconds, response.why)
    if response.status != Status.SUCCESS:
        return EchoResult(False, seconds, f"the peer answered {describe(response.status)}", response.status)
    return EchoResult(True, seconds, "", response.status)
