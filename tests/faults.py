"""Fault injection for ``pacs-node serve``: ``kill -9`` at chosen points and the zero-loss invariants (DESIGN §4).

Used by ``tests/e2e/test_faults.py`` (a bounded number of cycles in CI) and ``bench/soak.py`` (hundreds).

One :class:`FaultRun` holds one node (one data dir, restarted after every kill of serve; two receiver
processes, ``[receive] processes = 2``) and one Orthanc as the PACS. Each cycle sends a new small phantom
CT study from two pynetdicom SCUs at once (half the study each, on its own association) that record which
SOP Instance UIDs were answered with success, and kills one process at one point (:data:`KINDS`; the
journal points watch every receiver's journal):

=================  ========  ================================================================================
point              target    when the SIGKILL comes
=================  ========  ================================================================================
receive            serve     a random 0-3 ms after the k-th success status (k random): inside a C-STORE
receive            receiver  idem, the ``pacs-node receiver`` child holding a scanner's association alone;
                             serve replays its journal and starts a new one
spool-to-index     serve     as soon as inotify sees the k-th spool temp file created, closed after its fsync,
                             or unlinked after its link into the spool (before the index row is committed)
journal            serve     a random 0-3 ms after inotify sees the k-th write to the receive journal: after
                             the append and before its sync, or after the sync and before the answer
checkpoint         serve     as soon as a journal's checkpoint opens a new segment (before its syncfs)
                             or retires a covered one (after it)
replay             serve     killed at a journal write as above, then killed again while the restart
                             replays the journal (its first spool write), then restarted
analysis           worker    a random time into the worker's run of the study's ``analyse`` job
analysis           serve     idem, the whole tree (serve, worker, sender)
send               sender    while sends of the study are running (forwards, or the SEG + SR)
send               serve     idem, the whole tree
=================  ========  ================================================================================

A kill of serve kills its children too (as systemd's ``KillMode=mixed`` does when the main process dies),
then the node is restarted on the same data dir and the SCU sends again what got no success status.
A worker or sender killed alone is restarted by serve itself.

Checked after every cycle (after the restart, for serve): every acknowledged instance is indexed and its
spool file parses and holds that SOP Instance UID (the file of this cycle's study completely, pixel data
included); every index row has its file; ``spool/.tmp`` is empty after start-up. After the node has
settled (every study complete, no job queued or running): every indexed instance was forwarded to the PACS
and every result of every finished analysis is there, nothing else is (a second SEG or SR for a series is
a duplicate delivery); no job is dead; no running job holds an expired lease; no ``.tmp`` file is left in
the outbox. Orthanc runs a Lua ``OnStoredInstance`` hook that logs every C-STORE it gets, so a re-send of
an instance the PACS already had (the C-STORE in flight when the sender died: the PACS stored it, the job
was not yet marked done) is counted too; the PACS keeps one copy, so it is reported, not a duplicate.

Leases of dead processes: a job claimed by a worker or sender that was killed stays ``running`` until its
lease expires (``workers.lease_seconds``; a send's lease is ``2 * (acse + dimse) + network + 60`` s, over
a minute whatever the config). The node has no faster way to take it back. To keep cycles short, the run
moves the lease expiry of jobs whose owner process is gone to now (``skip_dead_leases``, on by default):
the node's own ``requeue_expired`` then takes them back, as it would after the lease. Every such job is
counted (``leases_fast_forwarded``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import random
import re
import select
import signal
import sqlite3
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from node.send.association import keep_stolen_responses
from node.synth.phantom import make_phantom
from tests.nodeproc import NodeProcess
from tests.peers import Orthanc, scanner_and_pacs

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR_3D = "1.2.840.10008.5.1.4.1.1.88.34"
SUCCESS = 0x0000
# The scanner's timeouts. pynetdicom's SCU does not notice that its peer died while it waits for a C-STORE
# response (its reactor is paused then): it waits for the DIMSE timeout. The node answers in milliseconds.
# Short, so that the scanner sends the rest well within the quiet period (3 s) after a kill of serve: see
# test_a_study_cut_by_a_crash_is_not_analysed_before_the_scanner_can_send_the_rest for a slower scanner.
SCANNER_S = 1.5

# (point, target) pairs; a run goes through them in a seeded random order, each equally often.
KINDS: tuple[tuple[str, str], ...] = (
    ("receive", "serve"),
    ("receive", "receiver"),
    ("spool-to-index", "serve"),
    ("journal", "serve"),
    ("checkpoint", "serve"),
    ("replay", "serve"),
    ("analysis", "worker"),
    ("analysis", "serve"),
    ("send", "sender"),
    ("send", "serve"),
)

_LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  print("STORED " .. tags["SOPInstanceUID"])
end
"""


