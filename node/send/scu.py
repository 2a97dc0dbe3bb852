"""C-STORE and C-ECHO SCU: one association per batch of files, one outcome per file, no exceptions for the network.

:func:`store_files` sends Part-10 files to a :class:`~node.send.destination.Destination`:

- What is proposed and how a batch is split: :mod:`~node.send.contexts` (per SOP class, one presentation
  context per stored transfer syntax plus Explicit and Implicit VR Little Endian; at most 128 contexts
  per association, a batch needing more is sent over several, one after the other). Opening and closing
  associations (TCP_NODELAY, our maximum PDU, timeouts): :mod:`~node.send.association`. How answers are
  judged: :mod:`~node.send.outcomes`.
- A file whose stored transfer syntax was accepted is sent as it is stored: the bytes after the file
  meta, read in chunks, never decoded (pynetdicom's ``STORE_SEND_CHUNKED_DATASET``, set once, see
  :func:`~node.send.association.pynetdicom_options`).
- A file whose stored syntax the peer refused, when the peer accepted Explicit or Implicit VR Little
  Endian for its SOP class, is decoded in memory, one file at a time, by
  :func:`node.send.transcode.decode_to` (compressed pixel data decoded, deflate inflated; the stored
  file untouched) and sent as Explicit VR Little Endian, or Implicit when only that was accepted:
  pynetdicom encodes the dataset. A lossless source arrives pixel-identical. A file that cannot be
  decoded (no decoder for its syntax, no plugin installed, corrupt data) or a peer that accepted no
  uncompressed syntax for the class is a failure that names the syntax.
- A new Message ID for each C-STORE.
- Stalls: when a C-STORE gets no response within the DIMSE timeout (pynetdicom then aborts the
  association and returns an empty status) or the association is lost, a new association is opened and
  every file without an answer is sent again, at most ``stall_retries`` times per batch; what is still
  without an answer then is "not sent" (retryable). A resent instance may reach the peer twice (its
  response was lost): sends are idempotent per SOP Instance UID at the peer.
- ``stop``: checked before each C-STORE; the one in flight finishes, the rest are ``CANCELLED``.

Each file's outcome is a :class:`~node.send.outcomes.FileOutcome`, whose verdict the sender turns into a
job state (the table in :mod:`~node.send.outcomes`). :func:`echo` sends one C-ECHO. The names callers use
with these (:class:`ScuSettings`, :class:`FileOutcome`, :class:`Verdict`, :func:`classify`, ...) are
re-exported here.

Logs: one INFO line per association (destination, instances, outcome counts, how many were transcoded
(not sent as stored), seconds); UIDs only at DEBUG; never patient data.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.dicom.status import Status, describe
from node.send.association import (
    ScuSettings,
    close_association,
    make_ae,
    no_response,
    open_association,
    pynetdicom_options,
)
from node.send.contexts import MAX_CONTEXTS, UNCOMPRESSED_LE, Item, groups, inspect, presentation_contexts
from node.send.deidentify import DeidentifyError, deidentified
from node.send.destination import Destination
from node.send.outcomes import EchoResult, FileOutcome, Verdict, advice, classify
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

_MAX_MESSAGE_ID = 0xFFFF


def _no_context(destination: Destination, item: Item) -> str:
    return (
        f"{destination} accepted no presentation context for {item.sop_class.name}: the peer does not store this "
        "SOP class; enable it at the peer, then retry the job"
    )


def _payload(assoc: Any, item: Item, destination: Destination, tally: Counter[str]) -> Path | Dataset | FileOutcome:
    """What to give ``send_c_store`` for the file: its path (sent as stored), a dataset decoded for the
    peer (counted in ``tally["transcoded"]``), or the outcome when it cannot be sent on this association.

    A destination with ``deidentify`` always gets a dataset: read as stored (or decoded, as above), then
    de-identified in memory (:mod:`node.send.deidentify`); the file and the job's SOP Instance UID stay."""

    def outcome(verdict: Verdict, reason: str) -> FileOutcome:
        return FileOutcome(item.index, item.path, verdict, None, reason)

    accepted = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == item.sop_class and cx.as_scu]
    syntaxes = [UID(cx.transfer_syntax[0]) for cx in accepted]
    as_stored = item.transfer_syntax in syntaxes
    if as_stored and destination.deidentify is None:
        return item.path  # the fast path: the bytes after the file meta as stored, not decoded
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
            dataset = decode_to(item.path, targets[0])  # pynetdicom encodes it in the accepted syntax
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
    if target is not None:
        tally["transcoded"] += 1
    return dataset


def _store_one(
    assoc: Any, item: Item, msg_id: int, destination: Destination, settings: ScuSettings, tally: Counter[str]
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
        return None, no_response(settings, elapsed)
    status = int(response.Status)
    log.debug("C-STORE %s %s -> %s", item.sop_class, item.sop_instance, describe(status))
    verdict = classify(status)
    if verdict is Verdict.SENT:
        reason = "" if status == Status.SUCCESS else f"{destination} stored it with warning {describe(status)}"
        return outcome(verdict, reason, status), ""
    comment = str(response.get("ErrorComment", "") or "").strip()
    said = f" ('{comment}')" if comment else ""
    hint = advice(status, item.sop_class, settings.calling_ae)
    return outcome(verdict, f"{destination} answered {describe(status)}{said} for {item.path}: {hint}", status), ""


def _send_group(
    ae: Any,
    destination: Destination,
    settings: ScuSettings,
    group: list[Item],
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
        opening = open_association(ae, destination, contexts, settings)
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
            close_association(assoc)
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
    pynetdicom_options()
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
    if items:
        ae = make_ae(settings)
        try:
            for group in groups(items):
                _send_group(ae, destination, settings, group, report, stop)
        finally:
            ae.shutdown()
    missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if missing:  # a bug: every file must be reported exactly once
        raise AssertionError(f"no outcome for files at {missing}")
    return [outcome for outcome in outcomes if outcome is not None]


def echo(destination: Destination, settings: ScuSettings) -> EchoResult:
    """C-ECHO: open an association for Verification, send one C-ECHO, release. Never raises for the network."""
    ae = make_ae(settings)
    started = time.monotonic()
    try:
        opening = open_association(ae, destination, [build_context(Verification)], settings)
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
            close_association(assoc)
        if response is None or "Status" not in response:
            return EchoResult(False, seconds, no_response(settings, waited).replace("C-STORE", "C-ECHO"))
        status = int(response.Status)
        if status != Status.SUCCESS:
            return EchoResult(False, seconds, f"the peer answered {describe(status)}", status)
        return EchoResult(True, seconds, "", status)
    finally:
        ae.shutdown()
