"""Retention on a real index, job store and spool in a temp dir: what is deleted, what is kept, crashes, races."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node.audit import AuditTrail, audit_path
from node.config import NodeConfig, parse_config
from node.jobs import JobState, JobStore
from node.jobs.sends import send_job
from node.store import Index, Spool
from node.store.index import StudyBeingDeletedError
from node.store.retention import TRASH_DIR, Retention

DAY = 86_400.0
T0 = 1_700_000_000.0
SERIES = "1.2.826.0.1.3680043.10.1"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Site:
    """A node's stores on disk, as serve has them, with an injected clock and free-space function."""

    config: NodeConfig
    clock: Clock
    index: Index
    jobs: JobStore
    spool: Spool
    audit: AuditTrail
    free: Callable[[Path], float] = lambda _: 1e9
    routed: int | None = None
    forgotten: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.config.node.data_dir

    def retention(self) -> Retention:
        return Retention(
            self.config,
            self.index,
            self.jobs,
            audit=self.audit,
            routed_up_to=None if self.routed is None else (lambda: self.routed or 0),
            forget=self.forgotten.append,
            clock=self.clock,
            free_space=lambda path: self.free(path),
        )

    def reopen(self) -> None:
        """As after a restart: new connections on the same files (the in-memory state is gone)."""
        self.index.close()
        self.jobs.close()
        self.index = Index(self.config.node.index_path, clock=self.clock)
        self.jobs = JobStore(self.config.node.jobs_path, clock=self.clock)

    def store(self, study: str, count: int = 3, size: int = 1000, *, at: float | None = None) -> list[str]:
        """Receive ``count`` instances of ``study`` at ``at`` (spool file, then index row, as the handler does)."""
        if at is not None:
            self.clock.now = at
        sops = [f"{study}.{n}" for n in range(1, count + 1)]
        for sop in sops:
            self.index.association_carried("scanner", study)
            self.spool.write(study, SERIES, sop, bytes(size))
            self.index.record(
                sop_instance_uid=sop,
                study_instance_uid=study,
                series_instance_uid=SERIES,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                path=self.spool.relative_path(study, SERIES, sop),
                size=size,
                calling_ae="SCANNER",
                association_id="scanner",
            )
        self.index.association_closed("scanner")
        return sops

    def complete(self, study: str, *, after: float = 20.0) -> None:
        """The completion timer's verdict, ``after`` seconds of quiet."""
        self.clock.now += after
        self.index.mark_complete(study, self.clock.now)

    def analyse(self, study: str, state: str = "done") -> int:
        """An analysis of the study with its results folder and one result send, in ``state`` (both)."""
        analysis = self.jobs.enqueue("analyse", {"study": study, "series": None, "model": "m", "results_to": []})
        folder = self.config.node.results_dir(analysis) / SERIES
        folder.mkdir(parents=True)
        (folder / "seg.dcm").write_bytes(bytes(300))
        (folder.parent / "manifest.json").write_text("{}")
        self._settle("analyse", analysis, state)
        result = send_job("pacs", f"outbox/analyse-{analysis}/{SERIES}/seg.dcm", f"{study}.99", "1.2")
        self._settle("send:pacs", self.jobs.enqueue_many([result])[0], "done")
        return analysis

    def forward(self, study: str, sop: str, state: str = "done") -> int:
        job = self.jobs.enqueue_many([send_job("pacs", f"spool/{study}/{SERIES}/{sop}.dcm", sop, "1.2")])[0]
        self._settle("send:pacs", job, state)
        return job

    def _settle(self, kind: str, job: int, state: str) -> None:
        if state == "queued":
            return
        claimed = self.jobs.claim(kind, "w", 60)
        assert claimed is not None and claimed.id == job
        if state == "done":
            self.jobs.complete(job, "w")
        elif state == "retrying":
            assert self.jobs.fail(job, "w", "peer down") is JobState.QUEUED
        elif state == "dead":
            assert self.jobs.fail(job, "w", "refused", retry=False) is JobState.DEAD

    def kept(self, study: str, instances: int = 3) -> bool:
        """The study is whole: its files, its rows, and not out of service."""
        files = sorted((self.config.node.spool_dir / study).rglob("*.dcm"))
        rows = self.index.instances(study)
        marked = [d.study_instance_uid for d in self.index.deletions()]
        return len(files) == len(rows) == instances and study not in marked

    def gone(self, study: str, analyses: tuple[int, ...] = ()) -> bool:
        """Nothing of the study is left: files, results, rows, jobs, marker, trash."""
        return (
            not (self.config.node.spool_dir / study).exists()
            and not any(self.config.node.results_dir(a).exists() for a in analyses)
            and self.index.instances(study) == []
            and self.index.study_summary(study) is None
            and self.index.deletions() == []
            and self.jobs.search(study) == []
            and all(job.study != study for job in self.jobs.list(limit=10_000))
            and all(self.jobs.get(a) is None for a in analyses)
            and list((self.data_dir / TRASH_DIR).glob("*")) == []
        )

    def audited(self) -> list[dict[str, object]]:
        path = audit_path(self.data_dir)
        records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [r for r in records if r["event"] == "study-deleted"]


