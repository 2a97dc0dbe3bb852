"""Open associations are shared through the index file: what one receiver process's Index carries, the
completion timer and retention of another see (two Index objects on one file run the same SQL as two
processes; the dead-pid test uses a real second process)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from node.store.index import Index, StudyBeingDeletedError

S = "1.2.826.0.1.3680043.10.1.1"
CONTEXT = multiprocessing.get_context("fork")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(index: Index, sop: str, association_id: str = "a", study: str = S) -> None:
    index.record(
        sop_instance_uid=sop,
        study_instance_uid=study,
        series_instance_uid=f"{study}.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        path=f"{study}/{sop}.dcm",
        size=10,
        calling_ae="SCANNER",
        association_id=association_id,
    )


def complete(index: Index, now: float) -> None:
    index.mark_complete(S, now)


def mark(index: Index, now: float) -> bool:
    return index.begin_deletion(S, reason="age", now=now, quiet_seconds=30) is not None


def test_a_study_carried_in_one_index_is_neither_quiet_nor_deletable_in_another(tmp_path: Path) -> None:
    clock = Clock(0.0)
    a = Index(tmp_path / "index.db", clock=clock)
    b = Index(tmp_path / "index.db", clock=clock)
    a.association_opened("x")
    a.association_carried("x", S)
    record(a, "1.1", "x")
    a.association_carried("x", S)  # the next instance: no second row
    assert b.open_associations(S) == 1
    assert b.quiet_studies(100.0, 30, 600) == []  # quiet long enough, but carried in A
    complete(b, 100.0)
    assert not mark(b, 200.0)
    assert list(b.finished_studies(200.0, 30)) == []
    clock.now = 200.0
    a.association_closed("x")  # released at 200: the quiet period starts again there
    assert b.open_associations(S) == 0
    assert not mark(b, 220.0)
    assert list(b.finished_studies(230.0, 30)) == [S]
    assert mark(b, 230.0)
    assert [d.study_instance_uid for d in a.deletions()] == [S]


def test_an_association_waits_for_another_index_s_deletion_then_goes_on(tmp_path: Path) -> None:
    a = Index(tmp_path / "index.db", clock=Clock(0.0), deletion_wait_s=10.0)
    b = Index(tmp_path / "index.db", clock=Clock(0.0))
    record(b, "1.1")
    complete(b, 0.0)
    assert mark(b, 100.0)
    carried = threading.Event()

    def carry() -> None:
        a.association_carried("x", S)
        carried.set()

    waiter = threading.Thread(target=carry)
    waiter.start()
    # B's condition variable cannot wake A: A reads the deleting table again every 50 ms.
    assert not carried.wait(0.3)
    assert a.open_associations(S) == 0
    started = time.monotonic()
    assert b.end_deletion(S) == 1
    assert carried.wait(5.0)
    waiter.join(5.0)
    assert time.monotonic() - started < 1.0
    assert b.open_associations(S) == 1  # carried now: B's retention leaves it alone
    assert not mark(b, 1000.0)


def test_an_association_gives_up_on_another_index_s_deletion_after_its_bound(tmp_path: Path) -> None:
    a = Index(tmp_path / "index.db", clock=Clock(0.0), deletion_wait_s=0.2)
    b = Index(tmp_path / "index.db", clock=Clock(0.0))
    record(b, "1.1")
    complete(b, 0.0)
    assert mark(b, 100.0)
    started = time.monotonic()
    with pytest.raises(StudyBeingDeletedError):
        a.association_carried("x", S)
    assert 0.2 <= time.monotonic() - started < 2.0
    assert b.open_associations(S) == 0  # nothing carried: the handler writes nothing
    b.abandon_deletion(S)
    a.association_carried("x", S)  # back in service: no wait
    assert b.open_associations(S) == 1


def _carry_and_hold(path: Path, parent: Connection) -> None:
    """In a child: an Index of its own carries the study, says so, and holds it until killed."""
    index = Index(path)
    index.association_carried("x", S)
    parent.send(index.open_associations(S))
    parent.poll(60)


def test_the_rows_of_a_killed_process_do_not_count(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    index = Index(path, clock=Clock(0.0))
    record(index, "1.1")
    complete(index, 0.0)
    ours, theirs = CONTEXT.Pipe()
    child = CONTEXT.Process(target=_carry_and_hold, args=(path, theirs))
    child.start()
    try:
        assert ours.poll(30) and ours.recv() == 1
        assert index.open_associations(S) == 1
        assert index.quiet_studies(100.0, 30, 600) == []  # complete already: never among the quiet ones
        assert list(index.finished_studies(100.0, 30)) == []
        assert not mark(index, 100.0)
    finally:
        child.kill()  # SIGKILL: its row stays in the table
        child.join(30)  # reaped, as the node reaps its receivers
    assert index.open_associations(S) == 0
    assert list(index.finished_studies(100.0, 30)) == [S]
    assert mark(index, 100.0)
    assert index.forget_associations() == 1  # the node's start clears what the dead left behind


def test_an_open_study_carried_by_a_killed_process_becomes_quiet(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    index = Index(path, clock=Clock(0.0))
    record(index, "1.1")
    ours, theirs = CONTEXT.Pipe()
    child = CONTEXT.Process(target=_carry_and_hold, args=(path, theirs))
    child.start()
    try:
        assert ours.poll(30) and ours.recv() == 1
        assert index.quiet_studies(100.0, 30, 600) == []
    finally:
        child.kill()
        child.join(30)
    assert index.quiet_studies(100.0, 30, 600) == [S]


def test_forget_and_close_clear_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    a = Index(path)
    b = Index(path)
    a.association_carried("x", S)
    a.association_carried("y", S)
    b.association_carried("z", "9.9")
    assert b.open_associations(S) == 2
    a.close()  # its associations end with it
    assert b.open_associations(S) == 0 and b.open_associations("9.9") == 1
    assert b.forget_associations() == 1
    assert b.open_associations("9.9") == 0
    b.association_carried("z", "9.9")  # forgotten here too: written again
    assert b.open_associations("9.9") == 1
