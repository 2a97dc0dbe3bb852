"""How many associations are open, per calling AE and in all, against ``limits.max_associations`` and a
peer's own ``max_associations`` (PS3.8 A-ASSOCIATE-RJ 2, 3, 2 when full).

:class:`LocalSlots` counts the associations of one process; :class:`SharedSlots` those of every receiver
process accepting on the same port (``[receive] processes``), in a small file they all lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from node.store.associations import pid_alive

log = logging.getLogger(__name__)


class Slots(Protocol):
    def take(self, key: str, calling_ae: str, peer_limit: int | None, node_limit: int) -> str:
        """Count association ``key`` in and return ``""``, or return why it cannot be (nothing counted)."""
        ...

    def give_back(self, key: str) -> None:
        """Association ``key`` ended (a key never taken is ignored)."""
        ...

    def count(self) -> int:
        """Associations counted in now (every process's, for shared slots)."""
        ...


def _refusal(calling_aes: Iterable[str], calling_ae: str, peer_limit: int | None, node_limit: int) -> str:
    """Why one more association from ``calling_ae`` cannot be counted among those open, or ``""``."""
    open_aes = list(calling_aes)
    if peer_limit is not None and sum(1 for c in open_aes if c == calling_ae) >= peer_limit:
        return f"'{calling_ae}' already has {peer_limit} associations open (its peer's max_associations)"
    if len(open_aes) >= node_limit:
        return f"{node_limit} associations already open (limits.max_associations)"
    return ""


class LocalSlots:
    """The associations of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, str] = {}

    def take(self, key: str, calling_ae: str, peer_limit: int | None, node_limit: int) -> str:
        with self._lock:
            refused = _refusal(self._open.values(), calling_ae, peer_limit, node_limit)
            if not refused:
                self._open[key] = calling_ae
            return refused

    def give_back(self, key: str) -> None:
        with self._lock:
            self._open.pop(key, None)

    def count(self) -> int:
        with self._lock:
            return len(self._open)


class SharedSlots:
    """The associations of every process that uses the same file.

    The file holds the open associations as JSON, ``[[pid, key, calling AE], ...]``; each :meth:`take` and
    :meth:`give_back` reads, changes and rewrites it under an exclusive ``flock`` (once per association,
    not per instance, so one small locked rewrite is cheap enough). Keys are unique within their process,
    so an entry is ``(pid, key)``. Entries of a process that no longer exists (killed with ``kill -9``)
    are dropped on every take: they hold no slot. A file that cannot be parsed (a crash in the middle
    of a rewrite) counts as empty, which lets associations in rather than locking every sender out.

    Parameters
    ----------
    path : pathlib.Path
        The file, e.g. in the data directory's run folder; created if missing (its folder must exist).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def take(self, key: str, calling_ae: str, peer_limit: int | None, node_limit: int) -> str:
        with self._entries() as entries:
            live = [entry for entry in entries if pid_alive(entry[0])]
            refused = _refusal((entry[2] for entry in live), calling_ae, peer_limit, node_limit)
            if not refused:
                live.append((os.getpid(), key, calling_ae))
            entries[:] = live
            return refused

    def give_back(self, key: str) -> None:
        me = os.getpid()
        with self._entries() as entries:
            entries[:] = [entry for entry in entries if (entry[0], entry[1]) != (me, key)]

    def count(self) -> int:
        with self._entries() as entries:
            return sum(1 for entry in entries if pid_alive(entry[0]))

    @contextmanager
    def _entries(self) -> Iterator[list[tuple[int, str, str]]]:
        """The file's entries under ``flock(LOCK_EX)``; what the block leaves in the list is written back.

        Each call opens the file anew: flock belongs to the open file description, so threads of one
        process exclude each other as two processes do.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            before = _parse(self.path, _read_all(fd))
            entries = list(before)
            yield entries
            if entries != before:
                # In place, under the lock that every reader takes; not synced: after a crash the entries
                # name dead processes (dropped by their pid) or none at all.
                data = json.dumps([list(entry) for entry in entries]).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
        finally:
            os.close(fd)  # releases the flock


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _parse(path: Path, data: bytes) -> list[tuple[int, str, str]]:
    if not data.strip():
        return []
    try:
        return [(int(pid), str(key), str(ae)) for pid, key, ae in json.loads(data)]
    except (ValueError, TypeError) as error:
        log.warning("association slots %s unreadable (%s): counted as empty", path, error)
        return []
