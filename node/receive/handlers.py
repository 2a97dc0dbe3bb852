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

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from node.dicom.status import Status
from node.metrics import metrics
from node.receive.identify import Identity, UnacceptableError, identify_dataset
from node.store import DiskGuard, Index, InvalidUIDError, Spool, StoreError
from node.store.journal import Journal, Record
from node.store.part10 import part10_header_for
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


@dataclass(frozen=True, slots=True)
class Caller:
    """The peer of one association: ``key`` is unique among the associations of this process."""

    key: str
    calling_ae: str
    called_ae: str
    address: str


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """A C-STORE-RQ with its dataset as received (never decoded here)."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    abstract_syntax: str
    transfer_syntax: str
    dataset: bytes


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

    @property
    def open_associations(self) -> int:
        with self._lock:
            return len(self._open)

    # -- associations ------------------------------------------------------------------------------

    def opened(self, caller: Caller) -> None:
        with self._lock:
            self._open[caller.key] = _Association(caller.calling_ae, caller.address)
        self.index.association_opened(caller.key)
        log.debug("association accepted from %s", caller.address)

    def closed(self, caller: Caller) -> None:
        with self._lock:
            counters = self._open.pop(caller.key, None)
        if counters is None:
            return  # rejected or never established: nothing was carried
        self.index.association_closed(caller.key)
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

    def _count(self, caller: Caller, outcome: str) -> None:
        with self._lock:
            counters = self._open.get(caller.key)
            if counters is None:
                return
            if outcome == "stored":
                counters.stored += 1
            elif outcome == "duplicate":
                counters.duplicates += 1
            else:
                counters.refused[outcome] = counters.refused.get(outcome, 0) + 1

    # -- services ----------------------------------------------------------------------------------

    def echo(self) -> int:
        return int(Status.SUCCESS)

    def store(self, caller: Caller, request: StoreRequest) -> tuple[int, str]:
        """Store one instance durably, then answer ``(status, error comment)``; see the module docstring."""
        try:
            status, outcome, comment = self._store(caller, request)
        except Exception:  # the boundary of the stage: a bug must not take the association down
            log.exception("C-STORE failed unexpectedly")
            status, outcome, comment = Status.PROCESSING_FAILURE, "processing failure", "internal error in the node"
        self._count(caller, outcome)
        responses = metrics().cstore_responses
        responses.labels(f"0x{int(status):04X}").inc()
        if outcome == "duplicate":
            metrics().duplicates.inc()
        if status is Status.SUCCESS:
            return int(status), ""
        log.warning("C-STORE refused with %s: %s", f"0x{status:04X} {status.name}", comment)
        return int(status), comment[:64]

    def _store(self, caller: Caller, request: StoreRequest) -> tuple[Status, str, str]:
        if not self.guard.ok():
            return Status.OUT_OF_RESOURCES, "disk full", "free disk space is below the node's floor"
        if request.sop_class_uid != request.abstract_syntax:
            # A request is served by its SOP Class, whatever context it came on (even Verification's):
            # the bytes would be stored under a transfer syntax negotiated for another abstract syntax.
            return (
                Status.SOP_CLASS_NOT_SUPPORTED,
                "sop class not supported",
                "the SOP Class is not the presentation context's abstract syntax",
            )
        syntax = request.transfer_syntax
        try:
            meta = part10_header_for(
                syntax,
                request.sop_class_uid,
                request.sop_instance_uid,
                PYNETDICOM_IMPLEMENTATION_UID,
                PYNETDICOM_IMPLEMENTATION_VERSION,
                None,
            )
            who = identify_dataset(request.dataset, syntax, request.sop_class_uid, request.sop_instance_uid)
            relative = self.spool.relative_path(who.study_instance_uid, who.series_instance_uid, who.sop_instance_uid)
        except UnacceptableError as exc:
            return exc.status, exc.status.name.lower().replace("_", " "), exc.reason
        except InvalidUIDError as exc:
            return Status.CANNOT_UNDERSTAND_INVALID_UID, "invalid UID", str(exc)
        except ValueError as exc:  # file meta cannot be encoded (e.g. a UID too long for its VR)
            return Status.CANNOT_UNDERSTAND, "cannot understand", f"file meta cannot be written: {exc}"
        data = meta + request.dataset
        key = caller.key
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
                "transfer_syntax_uid": syntax,
                "path": relative,
                "calling_ae": caller.calling_ae,
                "association_id": key,
                "called_ae": caller.called_ae,
                "source_address": caller.address,
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
            self.on_stored(who, relative, syntax)
        counters = metrics()
        counters.instances_received.inc()
        counters.received_bytes.inc(len(data))
        return Status.SUCCESS, "stored" if recorded.new else "duplicate", ""
