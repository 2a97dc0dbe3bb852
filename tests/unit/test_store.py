"""The store stage: spool writes are atomic and durable, the index is thread-safe, the guard caches."""

from __future__ import annotations

import copy
import errno
import io
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info

from node.errors import NodeError
from node.store import (
    AlreadyStoredError,
    DiskGuard,
    Index,
    IndexDatabaseError,
    InvalidUIDError,
    Recorded,
    Spool,
    SpoolWriteError,
    free_mb,
    part10_bytes,
    part10_header,
)
from node.store import part10 as part10_module
from node.store import spool as spool_module
from node.store.part10 import part10_header_for

STUDY, SERIES, SOP = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3"


class Clock:
    """A settable clock for the index and the guard."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(index: Index, sop: str, study: str = STUDY, series: str = SERIES, **overrides: Any) -> Recorded:
    path = f"{study}/{series}/{sop}.dcm"
    fields: dict[str, Any] = {"sop_instance_uid": sop, "study_instance_uid": study, "series_instance_uid": series}
    fields |= {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "transfer_syntax_uid": "1.2.840.10008.1.2.1"}
    fields |= {"path": path, "size": 10, "calling_ae": "SCANNER", "association_id": "a1"}
    return index.record(**(fields | overrides))


# -- spool ---------------------------------------------------------------------------------------------


def test_write_reads_back_identical_bytes_in_study_series_layout(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    data = os.urandom(200_000)
    path = spool.write(STUDY, SERIES, SOP, data)
    assert path == tmp_path / STUDY / SERIES / f"{SOP}.dcm"
    assert path.read_bytes() == data
    assert spool.relative_path(STUDY, SERIES, SOP) == f"{STUDY}/{SERIES}/{SOP}.dcm"
    assert spool.exists(STUDY, SERIES, SOP) and not spool.exists(STUDY, SERIES, "1.2.3")
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_write_accepts_a_file_like(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)  # more than one copy chunk
    path = Spool(tmp_path).write(STUDY, SERIES, SOP, io.BytesIO(data))
    assert path.read_bytes() == data


@pytest.mark.parametrize("bad", ["../x", "..", ".", "", "1..2", ".1", "1.", "1/2", "1.2\x00", " 1.2", "1" * 65, "a.b"])
def test_uids_that_could_escape_or_are_invalid_are_refused(tmp_path: Path, bad: str) -> None:
    spool = Spool(tmp_path)
    for uids in ((bad, SERIES, SOP), (STUDY, bad, SOP), (STUDY, SERIES, bad)):
        with pytest.raises(InvalidUIDError):
            spool.write(*uids, b"x")
    assert issubclass(InvalidUIDError, NodeError)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp"]
    longest = "1." + "2" * 62  # 64 characters: the limit, accepted
    assert spool.write(longest, longest, longest, b"x").is_file()


def test_cleanup_temp_removes_leftovers(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.write(STUDY, SERIES, SOP, b"kept")
    for name in ("a.part", "b.part", "c"):
        (tmp_path / ".tmp" / name).write_bytes(b"half")
    assert spool.cleanup_temp() == 3
    assert list((tmp_path / ".tmp").iterdir()) == []
    assert spool.cleanup_temp() == 0
    assert (tmp_path / STUDY / SERIES / f"{SOP}.dcm").read_bytes() == b"kept"


def test_write_fsyncs_file_and_new_directory_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    spool = Spool(tmp_path)
    spool.write(STUDY, SERIES, SOP, b"one")
    # root (new study entry), study dir (new series entry), temp file, series dir (the file's entry)
    assert synced[:2] == [str(tmp_path), str(tmp_path / STUDY)]
    assert synced[2].startswith(str(tmp_path / ".tmp") + "/")
    assert synced[3:] == [str(tmp_path / STUDY / SERIES)]
    synced.clear()
    spool.write(STUDY, SERIES, "1.2.3", b"two")
    # Directories already durable: only the file and its directory entry.
    assert len(synced) == 2 and synced[1] == str(tmp_path / STUDY / SERIES)


def test_directory_removed_by_retention_comes_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.write(STUDY, SERIES, SOP, b"one")
    (tmp_path / STUDY / SERIES / f"{SOP}.dcm").unlink()
    (tmp_path / STUDY / SERIES).rmdir()
    (tmp_path / STUDY).rmdir()
    assert spool.write(STUDY, SERIES, SOP, b"late").read_bytes() == b"late"


class _FullDisk(io.FileIO):
    """A file whose writes stop half-way with ENOSPC, as on a full disk."""

    def write(self, data: Any) -> int:
        super().write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("target", ["fsync", "write"])
def test_disk_full_leaves_no_temp_and_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    spool = Spool(tmp_path)
    spool.write(STUDY, SERIES, SOP, b"old")

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if target == "fsync":
        monkeypatch.setattr(os, "fsync", full)
    else:
        # The spool opens its temp file with the builtin open(); a module global shadows it here.
        monkeypatch.setattr(spool_module, "open", lambda fd, mode: _FullDisk(fd, mode), raising=False)
    with pytest.raises(SpoolWriteError) as raised:
        spool.write(STUDY, SERIES, SOP, b"new" * 1000)
    with pytest.raises(SpoolWriteError):
        spool.write(STUDY, SERIES, "1.2.3", b"new")
    monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC
    assert "No space left" in str(raised.value) and SOP not in str(raised.value)
    assert list((tmp_path / ".tmp").iterdir()) == []
    assert (tmp_path / STUDY / SERIES / f"{SOP}.dcm").read_bytes() == b"old"
    assert not (tmp_path / STUDY / SERIES / "1.2.3.dcm").exists()


def test_replace_is_atomic_readers_see_old_or_new_never_partial(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    old, new = b"O" * (8 * 1024 * 1024), b"N" * (8 * 1024 * 1024)
    path = spool.write(STUDY, SERIES, SOP, old)
    seen: set[bytes] = set()
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            content = path.read_bytes()
            assert content in (old, new), "a reader saw a partial or mixed file"
            seen.add(content[:1])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(6):
            spool.write(STUDY, SERIES, SOP, new if i % 2 == 0 else old)
    finally:
        done.set()
        thread.join()
    assert path.read_bytes() == old and seen <= {b"O", b"N"}


def test_keep_first_never_clobbers(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.write(STUDY, SERIES, SOP, b"first", overwrite=False)
    with pytest.raises(AlreadyStoredError):
        spool.write(STUDY, SERIES, SOP, b"second", overwrite=False)
    assert (tmp_path / STUDY / SERIES / f"{SOP}.dcm").read_bytes() == b"first"
    assert list((tmp_path / ".tmp").iterdir()) == []


def _split_part10(path: str) -> tuple[pydicom.Dataset, bytes]:
    """The source's file meta and its dataset bytes exactly as stored (what a C-STORE carries)."""
    ds = pydicom.dcmread(path)
    raw = Path(path).read_bytes()
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return ds, raw[meta_end:]


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "image_dfl.dcm"])
def test_part10_bytes_reads_back_as_the_source_dataset(name: str) -> None:
    source = get_testdata_file(name, download=False)
    assert isinstance(source, str)
    ds, dataset_bytes = _split_part10(source)
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    data = part10_bytes(meta, dataset_bytes)
    assert data[:132] == b"\x00" * 128 + b"DICM" and data.endswith(dataset_bytes)
    assert "FileMetaInformationGroupLength" not in meta  # the caller's file meta is not modified
    back = pydicom.dcmread(io.BytesIO(data))
    assert back == ds
    assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert len(part10_header(meta)) == len(data) - len(dataset_bytes)


