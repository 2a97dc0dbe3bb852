"""The completion timer: declares a study complete once it is quiet (DESIGN §4.4).

A study is complete when no open association carries it and nothing has arrived for
``completion.quiet_seconds`` since the last instance or the release of the last association carrying
it, or at the latest ``completion.max_wait_seconds`` after its first instance (after a reopening by a
late instance, after the reopening). The timer asks :meth:`Index.quiet_studies` once per ``tick``.

Order of the side effects: ``on_complete(study)`` (the router enqueues its jobs, committed) runs
before :meth:`Index.mark_complete` commits; a crash in between completes the study again after the
restart, and the job store's dedup keys make that second enqueue find the first jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from node.config import Completion
from node.metrics import metrics
from node.store.index import Index
from node.store.spool import StoreError

log = logging.getLogger(__name__)


class CompletionTimer:
    """Checks for quiet studies every ``tick`` seconds on its own thread until ``stop`` is set.

    Parameters
    ----------
    index
        The index whose studies are watched.
    settings
        ``[completion]``: quiet period and maximum wait.
    on_complete
        Called with each complete study's UID; an exception leaves the study to the next tick.
    clock
        Seconds since the epoch (the index's time base); tests inject one and call :meth:`check`.
    """

    def __init__(
        self,
        index: Index,
        settings: Completion,
        on_complete: Callable[[str], object],
        *,
        clock: Callable[[], float] = time.time,
        tick: float = 1.0,
    ) -> None:
        self.index = index
        self.settings = settings
        self.on_complete = on_complete
        self._clock = clock
        self._tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[str]:
        """Complete every study that is quiet now; return their UIDs."""
        now = self._clock()
        done: list[str] = []
        for study in self.index.quiet_studies(now, self.settings.quiet_seconds, self.settings.max_wait_seconds):
            try:
                self.on_complete(study)
            except Exception:  # stage boundary: one bad study must not stop the timer
                log.exception("completing a study failed; trying again at the next check")
                continue
            self.index.mark_complete(study, now)
            metrics().studies_completed.inc()
            done.append(study)
        if done:
            log.info("%d %s complete", len(done), "study" if len(done) == 1 else "studies")
        return done

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            try:
                self.check()
            except StoreError as exc:  # the index is unreadable for now (disk, lock): try again
                log.warning("completion check failed: %s", exc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="completion-timer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
