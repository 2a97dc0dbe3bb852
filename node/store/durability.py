"""Making what the receive journal covers durable: ``syncfs``, the checkpoint thread, replay at start-up.

See :mod:`node.store.journal` for the design.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from node.store.journal import Journal, read_segment, segments
from node.store.spool import StoreError, syncfs

if TYPE_CHECKING:
    from node.store.index import Index
    from node.store.spool import Spool

log = logging.getLogger("node.store.journal")


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
            done = self.journal.checkpoint(*self.paths)
            self.journal.prepare_spare()
            return done

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