# -- processes --------------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Child pids of ``pid``'s main thread (serve starts its worker and sender processes from it)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def role_pids(serve_pid: int, role: str) -> list[int]:
    """Pids of serve's children running ``pacs-node <role>`` (``worker`` or ``sender``)."""
    return [pid for pid in children(serve_pid) if role in cmdline(pid)[:8]]


RECEIVERS = 2  # [receive] processes of the node under test


def _tcp(port: int, state: str) -> set[str]:
    """Socket inodes on local ``port`` in TCP ``state`` (``01`` established, ``0A`` listening), from /proc."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                    inodes.add(fields[9])
    return inodes


def listening(port: int) -> int:
    """How many sockets listen on ``port`` (one per receiver process)."""
    return len(_tcp(port, "0A"))


def established(pid: int, port: int) -> int:
    """How many established TCP connections on local ``port`` ``pid`` holds (from /proc)."""
    inodes = _tcp(port, "01")
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return 0
    held = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            held += target.startswith("socket:[") and target[8:-1] in inodes
    return held


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped by its parent, is not alive)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and then its children (read before the kill: once it is dead they are init's)."""
    kids = children(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for kid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(kid, signal.SIGKILL)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (/proc/<pid>/stat utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- inotify ----------------------------------------------------------------------------------------------


class Inotify:
    """Linux inotify through ctypes (the standard library has none): enough to kill on a file event."""

    MODIFY = 0x002
    MOVED_FROM = 0x040
    MOVED_TO = 0x080
    CREATE = 0x100
    CLOSE_WRITE = 0x008
    DELETE = 0x200
    _EVENT = struct.Struct("iIII")

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")

    def watch(self, path: Path, mask: int) -> None:
        if self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path} failed")

    def events(self, timeout: float) -> list[tuple[int, str]]:
        """``(mask, name)`` of the events that arrive within ``timeout`` seconds (at least one, or none)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        found, offset = [], 0
        while offset < len(data):
            _, mask, _, size = self._EVENT.unpack_from(data, offset)
            offset += self._EVENT.size
            found.append((mask, data[offset : offset + size].rstrip(b"\0").decode(errors="replace")))
            offset += size
        return found

    def close(self) -> None:
        os.close(self.fd)


# -- the scanner ------------------------------------------------------------------------------------------


def send_files(
    files: Iterable[Path],
    port: int,
    *,
    on_status: Callable[[Path, int | None], None] | None = None,
    timeout: float = 10.0,
    contexts: Iterable[str] = (CTImageStorage,),
) -> dict[Path, int | None]:
    """The scanner: one association (pynetdicom SCU, AE ``STORESCU`` to ``PACSNODE``), every file in order.

    Returns each file's C-STORE status (``None``: no response, e.g. the node died); files after the
    association ended are absent. ``on_status`` is called after each response, on this thread.
    """
    ae = AE(ae_title="STORESCU")
    for context in contexts:
        ae.add_requested_context(context)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    statuses: dict[Path, int | None] = {}
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
        if not assoc.is_established:
            return statuses
        keep_stolen_responses(assoc)  # else a fast answer is now and then lost to pynetdicom's reactor
        try:
            for path in files:
                if not assoc.is_established:
                    break
                answer = assoc.send_c_store(path)
                status = int(answer.Status) if "Status" in answer else None
                statuses[path] = status
                if on_status is not None:
                    on_status(path, status)
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        ae.shutdown()
    return statuses


# -- the data dir -----------------------------------------------------------------------------------------


def _db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=30)


def index_rows(data_dir: Path) -> dict[str, tuple[str, str, str]]:
    """SOP Instance UID -> (study, series, spool path) of every indexed instance."""
    with contextlib.closing(_db(data_dir / "index.sqlite3")) as db:
        rows = db.execute("SELECT sop_instance_uid, study_instance_uid, series_instance_uid, path FROM instances")
        return {sop: (study, series, path) for sop, study, series, path in rows}


def spool_files(data_dir: Path) -> set[str]:
    """Paths (relative to the spool) of every stored ``.dcm`` file."""
    spool = data_dir / "spool"
    return {str(p.relative_to(spool)) for p in spool.glob("*/*/*.dcm")}


def temp_files(data_dir: Path) -> list[Path]:
    """What ``spool/.tmp`` holds (writes in progress, or left by a crash before start-up cleanup)."""
    folder = data_dir / "spool" / ".tmp"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def outbox_temp_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "outbox").rglob("*.tmp"))


def jobs(data_dir: Path, where: str = "1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of the job store as dicts (payload decoded)."""
    path = data_dir / "jobs.sqlite3"
    if not path.exists():
        return []
    with contextlib.closing(_db(path)) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY id", params)]
    for row in rows:
        row["payload"] = json.loads(row["payload"])
    return rows


def incomplete_studies(data_dir: Path) -> list[str]:
    with contextlib.closing(_db(data_dir / "index.sqlite3")) as db:
        return [r[0] for r in db.execute("SELECT study_instance_uid FROM studies WHERE completed_at IS NULL")]


_OWNER_PID = (re.compile(r"^sender-(\d+)-"), re.compile(r"^worker-.*-(\d+)$"))


def owner_pid(owner: str | None) -> int | None:
    for pattern in _OWNER_PID:
        match = pattern.match(owner or "")
        if match:
            return int(match.group(1))
    return None


def expire_dead_leases(data_dir: Path) -> list[tuple[int, int]]:
    """Move the lease expiry of running jobs whose owner process is gone to now; return (id, attempt) of each.

    Stands for waiting out the lease (see the module docstring): the node's ``requeue_expired`` then
    takes the jobs back. Jobs of live owners are never touched.
    """
    path = data_dir / "jobs.sqlite3"
    if not path.exists():
        return []
    with contextlib.closing(_db(path)) as db:
        rows = db.execute("SELECT id, attempts, lease_owner FROM jobs WHERE state = 'running'").fetchall()
        dead = [
            (job, attempt) for job, attempt, owner in rows if (pid := owner_pid(owner)) is not None and not alive(pid)
        ]
        if dead:
            marks = ",".join("?" * len(dead))
            with db:
                db.execute(
                    f"UPDATE jobs SET lease_expires = ? WHERE state = 'running' AND id IN ({marks})",
                    (time.time() - 1, *(job for job, _ in dead)),
                )
    return dead


def acked_problems(data_dir: Path, acked: Mapping[str, str], deep: Iterable[str] = ()) -> list[str]:
    """Why acknowledged instances are not safe: not indexed, file missing, unparseable, wrong UID.

    ``acked`` maps SOP Instance UID -> Study Instance UID. Every one must be indexed with its file in
    the spool; those in ``deep`` are read completely (pixel data included) and their UID compared.
    """
    rows = index_rows(data_dir)
    spool = data_dir / "spool"
    problems = []
    deep = set(deep)
    for sop in acked:
        row = rows.get(sop)
        if row is None:
            problems.append(f"{sop}: acknowledged but not in the index")
            continue
        path = spool / row[2]
        if not path.is_file():
            problems.append(f"{sop}: indexed but its spool file {row[2]} is missing")
            continue
        if sop in deep:
            try:
                ds = dcmread(path)
                pixels = len(ds.PixelData)
                expected = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
            except Exception as exc:  # any parse failure is the finding
                problems.append(f"{sop}: spool file does not parse: {type(exc).__name__}: {exc}")
                continue
            if str(ds.SOPInstanceUID) != sop:
                problems.append(f"{sop}: spool file holds {ds.SOPInstanceUID}")
            if pixels != expected:
                problems.append(f"{sop}: pixel data {pixels} bytes, expected {expected}")
    return problems


def index_without_file(data_dir: Path) -> list[str]:
    files = spool_files(data_dir)
    return sorted(sop for sop, (_, _, path) in index_rows(data_dir).items() if path not in files)


def files_without_index(data_dir: Path) -> list[str]:
    indexed = {path for _, _, path in index_rows(data_dir).values()}
    return sorted(spool_files(data_dir) - indexed)


# -- the PACS ---------------------------------------------------------------------------------------------


def counting_orthanc(directory: Path, **kwargs: Any) -> Orthanc:
    """An :class:`Orthanc` whose log gets a ``STORED <SOP Instance UID>`` line for every C-STORE it takes."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "count-stores.lua"
    script.write_text(_LUA, encoding="utf-8")
    config = {"LuaScripts": [str(script)], **kwargs.pop("config", {})}
    return Orthanc(directory, config=config, graceful_exit=False, **kwargs)


def stores_seen(pacs: Orthanc) -> Counter[str]:
    """C-STOREs the PACS took, per SOP Instance UID (from the Lua hook's log lines)."""
    text = pacs.log_path.read_text(errors="replace") if pacs.log_path.exists() else ""
    return Counter(m.group(1) for m in re.finditer(r"Lua says: STORED ([0-9.]+)", text))


def pacs_counts(pacs: Orthanc, study: str) -> tuple[list[tuple[str, str]], Counter[str]]:
    """Every instance of ``study`` in the PACS as (SOP Instance UID, SOP Class UID), and the count per UID."""
    found = []
    for item in pacs.find_instances(study):
        sop = item["MainDicomTags"]["SOPInstanceUID"]
        found.append((sop, pacs.metadata(item["ID"])["SopClassUid"]))
    return found, Counter(sop for sop, _ in found)


# -- a run of cycles --------------------------------------------------------------------------------------


def fault_config(
    pacs: Orthanc,
    *,
    quiet_s: float = 3.0,
    lease_s: float = 30.0,
    retry_initial_s: float = 1.0,
    retry_max_s: float = 2.0,
    min_free_disk_mb: int = 0,
    receivers: int = 2,
) -> str:
    """Every CT instance forwarded to the PACS as it arrives; each series analysed, SEG + SR to the PACS."""
    return f"""
[receive]
processes = {receivers}
[limits]
min_free_disk_mb = {min_free_disk_mb}
acse_timeout_s = 5
dimse_timeout_s = 10
network_timeout_s = 10
drain_timeout_s = 10
[completion]
quiet_seconds = {quiet_s}
max_wait_seconds = 300
[workers]
count = 1
threads = 1
lease_seconds = {lease_s}
[sender]
retry_initial_s = {retry_initial_s}
retry_max_s = {retry_max_s}
[analysis]
send_results_to = ["pacs"]
[[rules]]
name = "ct-to-pacs"
level = "instance"
when = {{ attribute = "Modality", equals = "CT" }}
forward = ["pacs"]
[[rules]]
name = "nodules"
level = "series"
when = {{ attribute = "Modality", equals = "CT" }}
analyse = ["lung-nodule-ct"]
results_to = ["pacs"]
{scanner_and_pacs(pacs)}"""


@dataclass
class Study:
    uid: str
    series: str
    files: list[Path]
    sop_of: dict[Path, str]


@dataclass
class Tally:
    """What a run did and found; ``lost`` and ``duplicates`` must be 0 and ``problems`` empty."""

    seed: int
    cycles: int = 0
    kills: dict[str, int] = field(default_factory=dict)  # "point/target" -> kills
    hits: dict[str, int] = field(default_factory=dict)  # "point/target" -> kills that landed in the phase
    acknowledged: int = 0  # distinct SOP Instance UIDs the scanner got a success status for
    not_acknowledged_at_kill: int = 0  # C-STOREs without success because of a kill (sent again after restart)
    lost: int = 0  # acknowledged but not durable, or never delivered to the PACS
    duplicates: int = 0  # objects at the PACS beyond one per expected UID (e.g. a second SEG for a series)
    resends: int = 0  # C-STOREs of a UID the PACS already had (in flight at a kill; the PACS keeps one)
    temp_files_after_kill: int = 0  # spool/.tmp entries a kill left (start-up must remove them)
    spool_not_indexed_after_kill: int = 0  # files renamed into the spool whose index row was not committed
    leases_fast_forwarded: int = 0
    studies: int = 0
    results_expected: int = 0
    forwards_expected: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def count(self, table: dict[str, int], key: str, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n

    def summary(self) -> str:
        return (
            f"seed {self.seed}: {self.cycles} cycles in {self.seconds:.0f} s, "
            f"{self.acknowledged} instances acknowledged, "
            f"{self.lost} lost, {self.duplicates} duplicate deliveries, {self.resends} re-sends of a delivered UID, "
            f"{self.not_acknowledged_at_kill} unacknowledged at a kill (sent again), "
            f"{self.temp_files_after_kill} temp files and {self.spool_not_indexed_after_kill} unindexed spool files "
            f"after kills (cleaned / indexed on the re-send), {self.leases_fast_forwarded} dead leases fast-forwarded; "
            f"kills {json.dumps(self.kills, sort_keys=True)}, in the phase {json.dumps(self.hits, sort_keys=True)}; "
            f"{len(self.problems)} problems"
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", encoding="utf-8")


class FaultRun:
    """One node and one PACS, killed and restarted cycle after cycle; see the module docstring.

    Parameters
    ----------
    directory
        Holds the node (``node/``: config, data, serve.log), the PACS (``pacs/``) and the studies.
    seed
        Seeds every choice (kinds, kill points, delays) and the phantoms.
    say
        Prints a line (per cycle, and the summary).
    slices, size
        Of each cycle's phantom series (the model needs at least 10 slices).
    """

    def __init__(
        self,
        directory: Path,
        seed: int,
        *,
        say: Callable[[str], None] = print,
        slices: int = 12,
        size: int = 128,
        skip_dead_leases: bool = True,
    ) -> None:
        self.dir = directory
        self.seed = seed
        self.rng = random.Random(seed)
        self.say = say
        self.slices = slices
        self.size = size
        self.skip_dead_leases = skip_dead_leases
        self.tally = Tally(seed)
        self.acked: dict[str, str] = {}  # SOP Instance UID -> study
        self.studies: dict[str, Study] = {}
        self.pacs = counting_orthanc(directory / "pacs")
        self.node: NodeProcess | None = None
        self._order: list[tuple[str, str]] = []
        self._fast_forwarded: set[tuple[int, int]] = set()
        self._analysis_s = 1.0  # about what the worker takes for one 12-slice 128 x 128 series here
        self._started = time.monotonic()

    # lifecycle

    def __enter__(self) -> FaultRun:
        self.pacs.__enter__()
        self.node = NodeProcess(self.dir / "node", fault_config(self.pacs, receivers=RECEIVERS))
        self.start_node()
        return self

    def start_node(self) -> None:
        """Start serve and wait until every receiver process listens (else the scanners all reach serve's)."""
        assert self.node is not None
        self.node.start()
        end = time.monotonic() + 30
        while listening(self.node.port) < RECEIVERS and time.monotonic() < end:
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        try:
            if self.node is not None:
                with contextlib.suppress(Exception):
                    self.node.stop(timeout=30)
                self.node.kill()
                if self.node.proc is not None:
                    for pid in children(self.node.proc.pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
        finally:
            self.pacs.__exit__(None, None, None)

    @property
    def data_dir(self) -> Path:
        assert self.node is not None
        return self.node.data_dir

    @property
    def serve_pid(self) -> int:
        assert self.node is not None and self.node.proc is not None
        return self.node.proc.pid

    def serve_alive(self) -> bool:
        return self.node is not None and self.node.proc is not None and self.node.proc.poll() is None

    def kill_serve(self) -> None:
        """SIGKILL serve and its children, then reap serve."""
        assert self.node is not None and self.node.proc is not None
        kill_tree(self.node.proc.pid)
        self.node.proc.wait()

    def restart(self) -> None:
        """Start serve again on the same data dir; check that start-up emptied ``spool/.tmp``."""
        assert self.node is not None
        self.expire_dead_leases()
        self.start_node()
        left = temp_files(self.data_dir)
        if left:
            self.problem(f"{len(left)} temp files in spool/.tmp after start-up: {[p.name for p in left]}")

    def expire_dead_leases(self) -> None:
        """:func:`expire_dead_leases` when ``skip_dead_leases``; counts each (job, attempt) once."""
        if self.skip_dead_leases:
            self._fast_forwarded.update(expire_dead_leases(self.data_dir))
            self.tally.leases_fast_forwarded = len(self._fast_forwarded)

    def problem(self, text: str) -> None:
        self.tally.problems.append(f"cycle {self.tally.cycles}: {text}")
        self.say(f"  PROBLEM: {text}")

    # studies

    def new_study(self, n: int) -> Study:
        folder = self.dir / "studies" / f"{n:04d}"
        phantom = make_phantom(self.seed * 10_000 + n, slices=self.slices, rows=self.size, columns=self.size)
        phantom.write_dicom(folder)
        files = sorted(folder.iterdir())
        headers = {p: dcmread(p, stop_before_pixels=True) for p in files}
        first = headers[files[0]]
        study = Study(
            str(first.StudyInstanceUID),
            str(first.SeriesInstanceUID),
            files,
            {p: str(ds.SOPInstanceUID) for p, ds in headers.items()},
        )
        self.studies[study.uid] = study
        return study

    def record(self, study: Study, statuses: Mapping[Path, int | None]) -> list[Path]:
        """Note the successes; return the study's files that have none yet."""
        for path, status in statuses.items():
            if status == SUCCESS:
                self.acked[study.sop_of[path]] = study.uid
        return [p for p in study.files if study.sop_of[p] not in self.acked]

    def send_rest(self, study: Study) -> None:
        """After a restart, send what got no success status (a scanner retries its failures)."""
        for _ in range(3):
            rest = [p for p in study.files if study.sop_of[p] not in self.acked]
            if not rest:
                return
            assert self.node is not None
            statuses = send_files(rest, self.node.port, timeout=SCANNER_S)
            self.record(study, statuses)
            refused = {f"0x{s:04X}" if s is not None else "none" for s in statuses.values() if s != SUCCESS}
            if refused:
                self.say(f"  re-send answered {sorted(refused)}")
        self.problem(f"{len(rest)} instances still without success after 3 re-sends")

    # job store polling

    def _analyse_job(self, study: Study) -> dict[str, Any] | None:
        found = jobs(self.data_dir, "kind = 'analyse' AND payload LIKE ?", (f'%"study":"{study.uid}"%',))
        return found[-1] if found else None

    def _running_sends(self, study: Study, results_only: bool = False) -> list[dict[str, Any]]:
        pattern = f"%outbox/%{study.series}/%" if results_only else f"%{study.series}%"
        return jobs(self.data_dir, "state = 'running' AND kind LIKE 'send:%' AND payload LIKE ?", (pattern,))

    def _wait(self, predicate: Callable[[], Any], timeout: float, interval: float, what: str) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = predicate()
            if value:
                return value
            self.expire_dead_leases()
            time.sleep(interval)
        self.problem(f"waited {timeout:.0f} s for {what}")
        return None

    # cycles

    def run(self, cycles: int) -> Tally:
        for n in range(1, cycles + 1):
            if not self._order:
                self._order = list(KINDS)
                self.rng.shuffle(self._order)
            self.cycle(n, *self._order.pop())
        self.settle()
        self.check_pacs()
        self.tally.seconds = time.monotonic() - self._started
        self.say(self.tally.summary())
        return self.tally

    def cycle(self, n: int, point: str, target: str) -> None:
        began = time.monotonic()
        self.tally.cycles = n
        key = f"{point}/{target}"
        study = self.new_study(n)
        if not self.serve_alive():
            self.restart()
        assert self.node is not None
        statuses: dict[Path, int | None] = {}
        acks = threading.Semaphore(0)

        def scanner() -> None:
            # Two scanners at once, each with half the study on its own association (several receiver
            # processes share them out).
            port = self.node.port  # type: ignore[union-attr]
            halves = [study.files[0::2], study.files[1::2]]

            def send(files: list[Path]) -> None:
                result = send_files(files, port, on_status=lambda _, s: acks.release(), timeout=SCANNER_S)
                statuses.update(result)

            threads = [threading.Thread(target=send, args=(h,), name="scanner-half") for h in halves]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        thread = threading.Thread(target=scanner, name="scanner")
        note = ""
        hit = False
        if point == "receive":
            k = self.rng.randint(1, len(study.files) - 1)
            delay = self.rng.uniform(0.0, 0.003)
            thread.start()
            for _ in range(k):
                acks.acquire(timeout=30)
            time.sleep(delay)
            hit = thread.is_alive()
            note = f"after {k} successes + {delay * 1000:.1f} ms"
            if target == "serve":
                self.kill_serve()
            else:
                hit, which = self._kill_receiver()
                hit = hit and thread.is_alive()
                note += f" ({which})"
        elif point == "spool-to-index":
            hit, note = self._kill_on_spool_event(study, thread)
        elif point in ("journal", "replay"):
            hit, note = self._kill_on_journal_write(study, thread)
        elif point == "checkpoint":
            hit, note = self._kill_on_checkpoint(thread)
        elif point == "analysis":
            thread.start()
            thread.join()
            job = self._wait(
                lambda: (j := self._analyse_job(study)) and j["state"] in ("running", "done") and j,
                90,
                0.02,
                "the study's analysis to start",
            )
            delay = self.rng.uniform(0.0, self._analysis_s)
            time.sleep(delay)
            hit, note = self._kill_analysis(study, target, job, delay)
        else:  # send
            thread.start()
            hit, note = self._kill_send(study, target, thread)
        thread.join()
        missing = self.record(study, statuses)
        serve_killed = target == "serve"
        if serve_killed:
            self.tally.not_acknowledged_at_kill += len(missing)
            if point == "replay":
                replayed, replay_note = self._kill_during_replay()
                hit = hit and replayed
                note += f"; {replay_note}"
            temps, orphans, seconds = self._after_serve_kill(study)
            note += f"; left {temps} temp, {orphans} unindexed; restart {seconds:.1f} s"
        else:
            time.sleep(0.05)  # serve reaps its dead child within 0.5 s; until then it is a zombie (not alive)
            self.expire_dead_leases()
        self.send_rest(study)
        self.check_durable(study)
        self.tally.count(self.tally.kills, key)
        if hit:
            self.tally.count(self.tally.hits, key)
        self.say(
            f"cycle {n:3d}  kill {target:<6} at {point:<14} {'hit ' if hit else 'miss'}  {note:<80} "
            f"acked {len(self.acked):5d}  {time.monotonic() - began:5.1f} s"
        )

    def _kill_receiver(self) -> tuple[bool, str]:
        """SIGKILL the receiver child holding one of the scanners' associations (an idle one if both are on
        serve's own receiver: then not a hit). Serve replays its journal and starts a new one."""
        assert self.node is not None
        kids = role_pids(self.serve_pid, "receiver")
        if not kids:
            return False, "no receiver child"
        holding = [pid for pid in kids if established(pid, self.node.port)]
        victim = holding[0] if holding else self.rng.choice(kids)
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        return bool(holding), "killed the receiver holding a scanner" if holding else "scanners on serve: idle one"

    def _journal_folders(self) -> list[Path]:
        """serve's journal folder and every receiver child's (``journal/p<pid>``)."""
        root = self.data_dir / "journal"
        return [root, *sorted(p for p in root.glob("p*") if p.is_dir())]

    def _kill_on_spool_event(self, study: Study, thread: threading.Thread) -> tuple[bool, str]:
        """Kill serve on the k-th create / close-after-fsync / unlink-after-link of a spool temp file."""
        names = {Inotify.CREATE: "temp created", Inotify.CLOSE_WRITE: "temp fsynced", Inotify.DELETE: "linked"}
        mask = self.rng.choice(list(names))
        k = self.rng.randint(1, len(study.files) - 1)
        watcher = Inotify()
        fired = threading.Event()
        try:
            watcher.watch(self.data_dir / "spool" / ".tmp", mask)
            serve = self.serve_pid
            thread.start()
            seen = 0
            end = time.monotonic() + 30
            while not fired.is_set() and time.monotonic() < end and (thread.is_alive() or seen < k):
                for event_mask, _ in watcher.events(0.2):
                    if event_mask & mask:
                        seen += 1
                        if seen == k:
                            kill_tree(serve)
                            fired.set()
                            break
        finally:
            watcher.close()
        if not fired.is_set():
            self.kill_serve()
            return False, f"{names[mask]} #{k} never seen"
        assert self.node is not None and self.node.proc is not None
        self.node.proc.wait()
        return True, f"on {names[mask]} #{k}"

    def _kill_on_journal_write(self, study: Study, thread: threading.Thread) -> tuple[bool, str]:
        """Kill serve a random 0-3 ms after the k-th write to a journal segment (append, then its sync)."""
        k = self.rng.randint(1, len(study.files) - 1)
        delay = self.rng.uniform(0.0, 0.003)
        fired = self._kill_on_events(self._journal_folders(), Inotify.MODIFY, k, thread, delay)
        return fired, f"journal write #{k} + {delay * 1000:.1f} ms" + ("" if fired else " never seen")

    def _kill_on_checkpoint(self, thread: threading.Thread) -> tuple[bool, str]:
        """Kill serve when a checkpoint opens a new journal segment (before its syncfs: created, or a spare
        renamed) or retires one (after it: deleted, or renamed to a spare)."""
        opened = self.rng.random() < 0.5
        mask = Inotify.CREATE | Inotify.MOVED_TO if opened else Inotify.DELETE | Inotify.MOVED_FROM
        fired = self._kill_on_events(self._journal_folders(), mask, 1, thread, 0.0)
        what = "new segment" if opened else "segment retired"
        return fired, f"checkpoint: {what}" + ("" if fired else " never seen")

    def _kill_on_events(self, folders: list[Path], mask: int, k: int, thread: threading.Thread, delay: float) -> bool:
        """Start the scanner, kill serve ``delay`` s after the k-th ``mask`` event on a journal segment
        (``*.jnl``) in ``folders``; reap serve.

        Returns whether the event came (else serve is killed when the scanner is done).
        """
        watcher = Inotify()
        fired = False
        try:
            for folder in folders:
                watcher.watch(folder, mask)
            serve = self.serve_pid
            thread.start()
            seen = 0
            end = time.monotonic() + 30
            while not fired and time.monotonic() < end and (thread.is_alive() or seen < k):
                for event_mask, name in watcher.events(0.2):
                    if event_mask & mask and name.endswith(".jnl"):
                        seen += 1
                        if seen == k:
                            time.sleep(delay)
                            kill_tree(serve)
                            fired = True
                            break
        finally:
            watcher.close()
        if not fired:
            self.kill_serve()
            return False
        assert self.node is not None and self.node.proc is not None
        self.node.proc.wait()
        return True

    def _kill_during_replay(self) -> tuple[bool, str]:
        """Start serve and kill it at its first spool write during start-up (the journal's replay)."""
        assert self.node is not None
        node = self.node
        watcher = Inotify()
        failed: list[BaseException] = []

        def start() -> None:
            try:
                node.start()
            except RuntimeError as exc:  # it exits by our SIGKILL: expected
                failed.append(exc)

        try:
            watcher.watch(self.data_dir / "spool" / ".tmp", Inotify.CREATE)
            starter = threading.Thread(target=start, name="start-for-replay")
            starter.start()
            fired = False
            end = time.monotonic() + 20
            while starter.is_alive() and time.monotonic() < end and not fired:
                if watcher.events(0.05) and node.proc is not None:
                    kill_tree(node.proc.pid)
                    fired = True
            starter.join()
        finally:
            watcher.close()
        if node.proc is not None and node.proc.poll() is None:
            self.kill_serve()  # nothing to replay: it started; stop it so the restart starts it again
        elif node.proc is not None:
            node.proc.wait()
        return fired, "killed in replay" if fired else "nothing replayed"

    def _kill_analysis(self, study: Study, target: str, job: dict[str, Any] | None, delay: float) -> tuple[bool, str]:
        if target == "serve":
            self.kill_serve()
        else:
            for pid in role_pids(self.serve_pid, "worker"):
                os.kill(pid, signal.SIGKILL)
        after = self._analyse_job(study)
        hit = bool(after and after["state"] == "running")
        return hit, f"{delay * 1000:.0f} ms into attempt {after['attempts'] if after else '?'}"

    def _kill_send(self, study: Study, target: str, thread: threading.Thread) -> tuple[bool, str]:
        results = self.rng.random() < 0.5
        if results:
            thread.join()
            self._wait(
                lambda: (j := self._analyse_job(study)) and j["state"] == "done",
                90,
                0.01,
                "the study's analysis to finish",
            )
        phase = "results" if results else "forwards"
        end = time.monotonic() + 10
        running: list[dict[str, Any]] = []
        while time.monotonic() < end and not running:
            running = self._running_sends(study, results_only=results)
            if not running:
                time.sleep(0.002)
        delay = self.rng.uniform(0.0, 0.01)
        time.sleep(delay)
        sender = role_pids(self.serve_pid, "sender")
        if target == "serve":
            self.kill_serve()
        else:
            for pid in sender:
                os.kill(pid, signal.SIGKILL)
        owners = {f"sender-{pid}-" for pid in sender}
        stranded = [
            j
            for j in self._running_sends(study, results_only=results)
            if any(str(j["lease_owner"]).startswith(o) for o in owners)
        ]
        return bool(stranded), f"{phase}: {len(stranded)} sends in flight"

    def _after_serve_kill(self, study: Study) -> tuple[int, int, float]:
        """Before the restart: what the crash left (acknowledged instances must already be safe); restart.

        Returns the temp files and the unindexed spool files the kill left, and the restart's seconds.
        """
        left = len(temp_files(self.data_dir))
        self.tally.temp_files_after_kill += left
        orphans = len(files_without_index(self.data_dir))
        self.tally.spool_not_indexed_after_kill += orphans
        for problem in acked_problems(self.data_dir, {s: study.uid for s in study.sop_of.values() if s in self.acked}):
            self.problem(f"before restart: {problem}")
        began = time.monotonic()
        self.restart()
        return left, orphans, time.monotonic() - began

    def check_durable(self, study: Study) -> None:
        """Every acknowledged instance indexed with its file; this study's files read completely."""
        lost = acked_problems(self.data_dir, self.acked, deep=study.sop_of.values())
        for problem in lost:
            self.problem(problem)
        self.tally.lost += len(lost)
        for sop in index_without_file(self.data_dir):
            self.problem(f"{sop}: index row without its spool file")
        self.tally.acknowledged = len(self.acked)

    # settling and the PACS

    def settle(self, timeout: float = 240.0) -> None:
        """Wait until every study is complete and no job is queued or running (twice, 1.5 s apart)."""
        if not self.serve_alive():
            self.restart()
        calm = 0

        def settled() -> bool:
            nonlocal calm
            busy = jobs(self.data_dir, "state IN ('queued', 'running')")
            if busy or incomplete_studies(self.data_dir):
                calm = 0
                return False
            calm += 1
            return calm >= 2

        self._wait(settled, timeout, 1.5, "the node to settle")

    def check_pacs(self) -> None:
        """Every indexed instance forwarded, every finished analysis's results delivered, nothing twice."""
        data = self.data_dir
        for job in jobs(data, "state = 'dead'"):
            self.problem(f"job {job['id']} {job['kind']} is dead: {job['last_error']}")
        now = time.time()
        for job in jobs(data, "state = 'running' AND lease_expires < ?", (now,)):
            self.problem(f"job {job['id']} {job['kind']} running with an expired lease")
        for path in outbox_temp_files(data):
            self.problem(f"temp file left in the outbox: {path.relative_to(data)}")
        for path in temp_files(data):
            self.problem(f"temp file left in spool/.tmp: {path.name}")
        for rel in files_without_index(data):
            self.problem(f"spool file without an index row: {rel}")
        rows = index_rows(data)
        analyses = jobs(data, "kind = 'analyse' AND state = 'done'")
        seen = stores_seen(self.pacs)
        self.tally.studies = len(self.studies)
        for uid in self.studies:
            sources = {sop for sop, (study, _, _) in rows.items() if study == uid}
            results: dict[str, str] = {}
            study_jobs = [j for j in analyses if j["payload"]["study"] == uid]
            if len(study_jobs) != 1:
                self.problem(f"study {uid}: {len(study_jobs)} finished analyses (one expected)")
            for job in study_jobs:
                manifest = json.loads((data / "outbox" / f"analyse-{job['id']}" / "manifest.json").read_text())
                classes = Counter(f["sop_class_uid"] for f in manifest["files"])
                analysed = sum(1 for outcome in manifest["series"].values() if outcome.startswith("priority"))
                if classes != Counter({SEG: analysed, SR_3D: analysed}):
                    self.problem(f"study {uid}: analysis {job['id']} made {dict(classes)} for {analysed} series")
                results.update({f["sop_instance_uid"]: f["sop_class_uid"] for f in manifest["files"]})
            found, per_uid = pacs_counts(self.pacs, uid)
            at_pacs = {sop: cls for sop, cls in found}
            missing = (sources | set(results)) - set(at_pacs)
            extra = [sop for sop in at_pacs if sop not in sources and sop not in results]
            twice = sum(n - 1 for n in per_uid.values() if n > 1)
            if missing:
                self.problem(f"study {uid}: {len(missing)} instances never reached the PACS")
            if extra or twice:
                kinds = Counter(at_pacs[s] for s in extra)
                self.problem(f"study {uid}: unexpected at the PACS: {dict(kinds)}, {twice} stored twice")
            self.tally.lost += len(missing)
            self.tally.duplicates += len(extra) + twice
            self.tally.forwards_expected += len(sources)
            self.tally.results_expected += len(results)
            self.tally.resends += sum(seen[s] - 1 for s in (sources | set(results)) if seen[s] > 1)