def make_site(tmp_path: Path, retention: str = "keep_days = 7") -> Site:
    data = tmp_path / "data"
    config = parse_config(
        f'[node]\nae_title = "NODE"\ndata_dir = "{data}"\n[limits]\nmin_free_disk_mb = 0\n'
        f"[completion]\nquiet_seconds = 10\n[retention]\n{retention}\n"
    )
    for folder in (config.node.spool_dir, config.node.outbox_dir):
        folder.mkdir(parents=True)
    clock = Clock()
    return Site(
        config=config,
        clock=clock,
        index=Index(config.node.index_path, clock=clock),
        jobs=JobStore(config.node.jobs_path, clock=clock),
        spool=Spool(config.node.spool_dir),
        audit=AuditTrail(audit_path(data), "NODE"),
    )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    opened = make_site(tmp_path)
    yield opened
    opened.index.close()
    opened.jobs.close()


A, B, C, D = (f"1.2.826.0.1.3680043.10.{n}" for n in (11, 12, 13, 14))


def test_a_finished_old_study_is_deleted_with_its_results_rows_and_jobs_and_audited(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    sops = site.store(A, at=T0)
    site.complete(A)
    analysis = site.analyse(A)
    site.forward(A, sops[0])
    site.store(B, at=T0 + 7 * DAY)  # young: kept
    site.complete(B)
    site.clock.now = T0 + 7 * DAY + 60
    caplog.set_level(logging.DEBUG, logger="node.store.retention")
    retention = site.retention()
    assert retention.run_pass() == 1
    assert site.gone(A, (analysis,)) and site.kept(B)
    assert site.forgotten == [A]  # the routing decisions go with it
    (record,) = site.audited()
    assert (record["study"], record["reason"], record["instances"], record["bytes"]) == (A, "age", 3, 3000 + 300 + 2)
    assert record["outcome"] == 0 and record["event_id"]["code"] == "110105"  # type: ignore[index]
    totals = retention.totals()
    assert (totals["studies"], totals["instances"], totals["bytes"], totals["held"]) == (1, 3, 3302, 0)
    assert totals["last_pass"] == site.clock.now and totals["enabled"] is True
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert info == ["study deleted by retention (age): 3 instances, 0.0 MB freed"]  # no UID at INFO
    assert any(A in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    # A second pass has nothing to do; the same study sent again is a new study.
    assert retention.run_pass() == 0
    site.store(A, count=1)
    assert site.kept(A, instances=1) and site.index.study_summary(A).completed_at is None  # type: ignore[union-attr]


@pytest.mark.parametrize("state", ["queued", "running", "retrying", "dead"])
@pytest.mark.parametrize("job", ["analysis", "forward", "result"])
def test_a_study_with_a_job_that_is_not_done_is_kept(site: Site, job: str, state: str) -> None:
    sops = site.store(A, at=T0)
    site.complete(A)
    if job == "analysis":
        site.analyse(A, state)
    elif job == "forward":
        site.forward(A, sops[1], state)
    else:
        analysis = site.analyse(A)
        result = send_job("pacs", f"outbox/analyse-{analysis}/{SERIES}/sr.dcm", f"{A}.98", "1.2")
        site._settle("send:pacs", site.jobs.enqueue_many([result])[0], state)
    site.clock.now = T0 + 30 * DAY
    retention = site.retention()
    assert retention.run_pass() == 0
    assert site.kept(A) and retention.totals()["held"] == 1
    assert site.audited() == []
    for analysis_id in site.jobs.analyses_of_study(A):
        assert site.config.node.results_dir(analysis_id).is_dir()


def test_a_study_carried_by_an_open_association_is_kept_until_quiet_after_its_release(site: Site) -> None:
    site.store(A, at=T0)
    site.complete(A)
    site.clock.now = T0 + 30 * DAY
    site.index.association_opened("late")
    site.index.association_carried("late", A)  # a late instance is on its way
    retention = site.retention()
    assert retention.run_pass() == 0 and site.kept(A)
    site.index.association_closed("late")  # released now: the quiet period starts again
    site.clock.now += 5
    assert retention.run_pass() == 0 and site.kept(A)
    site.clock.now += 10
    assert retention.run_pass() == 1 and site.gone(A)


def test_an_incomplete_study_or_one_with_unrouted_instances_is_kept(site: Site) -> None:
    site.store(A, at=T0)  # never completed
    site.store(B, at=T0)
    site.complete(B)
    site.clock.now = T0 + 30 * DAY
    site.routed = 0  # the router has not seen B's rows: its forwards may not be queued yet
    assert site.retention().run_pass() == 0 and site.kept(A) and site.kept(B)
    site.routed = 10**9
    assert site.retention().run_pass() == 1 and site.kept(A) and site.gone(B)


def test_a_young_study_is_kept_until_keep_days(site: Site) -> None:
    site.store(A, at=T0)
    site.complete(A)
    site.store(A, count=4, at=T0 + DAY)  # a late (duplicate or new) instance: the age counts from it
    retention = site.retention()
    site.clock.now = T0 + 8 * DAY - 60
    assert retention.run_pass() == 0 and site.kept(A, instances=4)
    site.clock.now = T0 + 8 * DAY + 60
    assert retention.run_pass() == 1 and site.gone(A)


def test_keep_days_zero_deletes_a_finished_study_at_the_first_pass_after_its_quiet_period(tmp_path: Path) -> None:
    site = make_site(tmp_path, "keep_days = 0")
    site.store(A, at=T0)
    site.complete(A, after=10)
    retention = site.retention()
    assert retention.run_pass() == 1 and site.gone(A)


def test_disk_pressure_deletes_the_oldest_finished_studies_until_the_target_is_reached(tmp_path: Path) -> None:
    site = make_site(tmp_path, "keep_days = 365\nfree_disk_target_mb = 1000")
    for n, study in enumerate((A, B, C, D)):
        site.store(study, at=T0 + n * DAY)
        site.complete(study)
    site.forward(B, f"{B}.1", "dead")  # B is the second oldest, but holds unsent data
    young = "1.2.826.0.1.3680043.10.15"
    site.store(young, at=T0 + 10 * DAY)  # not complete: never deleted, even under pressure

    def free(_: Path) -> float:  # each deleted study frees 60 MB of a disk with 880 MB free
        spool = site.config.node.spool_dir
        return 880.0 + 60 * sum(not (spool / s).exists() for s in (A, B, C, D))

    site.free = free
    site.clock.now = T0 + 10 * DAY
    retention = site.retention()
    assert retention.run_pass() == 2  # A (oldest), then C: 1000 MB reached, D is left
    assert site.gone(A) and site.kept(B) and site.gone(C) and site.kept(D) and site.kept(young)
    assert [(r["study"], r["reason"]) for r in site.audited()] == [(A, "disk"), (C, "disk")]
    assert retention.run_pass() == 0 and site.kept(D)  # at the target: nothing more


def test_disk_pressure_that_cannot_be_relieved_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    site = make_site(tmp_path, "keep_days = 365\nfree_disk_target_mb = 1000")
    site.store(A, at=T0)
    site.complete(A)
    site.forward(A, f"{A}.1", "retrying")
    site.free = lambda _: 10.0
    retention = site.retention()
    caplog.set_level(logging.INFO, logger="node.store.retention")
    assert retention.run_pass() == 0 and retention.run_pass() == 0 and site.kept(A)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "below retention.free_disk_target_mb (1000 MB)" in warnings[0]


class CrashError(OSError):
    """Raised in the middle of a deletion: the process dies there."""


@pytest.mark.parametrize("step", ["marked", "taken-out", "jobs-forgotten", "decisions-forgotten", "rows-deleted"])
def test_a_deletion_interrupted_by_a_crash_is_finished_at_the_next_start(
    site: Site, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    sops = site.store(A, at=T0)
    site.complete(A)
    analysis = site.analyse(A)
    site.forward(A, sops[0])
    site.clock.now = T0 + 30 * DAY
    retention = site.retention()

    def crash(*_: object) -> None:
        raise CrashError("killed")

    if step == "marked":  # after the marker's commit, before anything else
        monkeypatch.setattr(site.jobs, "unfinished_jobs_of_study", crash)
    elif step == "taken-out":  # the spool folder moved to the trash, the results not yet
        monkeypatch.setattr(site.jobs, "analyses_of_study", crash)
    elif step == "jobs-forgotten":
        monkeypatch.setattr(site.jobs, "forget_study", crash)
    elif step == "decisions-forgotten":
        monkeypatch.setattr(retention, "_forget", crash)
    else:
        monkeypatch.setattr(site.index, "end_deletion", crash)
    with pytest.raises(CrashError):
        retention.run_pass()
    assert [d.study_instance_uid for d in site.index.deletions()] == [A]  # out of service
    with pytest.raises(StudyBeingDeletedError):
        Index(site.config.node.index_path, deletion_wait_s=0.01).association_carried("x", A)
    monkeypatch.undo()
    site.reopen()
    assert site.retention().recover() == 1
    assert site.gone(A, (analysis,))
    (record,) = site.audited()
    assert (record["reason"], record["instances"]) == ("age", 3)
    site.index.association_carried("x", A)  # back in service: no wait


def test_a_study_marked_before_a_crash_but_with_unfinished_jobs_is_put_back_untouched(site: Site) -> None:
    sops = site.store(A, at=T0)
    site.complete(A)
    site.forward(A, sops[0], "dead")
    site.clock.now = T0 + 30 * DAY
    # What a crash between the marker and the job check leaves behind (the job was parked meanwhile).
    marked = site.index.begin_deletion(A, reason="age", now=site.clock.now, quiet_seconds=10)
    assert marked is not None and marked.instances == 3 and marked.bytes == 3000
    site.reopen()
    assert site.retention().recover() == 0
    assert site.kept(A) and site.audited() == []


def test_association_carried_waits_for_a_deletion_in_progress(site: Site) -> None:
    site.store(A, at=T0)
    site.complete(A)
    site.clock.now += 60
    assert site.index.begin_deletion(A, reason="age", now=site.clock.now, quiet_seconds=10) is not None
    carried = threading.Event()
    waiter = threading.Thread(target=lambda: (site.index.association_carried("late", A), carried.set()))
    waiter.start()
    assert not carried.wait(0.2)  # waiting for the deletion
    assert site.index.open_associations(A) == 0
    site.index.end_deletion(A)
    assert carried.wait(2.0)  # woken at once
    waiter.join()
    assert site.index.open_associations(A) == 1
    # Another study is never held up.
    started = time.monotonic()
    site.index.association_carried("other", B)
    assert time.monotonic() - started < 0.1


def test_association_carried_gives_up_after_its_bound(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    index = Index(site.config.node.index_path, clock=site.clock, deletion_wait_s=0.2)
    site.index.close()
    site.index = index
    site.store(A, at=T0)
    site.complete(A)
    site.clock.now += 60
    assert index.begin_deletion(A, reason="age", now=site.clock.now, quiet_seconds=10) is not None
    started = time.monotonic()
    with pytest.raises(StudyBeingDeletedError, match="send it again"):
        index.association_carried("late", A)
    assert 0.2 <= time.monotonic() - started < 2.0
    assert index.open_associations(A) == 0  # not carried: the handler writes nothing
    index.abandon_deletion(A)
    index.association_carried("late", A)


def test_an_instance_arriving_during_the_deletion_is_stored_after_it_and_starts_the_study_again(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver's order (carried, write, record) against a deletion caught between its steps."""
    site.store(A, at=T0)
    site.complete(A)
    site.clock.now = T0 + 30 * DAY
    retention = site.retention()
    stored = threading.Event()

    def receive_late_instance() -> None:
        site.index.association_carried("late", A)
        site.spool.write(A, SERIES, f"{A}.7", bytes(500))
        site.index.record(
            sop_instance_uid=f"{A}.7",
            study_instance_uid=A,
            series_instance_uid=SERIES,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            path=site.spool.relative_path(A, SERIES, f"{A}.7"),
            size=500,
            calling_ae="SCANNER",
            association_id="late",
        )
        stored.set()

    late = threading.Thread(target=receive_late_instance)
    forget_study = site.jobs.forget_study

    def forget_while_an_instance_arrives(study: str) -> int:
        late.start()  # the spool folder is already in the trash; the rows are still there
        assert not stored.wait(0.3)  # the handler waits: it has not written anything
        return forget_study(study)

    monkeypatch.setattr(site.jobs, "forget_study", forget_while_an_instance_arrives)
    assert retention.run_pass() == 1
    assert stored.wait(2.0)
    late.join()
    # The new instance is on disk and indexed, as a new study that is not complete; the old ones are gone.
    assert [i.sop_instance_uid for i in site.index.instances(A)] == [f"{A}.7"]
    assert sorted(p.name for p in (site.config.node.spool_dir / A).rglob("*.dcm")) == [f"{A}.7.dcm"]
    summary = site.index.study_summary(A)
    assert summary is not None and summary.completed_at is None
    assert site.index.open_associations(A) == 1


def test_symbolic_links_are_never_followed_out_of_the_data_dir(site: Site, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.dcm").write_bytes(b"keep me")
    site.store(A, at=T0)
    site.complete(A)
    (site.config.node.spool_dir / A / SERIES / "link").symlink_to(outside)  # a link inside the study
    site.store(B, at=T0)
    site.complete(B)
    study_b = site.config.node.spool_dir / B
    for path in sorted(study_b.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() else path.rmdir()
    study_b.rmdir()
    study_b.symlink_to(outside, target_is_directory=True)  # the study folder itself is a link
    site.clock.now = T0 + 30 * DAY
    assert site.retention().run_pass() == 2
    assert (outside / "precious.dcm").read_bytes() == b"keep me"
    assert not study_b.exists() and not study_b.is_symlink() and site.gone(A) and site.gone(B)


def test_the_thread_runs_a_pass_at_once_and_stops_promptly(tmp_path: Path) -> None:
    site = make_site(tmp_path, "keep_days = 0\ninterval_s = 3600")
    site.store(A, at=T0)
    site.complete(A)
    retention = site.retention()
    retention.start()
    deadline = time.monotonic() + 5
    while retention.totals()["last_pass"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    retention.stop()
    assert time.monotonic() - started < 1.0
    assert site.gone(A)