def test_part10_header_refuses_incomplete_file_meta() -> None:
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.2")
    with pytest.raises(ValueError, match="Transfer Syntax"):
        part10_header(meta)


def _reference_part10_header(file_meta: pydicom.dataset.FileMetaDataset) -> bytes:
    """part10_header as it was: pydicom's write_file_meta_info on a copy (the hand encoder must match it)."""
    meta = copy.deepcopy(file_meta)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + buffer.getvalue()


def _meta(**values: object) -> pydicom.dataset.FileMetaDataset:
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = SOP
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    for keyword, value in values.items():
        setattr(meta, keyword, value)
    return meta


_METAS = {
    "minimal": {},
    "odd-length uid": {"MediaStorageSOPInstanceUID": SOP + "1", "TransferSyntaxUID": "1.2.840.10008.1.2"},
    "a receiver's": {
        "ImplementationClassUID": "1.2.826.0.1.3680043.9.3811.2.1.0",
        "ImplementationVersionName": "PYNETDICOM_210",
        "SourceApplicationEntityTitle": "STORESCU",
    },
    "odd names": {"ImplementationVersionName": "NODE1", "SourceApplicationEntityTitle": "CT7"},
    "empty name": {"ImplementationVersionName": "", "ImplementationClassUID": ""},
    "version given": {"FileMetaInformationVersion": b"\x00\x01", "FileMetaInformationGroupLength": 999},
    "64-character uid": {"MediaStorageSOPInstanceUID": "1." + "2" * 62, "TransferSyntaxUID": "1.2.840.10008.1.2.4.50"},
    # Beyond the hand encoder: pydicom's writer gives the bytes.
    "65-character uid": {"MediaStorageSOPInstanceUID": "1." + "2" * 63},
    "long name": {"ImplementationVersionName": "X" * 17},
    "other version": {"FileMetaInformationVersion": b"\x00\x02"},
    "sending ae": {"SendingApplicationEntityTitle": "SCU"},
    "private information": {"PrivateInformationCreatorUID": "1.2.3", "PrivateInformation": b"ab"},
}


