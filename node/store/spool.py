"""The spool: received instances as Part-10 files, written atomically and durably.

Layout under the spool root::

    <root>/.tmp/<random>.part                      a write in progress (removed by cleanup_temp)
    <root>/<study uid>/<series uid>/<sop uid>.dcm  a stored instance

A write goes to a temporary file on the same filesystem, is flushed and fsynced, renamed into place with
``os.replace`` and then the directory entries are fsynced. When :meth:`Spool.write` returns, the file
survives a crash or power loss; when it raises, nothing is left behind except, at worst, a temp file that
:meth:`Spool.cleanup_temp` removes at the next start-up. A reader never sees a half-written ``.dcm``:
the rename is atomic, so a path holds either the old complete file or the new complete file.

UIDs become path parts only after validation (digits and dots, at most 64 characters), so a peer cannot
walk out of the spool with ``..`` or ``/``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

from node.errors import NodeError

log = logging.getLogger(__name__)

TEMP_DIR = ".tmp"
SUFFIX = ".dcm"
_TEMP_SUFFIX = ".part"
_COPY_CHUNK = 1 << 20
# Digits and dots, no empty component: this refuses "", ".", ".." and anything with a separator.
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_UID_MAX = 64
# Directories whose own entry is known to be durable; bounded so that months of studies don't grow it
# without limit (forgetting one only costs one extra directory fsync).
_KNOWN_DIRS_MAX = 10_000


class StoreError(NodeError):
    """The store stage could not keep an instance; nothing half-written was left behind."""


class InvalidUIDError(StoreError):
    """A UID cannot name a spool file (not digits and dots, or longer than 64 characters).

    The caller answers a 0xC000-range status (cannot process): retrying will not help.
    """


class SpoolWriteError(StoreError):
    """The operating system refused the write (ENOSPC, EIO, ...).

    The caller answers 0xA700 (out of resources). ``errno`` holds the OS error number.
    """

    def __init__(self, message: str, errno_: int | None) -> None:
        super().__init__(message)
        self.errno = errno_


class AlreadyStoredError(StoreError):
    """``write(..., overwrite=False)`` found the instance already in the spool; the old file is kept."""


def validate_uid(value: str, name: str = "UID") -> str:
    """Return `value` if it can be a path part, else raise :class:`InvalidUIDError`.

    The message names the attribute, not the value: a peer's bytes do not go into logs.
    """
    if len(value) > _UID_MAX or _UID.fullmatch(value) is None:
        raise InvalidUIDError(f"{name} is not a valid UID (digits and dots, at most {_UID_MAX} characters)")
    return value


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


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` durable (a new, renamed or removed name in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Durable, atomic storage of Part-10 files under `root`.

    Safe to use from many threads at once: writes of different instances share nothing but the
    directories; two writes of the same instance each rename a complete file and the last one wins
    (or, with ``overwrite=False``, the first one wins and the second raises).

    Parameters
    ----------
    root : pathlib.Path
        The spool directory; created if missing. Must be on one local filesystem (``os.replace`` from
        ``root/.tmp`` into the tree must be a rename, not a copy).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.temp_dir = self.root / TEMP_DIR
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self._known_dirs: set[Path] = {self.root}
        self._lock = threading.Lock()

    def relative_path(self, study_uid: str, series_uid: str, sop_uid: str) -> str:
        """Return ``<study>/<series>/<sop>.dcm`` (what the index stores), after validating the UIDs."""
        validate_uid(study_uid, "Study Instance UID")
        validate_uid(series_uid, "Series Instance UID")
        validate_uid(sop_uid, "SOP Instance UID")
        return f"{study_uid}/{series_uid}/{sop_uid}{SUFFIX}"

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """Return the absolute path of an instance's file (which may not exist)."""
        return self.root / self.relative_path(study_uid, series_uid, sop_uid)

    def exists(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """Whether the instance's file is in the spool (for the keep-first duplicate policy)."""
        return self.path_for(study_uid, series_uid, sop_uid).is_file()

    def write(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        data: bytes | bytearray | memoryview | BinaryIO,
        *,
        overwrite: bool = True,
        durable: bool = True,
    ) -> Path:
        """Store one instance durably and return its absolute path.

        Parameters
        ----------
        study_uid, series_uid, sop_uid : str
            Name the file; validated before use.
        data : bytes or binary file-like
            The complete Part-10 encoding (see :func:`part10_bytes`), written as is.
        overwrite : bool
            ``True`` (replace policy): an existing file is replaced atomically; readers see the old file
            or the new one, never a mix. ``False`` (keep-first policy, race-free): if the file exists
            when the new one is ready, the old one stays and :class:`AlreadyStoredError` is raised.
            Callers with keep-first should check :meth:`exists` first and skip the write. (Uses a hard
            link, which every local POSIX filesystem supports.)
        durable : bool
            ``False``: no fsync of the file or its directories. The file is complete and in place when
            this returns, but only in the page cache: the caller has made the bytes durable elsewhere
            (the receive journal, :mod:`node.store.journal`).

        Raises
        ------
        InvalidUIDError
            A UID cannot be a path part. Nothing was written.
        SpoolWriteError
            The OS refused the write (disk full, I/O error). No temp file and no partial file remain.
            If only the final directory fsync failed, the complete file is in place but may not be
            durable; the caller must still answer a failure so that the sender retries.
        AlreadyStoredError
            ``overwrite=False`` and the instance was already stored.
        """
        final = self.path_for(study_uid, series_uid, sop_uid)
        try:
            self._make_dirs(final.parent, durable)
            fd, temp_name = tempfile.mkstemp(suffix=_TEMP_SUFFIX, dir=self.temp_dir)
        except OSError as error:
            raise _write_error(self.root, error) from error
        temp = Path(temp_name)
        try:
            with open(fd, "wb") as out:
                if isinstance(data, bytes | bytearray | memoryview):
                    out.write(data)
                else:
                    shutil.copyfileobj(data, out, _COPY_CHUNK)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            if overwrite:
                os.replace(temp, final)
            else:
                # link() fails if the name exists, atomically: a second writer can never clobber the
                # first. The temp name is dropped afterwards (a crash in between leaves only a temp file).
                os.link(temp, final)
                temp.unlink()
        except FileExistsError:
            temp.unlink(missing_ok=True)
            raise AlreadyStoredError("the instance is already in the spool; the stored file was kept") from None
        except BaseException as error:
            # Any failure, including KeyboardInterrupt or a file-like that raises: no temp file stays.
            temp.unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise _write_error(self.root, error) from error
            raise
        if durable:
            try:
                fsync_dir(final.parent)
            except OSError as error:
                raise _write_error(self.root, error) from error
        log.debug("stored %s", final.relative_to(self.root))
        return final

    def cleanup_temp(self) -> int:
        """Remove the temp files that interrupted writes left behind and return how many.

        Call at start-up, before any association is accepted: a write in progress would lose its file.
        """
        removed = 0
        for entry in self.temp_dir.iterdir():
            if entry.is_file() or entry.is_symlink():
                entry.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d temp files left by interrupted writes in %s", removed, self.temp_dir)
        return removed

    def _make_dirs(self, series_dir: Path, durable: bool = True) -> None:
        """Create the study and series directories and make their entries durable.

        A new directory's name lives in its parent, so the parent is fsynced. ``mkdir`` runs on every
        write (a cheap syscall) so that a directory removed by retention comes back; the set of known
        directories only saves the parent fsync. A thread that loses a ``mkdir`` race to another fsyncs
        the parent itself, so it never answers success before the entry is durable.
        """
        for directory in (series_dir.parent, series_dir):
            try:
                directory.mkdir()
                created = True
            except FileExistsError:
                created = False
            if not durable:
                continue
            with self._lock:
                known = directory in self._known_dirs
            if known and not created:
                continue
            fsync_dir(directory.parent)
            with self._lock:
                if len(self._known_dirs) >= _KNOWN_DIRS_MAX:
                    self._known_dirs = {self.root}
                self._known_dirs.add(directory)


def _write_error(root: Path, error: OSError) -> SpoolWriteError:
    # The message names the spool and the OS reason, never the file: its name carries UIDs.
    code = error.errno
    reason = os.strerror(code) if code is not None else str(error)
    hint = " (free space on that filesystem)" if code in (errno.ENOSPC, errno.EDQUOT) else ""
    return SpoolWriteError(f"cannot write to the spool {root}: {reason}{hint}", code)
