"""The receive journal: one durable sync per instance, shared by every association (group commit).

Without it a C-STORE costs three syncs in a row before its answer (the spool file, its directory, the
index's WAL). With it the handler writes the spool file and the index row without syncing them (page
cache), then appends one record (the row's fields and the file's bytes) to the journal and waits until
the journal is synced. Whichever handler finds no sync in flight syncs for everybody whose record is
written by then; the others wait for that sync (group commit). So an answered instance is durable in the
journal, and its file and row are at least in the page cache.

A checkpoint (:meth:`Journal.checkpoint`, every ``interval`` seconds on a thread, and before retention
deletes anything) makes the spool and the index durable with one ``syncfs`` of their filesystem, then
deletes the journal segments that only hold records from before it. At start-up, before any association,
:func:`replay` writes every record still in the journal into the spool and the index again (power loss
may have lost the unsynced copies; a killed process has not, and replaying is idempotent).

Record layout (little endian), appended to preallocated segment files ``<seq>.jnl``::

    magic b"PNJ1" | header length u32 | payload length u64 | crc32 of header + payload u32 | header | payload

The header is JSON (the index row and the relative path); the payload is the Part-10 file. A segment's
unwritten tail reads as zeros, and a record cut short by a crash fails its CRC: replay stops there. Such
a record was never acknowledged: the sync that would have covered it had not returned.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from node.store.spool import SpoolWriteError, StoreError

if TYPE_CHECKING:
    from node.store.index import Index
    from node.store.spool import Spool

log = logging.getLogger(__name__)

JOURNAL_DIR = "journal"  # under node.data_dir
MAGIC = b"PNJ1"
_HEAD = struct.Struct("<4sIQI")
SEGMENT_BYTES = 16 << 20
SUFFIX = ".jnl"


class JournalError(StoreError):
    """The journal could not be written or synced; the instance must be answered with 0xA700."""


@dataclass(frozen=True)
class Record:
    """One journalled instance: its index row fields and its Part-10 bytes."""

    row: dict[str, object]
    data: bytes

    def encode(self) -> bytes:
        header = json.dumps(self.row, separators=(",", ":")).encode()
        crc = zlib.crc32(self.data, zlib.crc32(header))
        return _HEAD.pack(MAGIC, len(header), len(self.data), crc) + header + self.data


def read_segment(path: Path) -> Iterator[Record]:
    """The valid records of one segment, in order; stops at the first zero, short or damaged record."""
    with path.open("rb") as fh:
        while True:
            head = fh.read(_HEAD.size)
            if len(head) < _HEAD.size:
                return
            magic, header_len, data_len, crc = _HEAD.unpack(head)
            if magic != MAGIC:
                return
            header = fh.read(header_len)
            data = fh.read(data_len)
            if len(header) < header_len or len(data) < data_len or zlib.crc32(data, zlib.crc32(header)) != crc:
                log.info("journal %s: a record cut short by a crash ends it (it was never acknowledged)", path.name)
                return
            try:
                row = json.loads(header)
            except ValueError:
                return
            yield Record(row, data)


def segments(directory: Path) -> list[Path]:
    """The segment files of a journal folder, oldest first."""
    return sorted(directory.glob(f"*{SUFFIX}"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def syncfs(path: Path) -> None:
    """Make every write to the filesystem holding ``path`` durable (Linux ``syncfs``; ``sync`` elsewhere)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        function = getattr(_libc, "syncfs", None)
        if function is None:
            os.sync()
            return
        if function(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        os.close(fd)


class Journal:
    """Append-only segments with group commit; see the module docstring.

    Parameters
    ----------
    directory
        The journal folder (created); segments left in it must have been replayed before.
    segment_bytes
        Size each segment is preallocated to: appends into allocated space sync no file size change.
    """

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._synced = threading.Condition(self._lock)
        self._syncing = False
        self._appended = 0  # bytes appended since start (a position across segments)
        self._durable = 0  # bytes known synced
        # Records appended and syncs done: records / syncs is how many answers one sync served.
        self.records = 0
        self.syncs = 0
        existing = segments(self.directory)
        self._seq = int(existing[-1].stem) + 1 if existing else 1
        self._closed: list[Path] = []  # segments appended to before the current one, not yet checkpointed
        self._warned = False
        self._limit = segment_bytes
        self._fd = -1
        self._offset = 0
        self._path = self.directory / "0.jnl"
        self._open_segment()

    def _size(self) -> int:
        """The next segment's size: ``segment_bytes``, or a sixteenth of the free space when that is less
        (a small data disk must not lose a large part of itself to the journal), at least 1 MiB."""
        try:
            stat = os.statvfs(self.directory)
            free = stat.f_bavail * stat.f_frsize
        except OSError:
            return self._segment_bytes
        return int(max(min(self._segment_bytes, free // 16), min(self._segment_bytes, 1 << 20)))

    def _open_segment(self) -> None:
        self._path = self.directory / f"{self._seq}{SUFFIX}"
        self._seq += 1
        self._limit = self._size()
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(fd, 0, self._limit)
                os.fsync(fd)  # the allocation, once per segment, not per record
            except OSError as exc:
                # A nearly full disk (or a filesystem without fallocate): a plain file still works, each
                # sync then also writes the file's new size. The disk guard refuses stores soon anyway.
                if not self._warned:
                    log.warning("journal segments are not preallocated (%s): syncs cost more", exc.strerror)
                    self._warned = True
                os.ftruncate(fd, 0)
            fd_dir = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd_dir)
            finally:
                os.close(fd_dir)
        except OSError as exc:
            raise JournalError(f"cannot create a journal segment in {self.directory}: {exc.strerror}") from exc
        self._fd, self._offset = fd, 0

    def _roll(self) -> None:
        """Close the current segment (synced first, so earlier positions stay durable) and open the next."""
        if self._offset:
            os.fdatasync(self._fd)
            self._durable = self._appended
            self._synced.notify_all()
        os.close(self._fd)
        self._closed.append(self._path)
        self._open_segment()

    def append(self, record: Record) -> None:
        """Append ``record`` and return once it is durable (synced by this thread or another one).

        Raises
        ------
        JournalError
            The write or the sync failed (disk full, I/O error): the instance is not acknowledged.
        """
        data = record.encode()
        with self._lock:
            try:
                if self._offset + len(data) > self._limit and self._offset:
                    self._roll()
                written = os.pwrite(self._fd, data, self._offset)
                if written != len(data):
                    raise OSError(28, "short write to the journal")
            except OSError as exc:
                raise JournalError(f"cannot write the journal {self.directory}: {exc.strerror}") from exc
            self._offset += len(data)
            self._appended += len(data)
            self.records += 1
            mine = self._appended
            self._wait_durable(mine)

    def _wait_durable(self, position: int) -> None:
        """Under the lock: return once ``position`` is synced, syncing as leader when nobody is."""
        while self._durable < position:
            if self._syncing:
                self._synced.wait()
                continue
            self._syncing = True
            target, fd = self._appended, self._fd
            self._lock.release()
            error: OSError | None = None
            try:
                os.fdatasync(fd)
                self.syncs += 1
            except OSError as exc:
                error = exc
            finally:
                self._lock.acquire()
                self._syncing = False
                self._synced.notify_all()
            if error is not None:
                raise JournalError(f"cannot sync the journal {self.directory}: {error.strerror}") from error
            self._durable = max(self._durable, target)

    def barrier(self) -> None:
        """Return once everything appended so far is durable (a duplicate's answer waits for its original)."""
        with self._lock:
            self._wait_durable(self._appended)

    def checkpoint(self, *paths: Path) -> int:
        """Make the spool and index durable (``syncfs`` of the filesystems holding ``paths``) and delete
        the segments whose records all came before; return how many were deleted.

        Every record in a segment was appended after its file and row were written, so once the
        filesystem is synced those no longer need the journal.
        """
        with self._lock:
            if self._offset:
                self._roll()
            done = list(self._closed)
            self._closed = []
        if not done:
            return 0
        try:
            for path in paths:
                syncfs(path)
        except OSError as exc:
            with self._lock:
                self._closed = done + self._closed  # kept: the next checkpoint tries again
            reason = f"cannot sync for a journal checkpoint: {exc.strerror}"
            raise SpoolWriteError(reason, exc.errno) from exc
        for path in done:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return len(done)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = -1


def replay(directory: Path, spool: Spool, index: Index) -> int:
    """Write every journalled instance into the spool and the index again, make them durable, and empty
    the journal; return how many records there were. Call at start-up, before any association.

    Idempotent: a record whose file and row survived is written again with the same bytes and row.
    """
    paths = segments(directory)
    count = 0
    for path in paths:
        for record in read_segment(path):
            row = record.row
            study, series, sop = (
                str(row[k]) for k in ("study_instance_uid", "series_instance_uid", "sop_instance_uid")
            )
            spool.write(study, series, sop, record.data, overwrite=True, durable=False)
            index.restore({k: v for k, v in row.items() if k != "replace"}, replace=bool(row.get("replace")))
            count += 1
    if paths:
        syncfs(spool.root)
        for path in paths:
            path.unlink(missing_ok=True)
    if count:
        log.info("journal replayed: %d instances written again into the spool and the index", count)
    return count


class Checkpointer:
    """Runs :meth:`Journal.checkpoint` every ``interval`` seconds on a thread until stopped.

    The journal holds every instance received since the last checkpoint (bytes included), so the
    interval bounds its size: at 100 MB/s of received data, one second is about two segments.
    """

    def __init__(self, journal: Journal, paths: tuple[Path, ...], interval: float = 1.0) -> None:
        self.journal = journal
        self.paths = paths
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="journal-checkpoint", daemon=True)
        self._guard = threading.Lock()  # one checkpoint at a time (the thread, retention, the drain)

    def start(self) -> None:
        self._thread.start()

    def checkpoint(self) -> int:
        with self._guard:
            return self.journal.checkpoint(*self.paths)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.checkpoint()
            except StoreError as exc:  # the journal keeps its segments; the next checkpoint tries again
                log.warning("journal checkpoint failed: %s", exc)

    def stop(self) -> None:
        """Stop the thread, then one last checkpoint: the journal is empty after a clean stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.checkpoint()
        except StoreError as exc:
            log.warning("last journal checkpoint failed (replayed at the next start): %s", exc)
        self.journal.close()
