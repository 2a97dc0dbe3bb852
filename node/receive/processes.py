"""Receivers on every core: ``[receive] processes = N`` runs serve's own receiver and N - 1 ``pacs-node
receiver`` processes, each listening on ``node.port`` with ``SO_REUSEPORT`` (the kernel spreads new
connections over them) and each a whole receive path: its own acceptor threads, journal, checkpoint thread
and index connection.

What they share, and where:

- the association limits (``limits.max_associations``, a peer's ``max_associations``): the file
  ``run/associations.json`` under the data dir, :class:`node.receive.slots.SharedSlots`;
- which open association carries which study (completion, retention): the index's ``carrying`` table;
- the spool and the index (SQLite WAL, one writer at a time).

Each receiver's journal is ``journal/p<pid>/``. The journal of a receiver that died (``kill -9``) is
replayed by serve as soon as it notices (:func:`replay_orphans`), and at start-up every such folder is,
before any receiver listens. A receiver tells serve's router about a new row through a datagram on
``run/router.sock`` (:class:`node.bell.Bell`), so forwarding does not wait for the router's next poll.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from node.bell import RUN_DIR
from node.config import NodeConfig
from node.store import Index, Spool
from node.store.durability import replay
from node.store.journal import JOURNAL_DIR, read_segment

log = logging.getLogger(__name__)

PORT_ENV = "PACS_NODE_RECEIVER_PORT"  # the port serve's receiver bound (node.port may be 0)


def slots_path(config: NodeConfig) -> Path:
    folder = config.node.data_dir / RUN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "associations.json"


def journal_dir_of(config: NodeConfig, pid: int) -> Path:
    """The journal folder of receiver process ``pid``."""
    return config.node.data_dir / JOURNAL_DIR / f"p{pid}"


def replay_orphans(config: NodeConfig, spool: Spool, index: Index, pids: list[int] | None = None) -> int:
    """Replay the journals of receiver processes that are gone (``pids``, or every ``p<pid>`` folder), then
    remove the folders; return how many instances were written again."""
    root = config.node.data_dir / JOURNAL_DIR
    folders = [journal_dir_of(config, pid) for pid in pids] if pids is not None else sorted(root.glob("p*"))
    count = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        count += replay(folder, spool, index)
        shutil.rmtree(folder, ignore_errors=True)  # spares too: a new receiver makes its own
    return count


def settle_journals(config: NodeConfig, since: float, timeout: float = 5.0) -> bool:
    """Wait until every receiver process has checkpointed what it journalled before ``since`` (each does
    every second: a segment opened before ``since`` that holds records is gone); ``False`` if one has not
    after ``timeout``.

    Retention calls this before deleting: a record left in a journal would bring a deleted instance back
    at the next replay.
    """
    import time

    root = config.node.data_dir / JOURNAL_DIR
    deadline = time.monotonic() + timeout
    while True:
        old = []
        for segment in root.glob("p*/*.jnl"):
            with contextlib.suppress(OSError):
                # Older than ``since`` and holding a record (an idle receiver's empty segment is not rolled).
                if segment.stat().st_ctime < since and next(read_segment(segment), None) is not None:
                    old.append(segment)
        if not old:
            return True
        if time.monotonic() >= deadline:
            log.warning("journal %s not checkpointed after %.0f s: retention waits", old[0], timeout)
            return False
        time.sleep(0.1)
