"""Association slots: LocalSlots in one process, SharedSlots across real processes on one file."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from node.receive.slots import LocalSlots, SharedSlots

# fork: the children need nothing but this module's function, and start in milliseconds.
CONTEXT = multiprocessing.get_context("fork")


def _hold(path: Path, key: str, calling_ae: str, node_limit: int, parent: Connection) -> None:
    """In a child: take a slot, send the answer, keep it until the parent says so, give it back.

    A pipe per child, not a shared Event: a child killed while waiting on an Event would leave the
    parent's ``set()`` waiting for it forever.
    """
    slots = SharedSlots(path)
    parent.send(slots.take(key, calling_ae, None, node_limit))
    parent.poll(30)
    slots.give_back(key)


@contextmanager
def holders(path: Path, *aes: str, node_limit: int = 10) -> Iterator[list[BaseProcess]]:
    """One child process per calling AE, each holding one slot (all with the key "k") until the block ends."""
    pipes = [CONTEXT.Pipe() for _ in aes]
    children: list[BaseProcess] = [
        CONTEXT.Process(target=_hold, args=(path, "k", ae, node_limit, theirs))
        for ae, (_, theirs) in zip(aes, pipes, strict=True)
    ]
    for child in children:
        child.start()
    try:
        assert [ours.recv() if ours.poll(30) else None for ours, _ in pipes] == [""] * len(children)
        yield children
    finally:
        for (ours, _), child in zip(pipes, children, strict=True):
            if child.is_alive():
                ours.send("release")
            child.join(30)


def test_local_slots_count_per_peer_and_in_all() -> None:
    slots = LocalSlots()
    assert slots.take("1", "A", 1, 2) == ""
    assert "'A' already has 1" in slots.take("2", "A", 1, 2)
    assert slots.take("3", "B", None, 2) == ""
    assert "2 associations already open" in slots.take("4", "C", None, 2)
    slots.give_back("unknown")
    slots.give_back("1")
    assert slots.take("5", "A", 1, 2) == ""


def test_shared_slots_hold_the_limits_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    slots = SharedSlots(path)
    with holders(path, "A", "A"):
        # Two associations of other processes count against this one's limits, per peer and in all.
        assert "'A' already has 2 associations open" in slots.take("k", "A", 2, 10)
        assert "2 associations already open" in slots.take("k", "B", None, 2)
        assert slots.take("k", "B", None, 3) == ""  # the same key as the children's: its own entry
        assert "3 associations already open" in slots.take("k2", "C", None, 3)
        slots.give_back("k")
        assert slots.take("k2", "C", None, 3) == ""
        slots.give_back("k2")
    # The children gave theirs back as they ended; this process's key "k" did not free theirs.
    assert slots.take("a", "A", 1, 1) == ""
    assert "1 associations already open" in slots.take("b", "B", None, 1)


def test_a_killed_process_holds_no_slot(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    slots = SharedSlots(path)
    with holders(path, "A") as children:
        assert "1 associations already open" in slots.take("mine", "B", None, 1)
        children[0].kill()  # SIGKILL: no give_back
        children[0].join(30)  # reaped, as the node's parent process reaps its receivers
        assert slots.take("mine", "B", None, 1) == ""
    assert '"mine"' in path.read_text() and '"k"' not in path.read_text()


def test_give_back_of_an_unknown_key_is_ignored_and_a_garbled_file_counts_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "slots.json"
    slots = SharedSlots(path)
    slots.give_back("never taken")  # no file yet: created, still empty
    assert slots.take("a", "A", None, 2) == ""
    slots.give_back("never taken")
    assert "2 associations already open" not in slots.take("b", "A", None, 2)
    assert "2 associations already open" in slots.take("c", "A", None, 2)
    path.write_text('[[1, "half')  # a rewrite cut short by a crash
    assert slots.take("d", "A", None, 1) == ""