@pytest.mark.parametrize("name", list(_METAS))
def test_part10_header_is_byte_for_byte_pydicoms(name: str) -> None:
    meta = _meta(**_METAS[name])
    before = copy.deepcopy(meta)
    assert part10_header(meta) == _reference_part10_header(meta)
    assert meta == before  # not modified
    assert (part10_module._hand_header(meta) is not None) == (name in list(_METAS)[:7])  # which path wrote it


def test_part10_header_for_matches_the_file_meta_dataset_encoding() -> None:
    for sop in (SOP, SOP + "1", "1." + "2" * 62):
        for name, title in (("PYNETDICOM_210", "STORESCU"), ("NODE1", "CT7"), ("", "A")):
            meta = _meta(
                MediaStorageSOPInstanceUID=sop,
                ImplementationClassUID="1.2.826.0.1.3680043.9.3811.2.1.0",
                ImplementationVersionName=name,
                SourceApplicationEntityTitle=title,
            )
            built = part10_header_for(
                "1.2.840.10008.1.2.1", "1.2.840.10008.5.1.4.1.1.2", sop, "1.2.826.0.1.3680043.9.3811.2.1.0", name, title
            )
            assert built == part10_header(meta) == _reference_part10_header(meta)
    # None leaves the element out: pydicom reads the group back without it.
    built = part10_header_for("1.2.840.10008.1.2", "1.2.840.10008.5.1.4.1.1.2", SOP, "1.2.3.4", None, None)
    back = pydicom.dcmread(io.BytesIO(built + b"\x08\x00\x18\x00\x02\x00\x00\x001\x00"))
    assert "ImplementationVersionName" not in back.file_meta and "SourceApplicationEntityTitle" not in back.file_meta
    assert back.file_meta.FileMetaInformationGroupLength == len(built) - 144
    assert (back.file_meta.TransferSyntaxUID, back.file_meta.ImplementationClassUID) == ("1.2.840.10008.1.2", "1.2.3.4")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("1.2.840.10008.1.2", "1.2.3", "1." + "2" * 63, "1.2.3.4", None, None), "Media Storage SOP Instance UID"),
        (("", "1.2.3", SOP, "1.2.3.4", None, None), "Transfer Syntax UID"),
        (("1.2.840.10008.1.2", "1.2.٣", SOP, "1.2.3.4", None, None), "Media Storage SOP Class UID"),
        (("1.2.840.10008.1.2", "1.2.3", SOP, "", None, None), "Implementation Class UID"),
        (("1.2.840.10008.1.2", "1.2.3", SOP, "1.2.3.4", "X" * 17, None), "Implementation Version Name"),
        (("1.2.840.10008.1.2", "1.2.3", SOP, "1.2.3.4", None, "Ω"), "Source AE Title"),
    ],
)
def test_part10_header_for_refuses_what_it_cannot_write(arguments: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        part10_header_for(*arguments)


# -- index ---------------------------------------------------------------------------------------------


def test_index_is_wal_with_full_sync_and_a_schema_version(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    assert index.journal_mode() == "wal"
    index.close()
    db = sqlite3.connect(tmp_path / "index.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    assert db.execute("PRAGMA user_version").fetchone()[0] == 6  # schema 6: the carrying table
    # Schema 5: the completion timer's query reads the open studies through their own index.
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT study_instance_uid FROM studies WHERE completed_at IS NULL"
        " ORDER BY first_received_at"
    ).fetchall()
    assert "studies_open" in str(plan)
    db.close()
    Index(tmp_path / "index.db").close()  # reopening keeps the schema


def test_index_refuses_a_newer_schema(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "index.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(IndexDatabaseError, match="newer"):
        Index(tmp_path / "index.db")


def test_record_new_then_duplicates_counted_per_study(tmp_path: Path) -> None:
    clock = Clock(100.0)
    index = Index(tmp_path / "index.db", clock=clock)
    first = record(index, "1.1", size=10)
    assert first.new and not first.duplicate and not first.late
    clock.now = 101.0
    again = record(index, "1.1", size=99)
    assert again.duplicate
    kept = index.get("1.1")
    assert kept is not None and kept.size == 10
    record(index, "1.1", size=77, replace=True)
    row = index.get("1.1")
    assert row is not None and row.size == 77 and row.received_at == 101.0
    record(index, "2.1", study="9.9")
    assert index.duplicates(STUDY) == 2 and index.duplicates("9.9") == 0 and index.duplicates("nope") == 0
    assert index.get("3.3") is None


def test_queries_instances_summary_and_since(tmp_path: Path) -> None:
    clock = Clock(10.0)
    index = Index(tmp_path / "index.db", clock=clock)
    for i, series in enumerate(["1.2", "1.2", "1.3"]):
        clock.now = 10.0 + i
        record(index, f"5.{i}", series=series)
    clock.now = 50.0
    record(index, "6.0", study="2.2")
    record(index, "5.0")  # duplicate
    assert [i.sop_instance_uid for i in index.instances(STUDY)] == ["5.0", "5.1", "5.2"]
    assert [i.sop_instance_uid for i in index.instances(STUDY, "1.2")] == ["5.0", "5.1"]
    summary = index.study_summary(STUDY)
    assert summary is not None
    assert (summary.instances, summary.series, summary.duplicates) == (3, 2, 1)
    assert (summary.first_received_at, summary.last_received_at, summary.completed_at) == (10.0, 50.0, None)
    assert index.study_summary("7.7") is None
    assert set(index.studies_received_since(11.5)) == {STUDY, "2.2"}
    assert index.studies_received_since(51.0) == []
    assert len(index.all_instances()) == 4


def test_index_is_safe_from_many_threads(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    threads_n, per_thread = 8, 50
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            index.association_opened(f"a{t}")
            for i in range(per_thread):
                record(index, f"1.{t}.{i}", study=f"2.{t % 3}", association_id=f"a{t}")
                index.association_carried(f"a{t}", f"2.{t % 3}")
                index.quiet_studies(0.0, 1.0, 10.0)
            index.association_closed(f"a{t}")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(index.all_instances()) == threads_n * per_thread
    summaries = [index.study_summary(f"2.{s}") for s in range(3)]
    assert sum(s.instances for s in summaries if s is not None) == threads_n * per_thread


def test_quiet_studies_follow_associations_quiet_period_and_max_wait(tmp_path: Path) -> None:
    clock = Clock(0.0)
    index = Index(tmp_path / "index.db", clock=clock)
    index.association_opened("a")
    record(index, "1.1", study="7.1", association_id="a")
    index.association_carried("a", "7.1")
    assert index.open_associations("7.1") == 1
    clock.now = 100.0
    # Quiet for long enough, but the association that carries it is still open.
    assert index.quiet_studies(100.0, quiet_seconds=30, max_wait_seconds=600) == []
    index.association_closed("a")  # the quiet period starts at the release (t = 100)
    assert index.open_associations("7.1") == 0
    assert index.quiet_studies(110.0, 30, 600) == []
    assert index.quiet_studies(130.0, 30, 600) == ["7.1"]
    # New activity restarts the quiet period; touch never moves time backwards.
    index.touch_study("7.1", 140.0)
    index.touch_study("7.1", 5.0)
    assert index.quiet_studies(160.0, 30, 600) == []
    assert index.quiet_studies(170.0, 30, 600) == ["7.1"]
    # Max wait: an association that never ends cannot hold the study past the cap.
    index.association_opened("b")
    index.association_carried("b", "7.1")
    assert index.quiet_studies(599.0, 30, 600) == []
    assert index.quiet_studies(600.0, 30, 600) == ["7.1"]
    index.mark_complete("7.1", 600.0)
    assert index.quiet_studies(10_000.0, 30, 600) == []
    summary = index.study_summary("7.1")
    assert summary is not None and summary.completed_at == 600.0
    # A late instance is flagged so the caller can apply its late-instance policy.
    clock.now = 10_000.0
    assert record(index, "1.2", study="7.1").late
    # Reopened, the study gets a window of its own: quiet period again, max wait from the reopening.
    assert index.reopen_study("7.1", 10_000.0) and not index.reopen_study("7.1", 10_000.0)
    assert index.quiet_studies(10_010.0, 30, 600) == []
    index.association_carried("b", "7.1")  # still open: only the cap can end it
    assert index.quiet_studies(10_599.0, 30, 600) == []
    assert index.quiet_studies(10_600.0, 30, 600) == ["7.1"]


def test_a_version_1_index_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE instances (sop_instance_uid TEXT PRIMARY KEY, study_instance_uid TEXT, series_instance_uid"
        " TEXT, sop_class_uid TEXT, transfer_syntax_uid TEXT, path TEXT, size INTEGER, calling_ae TEXT,"
        " received_at REAL, association_id TEXT);"
        "CREATE TABLE studies (study_instance_uid TEXT PRIMARY KEY, first_received_at REAL NOT NULL,"
        " last_received_at REAL NOT NULL, last_activity_at REAL NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0,"
        " completed_at REAL); PRAGMA user_version = 1;"
    )
    db.close()
    index = Index(path, clock=Clock(0.0))
    record(index, "1.1", study="7.1")
    assert index.quiet_studies(100.0, 30, 600) == ["7.1"]
    assert index.journal_mode() == "wal"
    assert index.deletions() == []  # schema 4: retention's markers


def test_quiet_studies_survive_a_restart_without_stale_associations(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db", clock=Clock(0.0))
    index.association_opened("a")
    record(index, "1.1", study="7.1")
    index.association_carried("a", "7.1")
    index.close()
    # The process died with the association open; the new process does not wait for it.
    reopened = Index(tmp_path / "index.db", clock=Clock(50.0))
    assert reopened.quiet_studies(50.0, 30, 600) == ["7.1"]


def test_failed_commit_raises_a_store_error_and_records_nothing(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    record(index, "1.1")
    index._db.execute("PRAGMA query_only = ON")  # any write now fails inside the transaction
    with pytest.raises(IndexDatabaseError):
        record(index, "1.2")
    index._db.execute("PRAGMA query_only = OFF")
    assert index.get("1.2") is None and not index._db.in_transaction
    assert record(index, "1.2").new


# -- disk ----------------------------------------------------------------------------------------------


def test_free_mb_and_guard_caches_for_its_ttl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert free_mb(tmp_path) > 0
    calls: list[str] = []
    free = {"mb": 500.0}

    def fake_free(path: Path) -> float:
        calls.append(str(path))
        return free["mb"]

    monkeypatch.setattr("node.store.disk.free_mb", fake_free)
    clock = Clock(0.0)
    guard = DiskGuard(tmp_path, min_free_mb=100, clock=clock)
    assert guard.ok() and guard.ok() and len(calls) == 1
    free["mb"] = 50.0
    clock.now = 0.9
    assert guard.ok()  # cached
    clock.now = 1.0
    assert not guard.ok() and guard.last_free_mb == 50.0 and len(calls) == 2
    monkeypatch.undo()
    assert not DiskGuard(tmp_path / "missing", min_free_mb=1).ok()  # statvfs fails: no room


def test_spool_module_never_logs_uids_above_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger=spool_module.__name__)
    spool = Spool(tmp_path)
    spool.write(STUDY, SERIES, SOP, b"x")
    (tmp_path / ".tmp" / "x.part").write_bytes(b"")
    spool.cleanup_temp()
    assert all(SOP not in r.getMessage() for r in caplog.records if r.levelname != "DEBUG")


def test_a_rules_quiet_period_applies_to_its_study_and_the_shortest_wins(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db", clock=Clock(0.0))
    record(index, "1.1", study="7.1")
    record(index, "2.1", study="7.2")
    index.set_quiet_seconds("7.1", 60.0)
    index.set_quiet_seconds("7.1", 90.0)  # a longer one does not replace the shorter
    assert index.quiet_studies(30.0, quiet_seconds=30, max_wait_seconds=600) == ["7.2"]
    assert index.quiet_studies(60.0, 30, 600) == ["7.1", "7.2"]


def test_instances_after_feeds_new_rows_in_arrival_order(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db", clock=Clock(0.0))
    for sop in ("1.1", "1.2", "1.3"):
        record(index, sop, study="7.1")
    record(index, "1.2", study="7.1")  # a duplicate adds no row
    rows = index.instances_after(0)
    assert [i.sop_instance_uid for _, i in rows] == ["1.1", "1.2", "1.3"]
    assert [i.sop_instance_uid for _, i in index.instances_after(rows[0][0], limit=1)] == ["1.2"]
    assert index.instances_after(rows[-1][0]) == []


def test_a_version_3_index_is_rebuilt_with_rowids_that_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    db = sqlite3.connect(path)
    db.executescript(  # schema 3 as it was, with two rows (rowids 5 and 9: gaps are kept)
        "CREATE TABLE instances (sop_instance_uid TEXT PRIMARY KEY, study_instance_uid TEXT NOT NULL,"
        " series_instance_uid TEXT NOT NULL, sop_class_uid TEXT NOT NULL, transfer_syntax_uid TEXT NOT NULL,"
        " path TEXT NOT NULL, size INTEGER NOT NULL, calling_ae TEXT NOT NULL, received_at REAL NOT NULL,"
        " association_id TEXT NOT NULL, called_ae TEXT NOT NULL DEFAULT '', source_address TEXT NOT NULL DEFAULT '');"
        "CREATE INDEX instances_by_series ON instances (study_instance_uid, series_instance_uid);"
        "CREATE TABLE studies (study_instance_uid TEXT PRIMARY KEY, first_received_at REAL NOT NULL,"
        " last_received_at REAL NOT NULL, last_activity_at REAL NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0,"
        " completed_at REAL, watch_from REAL, quiet_seconds REAL);"
        "INSERT INTO instances (rowid, sop_instance_uid, study_instance_uid, series_instance_uid, sop_class_uid,"
        " transfer_syntax_uid, path, size, calling_ae, received_at, association_id, called_ae, source_address)"
        " VALUES (5, '1.1', '7.1', '8.1', '1.2', '1.2.1', '7.1/8.1/1.1.dcm', 10, 'A', 0, 'a', 'N', '::1');"
        "INSERT INTO studies VALUES ('7.1', 0, 0, 0, 0, 1, NULL, NULL);"
        "PRAGMA user_version = 3;"
    )
    db.execute(
        "INSERT INTO instances (rowid, sop_instance_uid, study_instance_uid, series_instance_uid, sop_class_uid,"
        " transfer_syntax_uid, path, size, calling_ae, received_at, association_id) VALUES"
        " (9, '1.2', '7.2', '8.2', '1.2', '1.2.1', '7.2/8.2/1.2.dcm', 10, 'A', 0, 'a')"
    )
    db.commit()
    db.close()
    index = Index(path, clock=Clock(100.0))
    assert [(rowid, row.sop_instance_uid, row.called_ae) for rowid, row in index.instances_after(0)] == [
        (5, "1.1", "N"),
        (9, "1.2", ""),
    ]
    assert record(index, "1.1", study="7.1").duplicate  # still unique per SOP Instance UID
    # The newest row deleted (retention), a new one never takes its rowid: the router's cursor stays right.
    record(index, "1.3", study="7.3")
    (newest,) = [rowid for rowid, row in index.instances_after(9) if row.sop_instance_uid == "1.3"]
    assert index.begin_deletion("7.3", reason="age", now=200.0, quiet_seconds=0) is None  # not complete
    index.mark_complete("7.3", 150.0)
    assert index.begin_deletion("7.3", reason="age", now=200.0, quiet_seconds=0) is not None
    assert index.end_deletion("7.3") == 1
    record(index, "1.4", study="7.4")
    (rowid,) = [rowid for rowid, _ in index.instances_after(9)]
    assert rowid > newest  # (a duplicate's ignored insert may use a number too: higher, never reused)
    index.close()
