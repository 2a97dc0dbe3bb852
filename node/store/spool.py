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

import copy
import errno
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

from pydicom import __version_info__
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

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


def part10_header(file_meta: FileMetaDataset) -> bytes:
    """Encode the 128-byte preamble, ``DICM`` and the File Meta Information group.

    This is what goes in front of the dataset bytes a C-STORE carried, so that the spool file is a valid
    Part-10 file without decoding and re-encoding the dataset. The group (always Explicit VR Little Endian)
    is encoded by hand (:func:`part10_header_for`) when it holds only the elements a receiver writes:
    pydicom's ``write_file_meta_info`` on a copy of the dataset cost a fifth of a C-STORE's handling. The
    bytes are those ``write_file_meta_info`` writes (it fills in the group length and adds the Type 1
    elements that are missing, as pynetdicom's ``Event.encoded_dataset()`` does); any other element, or a
    value the hand encoder does not take, goes through ``write_file_meta_info`` itself.

    Parameters
    ----------
    file_meta : pydicom.dataset.FileMetaDataset
        Group 0002 elements, e.g. pynetdicom's ``event.file_meta``. It must name the Media Storage SOP
        Class and Instance UIDs and the Transfer Syntax UID. It is copied, never modified.

    Raises
    ------
    ValueError
        A required element is missing, or `file_meta` holds an element outside group 0002.
    """
    fast = _hand_header(file_meta)
    if fast is not None:
        return fast
    meta = copy.deepcopy(file_meta)  # write_file_meta_info adds and updates elements in place
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    try:
        write_file_meta_info(buffer, meta, enforce_standard=True)
    except AttributeError as error:  # pydicom 3 reports missing Type 1 elements this way
        raise ValueError(str(error)) from error
    return b"\x00" * 128 + b"DICM" + buffer.getvalue()


def part10_header_for(
    transfer_syntax_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    implementation_class_uid: str,
    implementation_version_name: str | None,
    source_ae_title: str | None,
) -> bytes:
    """The bytes of :func:`part10_header` for a file meta made of these values, built without pydicom.

    Parameters
    ----------
    transfer_syntax_uid, sop_class_uid, sop_instance_uid
        (0002,0010) and the Media Storage SOP Class and Instance UIDs (0002,0002), (0002,0003).
    implementation_class_uid
        (0002,0012), this node's.
    implementation_version_name, source_ae_title
        (0002,0013) and (0002,0016); ``None``: the element is left out.

    Raises
    ------
    ValueError
        A UID that is empty, longer than 64 characters or not ASCII; a name or AE title longer than 16
        characters or outside Latin-1. The message names the attribute, not the value.
    """
    uids = {
        "Transfer Syntax UID": transfer_syntax_uid,
        "Media Storage SOP Class UID": sop_class_uid,
        "Media Storage SOP Instance UID": sop_instance_uid,
        "Implementation Class UID": implementation_class_uid,
    }
    for name, uid in uids.items():
        if not uid or not _fits_uid(uid):
            raise ValueError(
                f"{name} cannot be written to the file meta (empty, not ASCII or over {_UID_MAX} characters)"
            )
    for name, text in (
        ("Implementation Version Name", implementation_version_name),
        ("Source AE Title", source_ae_title),
    ):
        if text is not None and not _fits_text(text):
            raise ValueError(f"{name} cannot be written to the file meta (not Latin-1 or over 16 characters)")
    return _meta_bytes(
        transfer_syntax_uid, sop_class_uid, sop_instance_uid, implementation_class_uid,
        implementation_version_name, source_ae_title,
    )  # fmt: skip


# What write_file_meta_info(enforce_standard=True) adds when they are missing (pydicom's own identity).
_PYDICOM_CLASS_UID = PYDICOM_IMPLEMENTATION_UID
_PYDICOM_VERSION_NAME = f"PYDICOM {'.'.join(__version_info__)}"
# The File Meta Information group: the elements the hand encoder writes (the group length is recomputed).
_HAND_TAGS = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013, 0x00020016})
_VERSION = b"\x00\x01"


def _hand_header(file_meta: FileMetaDataset) -> bytes | None:
    """:func:`part10_header` by hand, or ``None`` where only ``write_file_meta_info`` gives its bytes (another
    element, a missing Type 1 element to report, a value of another type or beyond what the VR holds)."""
    if not _HAND_TAGS.issuperset(file_meta.keys()):
        return None
    values = {tag: file_meta[tag].value for tag in _HAND_TAGS if tag in file_meta}
    if values.get(0x00020001) not in (None, b"", _VERSION):
        return None
    ts, sop_class, sop = values.get(0x00020010), values.get(0x00020002), values.get(0x00020003)
    implementation = values.get(0x00020012) or _PYDICOM_CLASS_UID  # an empty one is replaced, as pydicom does
    name, title = values.get(0x00020013, _PYDICOM_VERSION_NAME), values.get(0x00020016)
    # An element present without a value is written empty, as pydicom does; an absent title is left out.
    name = "" if name is None else name
    title = "" if title is None and 0x00020016 in values else title
    if not all(isinstance(uid, str) and uid and _fits_uid(uid) for uid in (ts, sop_class, sop, implementation)):
        return None
    if not all(text is None or (isinstance(text, str) and _fits_text(text)) for text in (name, title)):
        return None
    return _meta_bytes(str(ts), str(sop_class), str(sop), str(implementation), name, title)


def _fits_uid(uid: str) -> bool:
    return len(uid) <= _UID_MAX and uid.isascii()


def _fits_text(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return len(text) <= 16


def _meta_bytes(ts: str, sop_class: str, sop: str, implementation: str, name: str | None, title: str | None) -> bytes:
    """Preamble, ``DICM`` and the group, explicit VR little endian, elements in tag order (PS3.10 §7.1)."""
    body = [_element(0x0001, b"OB", _VERSION), _uid(0x0002, sop_class), _uid(0x0003, sop), _uid(0x0010, ts)]
    body.append(_uid(0x0012, implementation))
    if name is not None:
        body.append(_text(0x0013, b"SH", name))
    if title is not None:
        body.append(_text(0x0016, b"AE", title))
    group = b"".join(body)
    return b"\x00" * 128 + b"DICM" + _element(0x0000, b"UL", struct.pack("<L", len(group))) + group


def _uid(element: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    return _element(element, b"UI", value + b"\x00" * (len(value) % 2))  # UI pads with NUL (PS3.5 §6.2)


def _text(element: int, vr: bytes, text: str) -> bytes:
    value = text.encode("latin-1")
    return _element(element, vr, value + b" " * (len(value) % 2))  # text pads with a space


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":  # two reserved bytes and a 4-byte length (PS3.5 §7.1.2)
        return struct.pack("<HH2s2xL", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def part10_bytes(file_meta: FileMetaDataset, dataset_bytes: bytes) -> bytes:
    """Return a whole Part-10 file: :func:`part10_header` followed by the dataset bytes as received.

    `dataset_bytes` is the dataset encoded in the transfer syntax that `file_meta` names (for a handler:
    ``event.request.DataSet.getvalue()``, or ``event.encoded_dataset(include_meta=False)``); deflated
    datasets stay deflated.
    """
    return part10_header(file_meta) + dataset_bytes


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
