"""C-ECHO and C-STORE handlers and the association bookkeeping of the completion timer.

A C-STORE handler runs on the association's thread while the sender waits for its answer (DESIGN §3).
It does only this, and answers SUCCESS only after both durable steps (DESIGN §4.1)::

    free disk below the floor?                       -> OUT_OF_RESOURCES (0xA700)
    SOP Class not the context's abstract syntax?     -> SOP_CLASS_NOT_SUPPORTED (0x0122)
    UIDs from the dataset bytes (no pixel decoding)  -> CANNOT_UNDERSTAND* / DATASET_DOES_NOT_MATCH_SOP_CLASS
    UIDs usable as file names?                       -> CANNOT_UNDERSTAND_INVALID_UID
    study being deleted by retention for too long    -> OUT_OF_RESOURCES (nothing written)
    (keep-first and already stored: a duplicate, nothing written; it waits for the journal to cover its original)
    journal record (row + bytes), group-committed    -> OUT_OF_RESOURCES if the write or sync fails
    write the bytes as received: temp, rename        -> OUT_OF_RESOURCES if the OS refuses
    commit the index row                             -> OUT_OF_RESOURCES if the commit fails
    late instance of a complete study and late_instances = "reanalyse": reopen the study
    -> SUCCESS

With a journal (:mod:`node.store.journal`, what ``serve`` uses) the instance is first appended to the journal,
whose one sync (shared with the other associations) makes it durable, then the file and the row are written
without syncing; without one (tests of the store alone) the file and the row are each synced.
    anything unexpected                              -> PROCESSING_FAILURE (logged with its traceback)

Failure responses carry an Error Comment (at most 64 characters) naming the problem, never a value.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import events
from pynetdicom.dimse_primitives import C_STORE

from node import logs
from node.dicom.status import Status
from node.metrics import metrics
from node.receive.identify import Identity, UnacceptableError, identify
from node.store import DiskGuard, Index, InvalidUIDError, Spool, StoreError, part10_bytes
from node.store.journal import Journal, Record
from node.store.spool import AlreadyStoredError

log = logging.getLogger(__name__)


@dataclass
class _Association:
    """Counters of one association, for its closing log line."""

    calling_ae: str
    address: str
    opened: float = field(default_factory=time.monotonic)
    stored: int = 0
    duplicates: int = 0
    refused: dict[str, int] = field(default_factory=dict)


def association_id(event: events.Event) -> str:
    """A process-unique name for the event's association (the object lives as long as the association)."""
    return f"{id(event.assoc):x}"


def _failure(status: Status, comment: str) -> Dataset:
    response = Dataset()
    response.Status = int(status)
    response.ErrorComment = comment[:64]
    return response


