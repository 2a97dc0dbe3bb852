"""SQLite helpers shared by the durable stores (instance index, job store)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def immediate_transaction(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    error: Callable[[sqlite3.Error], Exception],
    synchronous: str = "FULL",
) -> Iterator[sqlite3.Connection]:
    """One write transaction under ``lock``: BEGIN IMMEDIATE, COMMIT on exit, ROLLBACK on any error.

    BEGIN IMMEDIATE takes SQLite's write lock before anything is read, so another process cannot change
    what the transaction reads before it writes, nor make it fail half-way with SQLITE_BUSY. With
    ``synchronous=FULL`` the COMMIT is durable when this returns; ``synchronous="NORMAL"`` commits this
    one transaction without a sync (WAL mode: a later synced commit writes its frames too), then puts
    ``FULL`` back. SQLite errors are raised as
    ``error(exc)`` (the store's own NodeError); anything else raised inside propagates after rollback.
    """
    with lock:
        relaxed = synchronous != "FULL"
        try:
            if relaxed:  # a pragma, so it can only change outside a transaction
                conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise error(exc) from exc
        finally:
            if relaxed:
                conn.execute("PRAGMA synchronous = FULL")
