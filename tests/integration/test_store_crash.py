"""Kill a process that stores instances (SIGKILL, random moment) and check what the next start finds.

Invariants after every kill: each indexed instance has its complete file (byte for byte); no ``.dcm`` in
the spool is partial; ``cleanup_temp`` removes the leftovers; the index opens (WAL recovery) and passes
``PRAGMA integrity_check``. SIGKILL tests process crashes; power loss is covered by the fsync order,
which this test cannot observe.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from node.store import Index, Spool

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 5

# Runs in the child, and is exec'd here to rebuild the expected bytes of instance n.
CHILD = r'''
import copy
import random
import sys
import threading
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from node.store import Index, Spool, part10_bytes

ROOT = "1.2.826.0.1.3680043.8.498.77"
SOURCE = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))


def uids(n):
    return f"{ROOT}.1.{n % 3}", f"{ROOT}.2.{n % 7}", f"{ROOT}.3.{n}"


def make(n):
    """Part-10 bytes of instance n: CT_small with its own UIDs and 64 KiB to 1 MiB of private payload."""
    study, series, sop = uids(n)
    rng = random.Random(n)
    ds = copy.deepcopy(SOURCE)  # never share a Dataset between threads: a shallow copy shares elements
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    payload = rng.randbytes(rng.randint(1 << 16, 1 << 20))
    ds.private_block(0x0009, "NODE CRASH TEST", create=True).add_new(0x01, "OB", payload)
    # A new file meta per call: elements copied from SOURCE would be shared between the threads.
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOURCE.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = SOURCE.file_meta.TransferSyntaxUID
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return part10_bytes(meta, buffer.getvalue())


def worker(spool, index, numbers):
    for n in numbers:
        study, series, sop = uids(n)
        data = make(n)
        spool.write(study, series, sop, data)  # replace policy: a resend rewrites the same bytes
        index.record(
            sop_instance_uid=sop, study_instance_uid=study, series_instance_uid=series,
            sop_class_uid=SOURCE.SOPClassUID, transfer_syntax_uid=SOURCE.file_meta.TransferSyntaxUID,
            path=spool.relative_path(study, series, sop), size=len(data), calling_ae="CRASHTEST",
            association_id=threading.current_thread().name, replace=True,
        )


if __name__ == "__main__":
    work, start = Path(sys.argv[1]), int(sys.argv[2])
    spool, index = Spool(work / "spool"), Index(work / "index.db")
    # Two "associations"; one in five stores is a resend of an earlier instance (a duplicate).
    plans = [[start + 2 * i + t if i % 5 else max(0, start - 3 * i - t) for i in range(100_000)] for t in (0, 1)]
    threads = [threading.Thread(target=worker, args=(spool, index, plan), daemon=True) for plan in plans]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    for thread in threads:
        thread.join()
'''


def _expected() -> Any:
    namespace: dict[str, Any] = {"__name__": "crash_child"}
    exec(compile(CHILD, "crash_child", "exec"), namespace)
    return namespace["make"]


def _sop_number(path: Path) -> int:
    return int(path.name.removesuffix(".dcm").rsplit(".", 1)[1])


def _wait_for_rows(db: Path, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
                try:
                    if conn.execute("SELECT count(*) FROM instances").fetchone()[0] >= count:
                        return
                finally:
                    conn.close()
            except sqlite3.OperationalError:
                pass  # schema not created yet, or busy: look again
        time.sleep(0.01)
    raise AssertionError(f"the child committed fewer than {count} instances in {timeout:.0f} s")


def test_sigkill_at_random_moments_leaves_spool_and_index_consistent(tmp_path: Path) -> None:
    make = _expected()
    rng = random.Random(20240611)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start, rows_seen, temps_removed = 0, 0, 0
    began = time.monotonic()
    for _round in range(ROUNDS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), str(start)],
            stdout=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        # Kill at a random moment once this round has committed something (a loaded machine can take
        # longer than any fixed delay to get the child going).
        _wait_for_rows(tmp_path / "index.db", rows_seen + 1)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL

        # What the next start-up does: clean temp files, open the index (WAL recovery).
        spool = Spool(tmp_path / "spool")
        temps_removed += spool.cleanup_temp()
        assert list((tmp_path / "spool" / ".tmp").iterdir()) == []
        index = Index(tmp_path / "index.db")
        rows = index.all_instances()
        index.close()
        check = sqlite3.connect(tmp_path / "index.db")
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        check.close()

        assert len(rows) > rows_seen, "the child made no progress in this round"
        rows_seen = len(rows)
        for row in rows:
            path = tmp_path / "spool" / row.path
            data = path.read_bytes()
            assert len(data) == row.size and data == make(_sop_number(path)), f"incomplete file {row.path}"
        indexed = {row.path for row in rows}
        files = [p for p in (tmp_path / "spool").rglob("*.dcm")]
        orphans = [p for p in files if str(p.relative_to(tmp_path / "spool")) not in indexed]
        # A file may precede its row (killed between rename and commit), but is complete all the same.
        assert len(orphans) <= 2 * (_round + 1)
        for path in orphans:
            assert path.read_bytes() == make(_sop_number(path)), f"partial orphan {path.name}"
        start = 1 + max(_sop_number(tmp_path / "spool" / row.path) for row in rows)
    # Bounded: five rounds of (start-up + up to 0.4 s of writing) plus checks.
    assert time.monotonic() - began < 60
