"""Free-space watch for the spool (DESIGN §4.6): below the floor, stores are answered with 0xA700."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def free_mb(path: Path) -> float:
    """Megabytes (MiB) available to an unprivileged user on the filesystem holding `path`."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize / (1024 * 1024)


class DiskGuard:
    """Answers "is there room for one more instance?" without a statvfs per instance.

    The answer is cached for `ttl` seconds: a burst of hundreds of C-STOREs per second costs one
    statvfs per second. Safe to call from many threads.

    Parameters
    ----------
    path : pathlib.Path
        Any path on the spool's filesystem.
    min_free_mb : float
        The floor: :meth:`ok` is ``False`` while less than this is free.
    ttl : float
        Seconds an answer is reused.
    clock : callable
        Monotonic seconds; tests inject one.
    """

    def __init__(
        self,
        path: Path,
        min_free_mb: float,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.min_free_mb = min_free_mb
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._ok = True
        self._free: float | None = None

    @property
    def last_free_mb(self) -> float | None:
        """Free space at the last check (for metrics); ``None`` before the first check or after an error."""
        return self._free

    def ok(self) -> bool:
        """Whether free space is at or above the floor.

        A failing statvfs (spool missing, I/O error) counts as no room: refusing a store makes the
        sender retry later, accepting one we cannot write would fail anyway.
        """
        now = self._clock()
        with self._lock:
            if self._checked_at is not None and now - self._checked_at < self._ttl:
                return self._ok
            try:
                self._free = free_mb(self.path)
            except OSError as error:
                self._free = None
                ok = False
                log.warning("cannot read free space of %s: %s", self.path, error)
            else:
                ok = self._free >= self.min_free_mb
            if ok != self._ok:
                if ok:
                    log.info("free space on %s back above %.0f MB: accepting stores", self.path, self.min_free_mb)
                else:
                    log.warning("free space on %s below %.0f MB: refusing stores", self.path, self.min_free_mb)
            self._ok = ok
            self._checked_at = now
            return ok
