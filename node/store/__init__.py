"""The store stage: durable spool files, the SQLite index, the free-space guard.

What a C-STORE handler does with it, on the association's thread (DESIGN §3, §4)::

    if not guard.ok():                                   -> 0xA700
    relative = spool.relative_path(study, series, sop)   InvalidUIDError -> 0xC000 range
    if keep_first and spool.exists(study, series, sop):  a duplicate: nothing written, journal.barrier()
    else: journal.append(Record(row, bytes))             JournalError -> 0xA700 (one group-committed sync)
          spool.write(..., durable=False)                SpoolWriteError -> 0xA700
                                                         AlreadyStoredError -> keep-first lost a race: go on
    index.record(..., durable=False)                     IndexDatabaseError -> 0xA700
    -> 0x0000

The journal (:mod:`node.store.journal`) is what makes an answered instance durable; its checkpoint syncs
the spool and index and drops covered segments, and ``replay`` at start-up writes back whatever a crash
left only in the journal. Without a journal (``StoreHandler(journal=None)``) the file is fsynced before its
row is committed, each with its own sync. ``spool.cleanup_temp()`` runs once at start-up, before
associations are accepted. Retention (:mod:`node.store.retention`) deletes finished studies (after a
journal checkpoint); ``index.association_carried`` waits while the study it is given is being deleted.

Errors (all derive from ``node.errors.NodeError`` through ``StoreError``)::

    StoreError
    ├── InvalidUIDError      a UID cannot be a file name (0xC000 range: retrying will not help)
    ├── SpoolWriteError      the OS refused the write: disk full, I/O error (0xA700)
    ├── AlreadyStoredError   write(overwrite=False) found the file already there; it was kept
    ├── IndexDatabaseError   the index cannot be opened, read or committed (0xA700 for a store)
    └── StudyBeingDeletedError  retention is deleting the study an instance belongs to, still after the wait
"""

from __future__ import annotations

from node.store.disk import DiskGuard, free_mb
from node.store.index import Index, IndexDatabaseError, StudyBeingDeletedError
from node.store.part10 import part10_bytes, part10_header
from node.store.rows import Instance, Recorded, StudySummary
from node.store.spool import (
    AlreadyStoredError,
    InvalidUIDError,
    Spool,
    SpoolWriteError,
    StoreError,
    validate_uid,
)

__all__ = [
    "AlreadyStoredError",
    "DiskGuard",
    "Index",
    "IndexDatabaseError",
    "Instance",
    "InvalidUIDError",
    "Recorded",
    "Spool",
    "SpoolWriteError",
    "StoreError",
    "StudyBeingDeletedError",
    "StudySummary",
    "free_mb",
    "part10_bytes",
    "part10_header",
    "validate_uid",
]
