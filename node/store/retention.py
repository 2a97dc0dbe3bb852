"""Retention: finished studies leave the data dir, unsent data never does (DESIGN §4, item 6).

A study is *finished* when it is complete (its quiet period has passed, no open association carries it),
every instance of it has been routed, and every job that concerns it (analyses, forwards, result sends;
the job store files each under its study) is done. A finished study is deleted

- by age: its last instance arrived more than ``retention.keep_days`` ago;
- by disk pressure: while free space under ``node.data_dir`` is below ``retention.free_disk_target_mb``,
  finished studies of any age, oldest last instance first, until the target is reached again.

A study with a job queued, running, waiting for a retry or dead (parked) is never deleted: a parked send
is unsent data, and a dead analysis may be retried by a person. Deleting a study removes its spool folder,
the outbox folders of its analyses, its index rows, its done jobs and its routing decisions; the audit
trail keeps a ``study-deleted`` record. The same study sent again afterwards is a new study: stored,
forwarded and analysed again.

Deleting one study, each step committed (or fsynced) before the next::

    1. Index.begin_deletion     marker row committed, checked under the lock association_carried takes:
                                complete, quiet, routed, carried by no association, (old enough).
                                From here on an association bringing the study waits (Index docstring).
    2. jobs of the study        any not done? Index.abandon_deletion: back in service, nothing touched
                                (first the receive journal's checkpoint: the study's journalled instances,
                                all from before the marker, leave the journal before its files and rows)
    3. take out                 spool/<study>/ and outbox/analyse-<id>/ renamed into data_dir/.trash/,
                                directories fsynced (a rename is quick whatever the study's size, so
                                waiting associations wait for milliseconds, not for thousands of unlinks)
    4. forget                   its done jobs deleted, its routing decisions forgotten
    5. Index.end_deletion       its rows and the marker deleted in one transaction; waiters go on
    6. empty the trash          then one INFO line (counts only) and the audit record

A crash (or an error) anywhere leaves the marker. :meth:`Retention.recover`, at start-up before the
receiver listens and at the start of every pass, finishes every marked deletion from step 2: a study
marked but not yet checked against its jobs is checked then (no job of a marked study can start: it
gets no new instance, and it is complete with its analyses done), and steps 3-5 are idempotent. What is
left in the trash is then emptied.

Nothing outside the data dir is touched: folder names come from validated UIDs (digits and dots) and job
ids, a symbolic link where a study folder should be is removed itself (never what it points to), and the
trash is emptied with :func:`shutil.rmtree`, which on Linux unlinks symbolic links inside without
following them.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from node.audit import AuditTrail
from node.config import NodeConfig
from node.errors import NodeError
from node.store.disk import free_mb
from node.store.index import Index
from node.store.rows import Deletion
from node.store.spool import InvalidUIDError, fsync_dir, validate_uid

log = logging.getLogger(__name__)

TRASH_DIR = ".trash"  # under node.data_dir: folders taken out, emptied at once (or at the next pass)
_DAY_S = 86_400.0


class StudyJobs(Protocol):
    """What retention asks the job store (:class:`node.jobs.JobStore`, a later stage, provides it)."""

    def studies_with_unfinished_jobs(self) -> set[str]: ...

    def unfinished_jobs_of_study(self, study: str) -> int: ...

    def analyses_of_study(self, study: str) -> list[int]: ...

    def forget_study(self, study: str) -> int: ...


@dataclass
class RetentionTotals:
    """What retention has done since the process started, for ``status.json``.

    Attributes
    ----------
    last_pass : float or None
        When the last pass ended (epoch seconds); ``None`` before the first.
    studies, instances, bytes : int
        Deleted since start.
    held : int
        At the last pass: studies past ``keep_days`` kept because they have unfinished jobs.
    """

    last_pass: float | None = None
    studies: int = 0
    instances: int = 0
    bytes: int = 0
    held: int = 0


class Retention:
    """Deletes finished studies; :meth:`start` runs a pass every ``retention.interval_s`` on its own thread.

    Parameters
    ----------
    config
        ``[retention]``, the data dir's layout and ``completion.quiet_seconds``.
    index
        The serve process's index (the one its receiver records into: the race with the receiver is
        resolved by this object's lock, see :class:`Index`).
    jobs
        The job store.
    audit
        Gets one ``study-deleted`` record per study.
    routed_up_to
        The router's cursor (last routed index rowid); a study with instances after it is not deleted,
        as its forwards may not be queued yet. ``None``: no router (tests).
    forget
        Called with a deleted study's UID before its index rows go (the routing log's decisions).
    clock
        Epoch seconds, the index's time base; tests inject one.
    free_space
        Free MB on the filesystem of a path; tests inject one.
    """

    def __init__(
        self,
        config: NodeConfig,
        index: Index,
        jobs: StudyJobs,
        *,
        audit: AuditTrail | None = None,
        routed_up_to: Callable[[], int] | None = None,
        forget: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.time,
        free_space: Callable[[Path], float] = free_mb,
        checkpoint: Callable[[], object] | None = None,
    ) -> None:
        self.settings = config.retention
        # The receive journal's checkpoint: a marked study's journalled instances must leave the journal
        # before its files and rows do, or a replay after a crash would bring them back. ``False`` from it:
        # not yet (another receiver process's journal), the study stays for the next pass.
        self._checkpoint = checkpoint
        self.node = config.node
        self.quiet_seconds = config.completion.quiet_seconds
        self.index = index
        self.jobs = jobs
        self.audit = audit
        self._routed_up_to = routed_up_to
        self._forget = forget
        self._clock = clock
        self._free_space = free_space
        self.trash = self.node.data_dir / TRASH_DIR
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards _totals (the thread writes, status.json reads)
        self._totals = RetentionTotals()
        self._short_of_disk = False  # warned that the target cannot be reached (logged once per episode)

    # -- the thread --------------------------------------------------------------------------------

    def start(self) -> None:
        """Run a pass now and then every ``interval_s`` until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the study being deleted (a pass checks between studies); wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pass()
            except (NodeError, OSError) as exc:  # index, job store or disk unusable for now: next pass
                log.error("retention pass failed (an interrupted deletion is finished at the next pass): %s", exc)
            except Exception:  # the thread's boundary: a bug must not end retention for good
                log.exception("retention pass failed unexpectedly")
            self._stop.wait(self.settings.interval_s)

    def totals(self) -> dict[str, object]:
        """:class:`RetentionTotals` as a dict, plus ``enabled``."""
        with self._lock:
            return {"enabled": self.settings.enabled, **asdict(self._totals)}

    # -- a pass ------------------------------------------------------------------------------------

    def run_pass(self) -> int:
        """Finish interrupted deletions, delete old finished studies, then free disk; return studies deleted."""
        deleted = self.recover()
        now = self._clock()
        busy = self.jobs.studies_with_unfinished_jobs()
        held = 0
        keep_days = self.settings.keep_days
        if math.isfinite(keep_days):
            before = now - keep_days * _DAY_S
            for study in self.index.finished_studies(now, self.quiet_seconds, before):
                if self._stop.is_set():
                    break
                if study in busy:
                    held += 1
                    continue
                deleted += self._delete(study, "age", now, before)
        if self.settings.free_disk_target_mb and not self._stop.is_set():
            deleted += self._free_disk(now, busy)
        with self._lock:
            self._totals.last_pass = self._clock()
            self._totals.held = held
        if held:
            log.debug("retention: %d studies past keep_days kept for unfinished jobs", held)
        return deleted

    def _free_disk(self, now: float, busy: set[str]) -> int:
        """Delete finished studies of any age, oldest first, until the free-space target is reached."""
        target = self.settings.free_disk_target_mb
        free = self._free_space(self.node.data_dir)
        deleted = 0
        if free < target:
            for study in self.index.finished_studies(now, self.quiet_seconds):
                if self._stop.is_set():
                    break
                if study in busy or not self._delete(study, "disk", now):
                    continue
                deleted += 1
                free = self._free_space(self.node.data_dir)
                if free >= target:
                    break
        short = free < target and not self._stop.is_set()
        if short and not self._short_of_disk:
            log.warning(
                "free space %.0f MB is below retention.free_disk_target_mb (%d MB) and no other study is finished: "
                "studies with unfinished jobs (unsent, failed or dead) are kept",
                free,
                target,
            )
        elif self._short_of_disk and not short:
            log.info("free space back at retention.free_disk_target_mb (%d MB)", target)
        self._short_of_disk = short
        return deleted

    def recover(self) -> int:
        """Finish every deletion a crash or an error interrupted, then empty the trash; return studies deleted.

        Call at start-up before the receiver listens (associations bringing a marked study wait for it).
        """
        deleted = sum(self._finish(marked) for marked in self.index.deletions())
        self._empty_trash()
        return deleted

    # -- one study ---------------------------------------------------------------------------------

    def _delete(self, study: str, reason: str, now: float, received_before: float | None = None) -> int:
        routed = self._routed_up_to() if self._routed_up_to is not None else None
        marked = self.index.begin_deletion(
            study,
            reason=reason,
            now=now,
            quiet_seconds=self.quiet_seconds,
            received_before=received_before,
            routed_up_to=routed,
        )
        return 0 if marked is None else self._finish(marked)

    def _finish(self, marked: Deletion) -> int:
        """Steps 2-6 of the module docstring for a marked study; 1 if it was deleted, 0 if put back."""
        study = marked.study_instance_uid
        try:
            validate_uid(study, "Study Instance UID")  # it names a folder below the spool
        except InvalidUIDError:
            log.error("a study with an invalid UID cannot be deleted by retention; it stays")
            self.index.abandon_deletion(study)
            return 0
        if self._checkpoint is not None and self._checkpoint() is False:
            log.info("study kept by retention for now: a receive journal is not yet checkpointed")
            self.index.abandon_deletion(study)
            return 0
        if self.jobs.unfinished_jobs_of_study(study):
            log.info("study kept by retention: it has unfinished jobs")
            self.index.abandon_deletion(study)
            return 0
        taken: list[Path] = []
        spool = self._take_out(self.node.spool_dir / study, taken)
        outbox_bytes = 0
        for job_id in self.jobs.analyses_of_study(study):
            folder = self._take_out(self.node.results_dir(job_id), taken)
            outbox_bytes += _tree_bytes(folder) if folder is not None else 0
        for directory in (self.node.spool_dir, self.node.outbox_dir, self.trash):
            if directory.is_dir():
                fsync_dir(directory)  # the renames are durable before the rows that lead to them go
        jobs = self.jobs.forget_study(study)
        if self._forget is not None:
            self._forget(study)
        self.index.end_deletion(study)
        for folder in taken:
            _remove(folder)
        freed = marked.bytes + outbox_bytes
        with self._lock:
            self._totals.studies += 1
            self._totals.instances += marked.instances
            self._totals.bytes += freed
        log.info(
            "study deleted by retention (%s): %d instances, %.1f MB freed", marked.reason, marked.instances, freed / 1e6
        )
        log.debug("deleted study %s (spool folder %s, %d jobs)", study, "removed" if spool else "absent", jobs)
        self._audit(study, marked, freed)
        return 1

    def _take_out(self, path: Path, taken: list[Path]) -> Path | None:
        """Move the folder at ``path`` into the trash and return its new path (``None`` if it was not there).

        A symbolic link (or a file) where the folder should be is unlinked itself: nothing outside the
        data dir is followed. On another filesystem than the trash (EXDEV) the folder is removed in place.
        """
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(mode):
            path.unlink()
            return None
        self.trash.mkdir(exist_ok=True)
        target = self.trash / uuid.uuid4().hex
        try:
            os.rename(path, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.rmtree(path)
            return None
        taken.append(target)
        return target

    def _empty_trash(self) -> None:
        if not self.trash.is_dir():
            return
        for entry in self.trash.iterdir():
            _remove(entry)

    def _audit(self, study: str, marked: Deletion, freed: int) -> None:
        if self.audit is None:
            return
        try:
            self.audit.record(
                "study-deleted", "success", study=study, reason=marked.reason, instances=marked.instances, bytes=freed
            )
        except OSError as exc:  # the study is gone either way; a lost audit record is reported
            log.error("cannot write the audit trail %s: %s", self.audit.path, exc)


def _tree_bytes(folder: Path) -> int:
    """Bytes of the files below ``folder``, links not followed."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _remove(path: Path) -> None:
    """Remove a trash entry; a failure is logged and retried when the trash is emptied at the next pass."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path)
    except OSError as exc:
        log.warning("cannot empty the retention trash %s yet: %s", path.parent, exc)
