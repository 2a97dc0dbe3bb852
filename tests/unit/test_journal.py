"""The receive journal: records read back, group commit, torn tails, checkpoints and replay."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from node.store import Index, Spool
from node.store.durability import replay
from node.store.journal import Journal, Record, read_segment, segments


def _row(n: int, study: str = "1.2.3") -> dict[str, object]:
    return {
        "sop_instance_uid": f"1.2.3.4.{n}",
        "study_instance_uid": study,
        "series_instance_uid": "1.2.3.4",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "path": f"{study}/1.2.3.4/1.2.3.4.{n}.dcm",
        "size": 3,
        "calling_ae": "SCU",
        "received_at": 1000.0 + n,
        "association_id": "a1",
        "called_ae": "PACSNODE",
        "source_address": "127.0.0.1",
        "replace": False,
    }


def test_records_read_back_in_order_across_segments(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=4096)
    for n in range(30):
        journal.append(Record(_row(n), bytes([n]) * 300))
    journal.close()
    files = segments(tmp_path / "j")
    assert len(files) > 1  # 30 records of ~700 bytes do not fit one 4 KiB segment
    read = [r for f in files for r in read_segment(f)]
    assert [r.row["sop_instance_uid"] for r in read] == [f"1.2.3.4.{n}" for n in range(30)]
    assert all(r.data == bytes([n]) * 300 for n, r in enumerate(read))


def test_concurrent_appends_share_syncs(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    barrier = threading.Barrier(8)

    def one(k: int) -> None:
        barrier.wait()
        for n in range(20):
            journal.append(Record(_row(k * 100 + n), b"x" * 50_000))

    threads = [threading.Thread(target=one, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert journal.records == 160
    # Every append returned durable, and eight writers at once needed fewer syncs than records.
    assert 0 < journal.syncs < journal.records
    journal.close()


def test_a_torn_tail_ends_the_segment(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    for n in range(3):
        journal.append(Record(_row(n), b"abc"))
    journal.close()
    (segment,) = segments(tmp_path / "j")
    raw = bytearray(segment.read_bytes())
    # Damage the third record's payload: a crash half-way through writing it.
    third = raw.find(b'"1.2.3.4.2"')
    raw[third + 200 : third + 203] = b"\xff\xff\xff"
    raw[raw.rfind(b"abc")] ^= 0xFF
    segment.write_bytes(bytes(raw))
    assert [r.row["sop_instance_uid"] for r in read_segment(segment)] == ["1.2.3.4.0", "1.2.3.4.1"]


def test_replay_rebuilds_lost_files_and_rows_and_empties_the_journal(tmp_path: Path) -> None:
    spool, index = Spool(tmp_path / "spool"), Index(tmp_path / "index.sqlite3")
    journal = Journal(tmp_path / "j")
    for n in range(3):
        journal.append(Record(_row(n), b"DICM" + bytes([n])))
    journal.close()
    # As after a power loss: one file and its row never reached the disk, another only its file.
    spool.write("1.2.3", "1.2.3.4", "1.2.3.4.1", b"DICM\x01")
    assert replay(tmp_path / "j", spool, index) == 3
    assert segments(tmp_path / "j") == []
    for n in range(3):
        assert spool.path_for("1.2.3", "1.2.3.4", f"1.2.3.4.{n}").read_bytes() == b"DICM" + bytes([n])
        row = index.get(f"1.2.3.4.{n}")
        assert row is not None and row.received_at == 1000.0 + n
    summary = index.study_summary("1.2.3")
    assert summary is not None and summary.instances == 3 and summary.duplicates == 0
    # Replaying twice changes nothing (a crash during replay replays again).
    journal = Journal(tmp_path / "j")
    journal.append(Record(_row(0), b"DICM\x00"))
    journal.close()
    assert replay(tmp_path / "j", spool, index) == 1
    summary = index.study_summary("1.2.3")
    assert summary is not None and summary.instances == 3 and summary.duplicates == 0


def test_checkpoint_deletes_the_segments_it_covers(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.append(Record(_row(0), b"abc"))
    assert journal.checkpoint(tmp_path) == 1
    assert len(segments(tmp_path / "j")) == 1  # the new, empty one appends go to
    assert list(read_segment(segments(tmp_path / "j")[0])) == []
    assert journal.checkpoint(tmp_path) == 0  # nothing appended since
    journal.append(Record(_row(1), b"abc"))
    assert [r.row["sop_instance_uid"] for r in read_segment(segments(tmp_path / "j")[-1])] == ["1.2.3.4.1"]
    journal.close()


def test_a_failed_write_is_a_journal_error(tmp_path: Path) -> None:
    from node.store.journal import JournalError

    journal = Journal(tmp_path / "j")
    journal.close()  # its descriptor is gone: the write fails as a full disk would
    with pytest.raises(JournalError, match="cannot write the journal"):
        journal.append(Record(_row(0), b"abc"))