class StoreHandler:
    """The SCP's event handlers, bound to one spool, index and disk guard.

    Parameters
    ----------
    spool, index, guard
        Where instances go and the free-space floor.
    keep_first
        Duplicate policy: ``True`` keeps the stored file (answer success, count it), ``False`` replaces it.
    reanalyse_late
        A new instance of a study already complete reopens the study (``late_instances = "reanalyse"``).
    on_stored
        Called after an instance is durable and indexed, on the association's thread; it must be quick
        (instance-level routing enqueues a job). Its errors fail the store with PROCESSING_FAILURE.
    """

    def __init__(
        self,
        spool: Spool,
        index: Index,
        guard: DiskGuard,
        *,
        keep_first: bool = True,
        reanalyse_late: bool = True,
        on_stored: Callable[[Identity, str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
        journal: Journal | None = None,
    ) -> None:
        self.journal = journal
        self.spool = spool
        self.index = index
        self.guard = guard
        self.keep_first = keep_first
        self.reanalyse_late = reanalyse_late
        self.on_stored = on_stored
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, _Association] = {}

    def bindings(self) -> list[tuple[events.EventType, Callable[..., object]]]:
        """``(event, handler)`` pairs for ``AE.start_server(evt_handlers=...)``."""
        return [
            (events.EVT_C_ECHO, self.echo),
            (events.EVT_C_STORE, self.store),
            (events.EVT_ACCEPTED, self.opened),
            (events.EVT_CONN_CLOSE, self.closed),
        ]

    @property
    def open_associations(self) -> int:
        with self._lock:
            return len(self._open)

    # -- associations ------------------------------------------------------------------------------

    def opened(self, event: events.Event) -> None:
        calling = event.assoc.requestor.ae_title.strip()
        address = str(event.assoc.requestor.address)
        logs.peer_ae.set(calling)  # this thread is the association's: its log lines name the peer
        with self._lock:
            self._open[association_id(event)] = _Association(calling, address)
        self.index.association_opened(association_id(event))
        log.debug("association accepted from %s", address)

    def closed(self, event: events.Event) -> None:
        key = association_id(event)
        with self._lock:
            counters = self._open.pop(key, None)
        if counters is None:
            return  # rejected or never established: nothing was carried
        self.index.association_closed(key)
        refused = ", ".join(f"{n} {name}" for name, n in sorted(counters.refused.items())) or "none refused"
        log.info(
            "association from %s (%s) ended: %d stored, %d duplicates, %s, %.1f s",
            counters.calling_ae,
            counters.address,
            counters.stored,
            counters.duplicates,
            refused,
            time.monotonic() - counters.opened,
        )

    def _count(self, event: events.Event, outcome: str) -> None:
        with self._lock:
            counters = self._open.get(association_id(event))
            if counters is None:
                return
            if outcome == "stored":
                counters.stored += 1
            elif outcome == "duplicate":
                counters.duplicates += 1
            else:
                counters.refused[outcome] = counters.refused.get(outcome, 0) + 1

    # -- services ----------------------------------------------------------------------------------

    def echo(self, event: events.Event) -> int:
        return int(Status.SUCCESS)

    def store(self, event: events.Event) -> int | Dataset:
        """Store one instance durably, then answer; see the module docstring for every status."""
        try:
            status, outcome, comment = self._store(event)
        except Exception:  # the boundary of the stage: a bug must not take the association down
            log.exception("C-STORE failed unexpectedly")
            status, outcome, comment = Status.PROCESSING_FAILURE, "processing failure", "internal error in the node"
        self._count(event, outcome)
        responses = metrics().cstore_responses
        responses.labels(f"0x{int(status):04X}").inc()
        if outcome == "duplicate":
            metrics().duplicates.inc()
        if status is Status.SUCCESS:
            return int(status)
        log.warning("C-STORE refused with %s: %s", f"0x{status:04X} {status.name}", comment)
        return _failure(status, comment)

    def _store(self, event: events.Event) -> tuple[Status, str, str]:
        if not self.guard.ok():
            return Status.OUT_OF_RESOURCES, "disk full", "free disk space is below the node's floor"
        request = event.request
        assert isinstance(request, C_STORE) and request.DataSet is not None  # pynetdicom's contract for EVT_C_STORE
        if str(request.AffectedSOPClassUID).strip() != str(event.context.abstract_syntax).strip():
            # pynetdicom serves a request by its SOP Class, whatever context it came on (even Verification's):
            # the bytes would be stored under a transfer syntax negotiated for another abstract syntax.
            return (
                Status.SOP_CLASS_NOT_SUPPORTED,
                "sop class not supported",
                "the SOP Class is not the presentation context's abstract syntax",
            )
        raw = request.DataSet.getvalue()  # the dataset bytes exactly as received: never decoded here
        meta = event.file_meta
        try:
            data = part10_bytes(meta, raw)
            who = identify(data, str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID))
            relative = self.spool.relative_path(who.study_instance_uid, who.series_instance_uid, who.sop_instance_uid)
        except UnacceptableError as exc:
            return exc.status, exc.status.name.lower().replace("_", " "), exc.reason
        except InvalidUIDError as exc:
            return Status.CANNOT_UNDERSTAND_INVALID_UID, "invalid UID", str(exc)
        except ValueError as exc:  # file meta cannot be encoded (e.g. a UID too long for its VR)
            return Status.CANNOT_UNDERSTAND, "cannot understand", f"file meta cannot be written: {exc}"
        key = association_id(event)
        try:
            # Before the file is written: it also waits while retention is deleting this study
            # (StudyBeingDeletedError, a StoreError, if that takes too long: the sender retries later).
            self.index.association_carried(key, who.study_instance_uid)
            stored_already = self.keep_first and self.spool.exists(
                who.study_instance_uid, who.series_instance_uid, who.sop_instance_uid
            )
            journal = self.journal
            fields = {
                "sop_instance_uid": who.sop_instance_uid,
                "study_instance_uid": who.study_instance_uid,
                "series_instance_uid": who.series_instance_uid,
                "sop_class_uid": who.sop_class_uid,
                "transfer_syntax_uid": str(meta.TransferSyntaxUID),
                "path": relative,
                "calling_ae": event.assoc.requestor.ae_title.strip(),
                "association_id": key,
                "called_ae": event.assoc.acceptor.ae_title.strip(),
                "source_address": str(event.assoc.requestor.address),
            }
            now = self.index.now()
            if journal is not None and not stored_already:
                # First the journal: once it returns the instance is durable, and when it fails nothing has
                # been written yet (a file left by a failed append could later pass as a stored duplicate).
                row = {**fields, "size": len(data), "received_at": now, "replace": not self.keep_first}
                journal.append(Record(row, data))
            written = False
            if not stored_already:
                # AlreadyStoredError: keep-first lost a race against another association; the first file stays.
                with contextlib.suppress(AlreadyStoredError):
                    self.spool.write(
                        who.study_instance_uid,
                        who.series_instance_uid,
                        who.sop_instance_uid,
                        data,
                        overwrite=not self.keep_first,
                        durable=journal is None,
                    )
                    written = True
            recorded = self.index.record(
                **fields, size=len(data), replace=not self.keep_first, durable=journal is None, received_at=now
            )
            if journal is not None and not written:
                # A duplicate under keep-first: its original may still be waiting for its sync.
                journal.barrier()
            if recorded.late and recorded.new and self.reanalyse_late:
                self.index.reopen_study(who.study_instance_uid, self._clock())
        except StoreError as exc:
            return Status.OUT_OF_RESOURCES, "out of resources", str(exc)
        if self.on_stored is not None:
            self.on_stored(who, relative, str(meta.TransferSyntaxUID))
        counters = metrics()
        counters.instances_received.inc()
        counters.received_bytes.inc(len(data))
        return Status.SUCCESS, "stored" if recorded.new else "duplicate", ""
