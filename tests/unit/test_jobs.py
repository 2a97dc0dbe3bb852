"""The job store's contract on one process, time from an injected clock; and the backoff function."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.errors import NodeError
from node.jobs import (
    JobNotFoundError,
    JobState,
    JobStateError,
    JobStore,
    JobStoreError,
    LeaseLostError,
    NewJob,
    delay,
)

UID = "1.2.826.0.1.3680043.99.1"  # stands for a SOP Instance UID: must never reach an INFO line


class Clock:
    """A clock that moves only when told."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[JobStore]:
    # No jitter: the backoff delays are exact (10, 20, 40 ... s).
    with JobStore(
        tmp_path / "jobs.db", clock=clock, max_attempts=3, backoff_initial=10, backoff_max=100, jitter_fraction=0
    ) as opened:
        yield opened


def test_claim_takes_highest_priority_first_then_oldest(store: JobStore, clock: Clock) -> None:
    ids = {}
    for name, priority in [("a", 0), ("b", 5), ("c", 5), ("d", 0), ("e", -1)]:
        ids[name] = store.enqueue("analyse", {"name": name}, priority=priority)
        clock.advance(1)
    order = []
    while (job := store.claim(["analyse"], "w1", 60)) is not None:
        assert job.state is JobState.RUNNING and job.lease_owner == "w1" and job.lease_expires == clock.now + 60
        assert job.attempts == 1
        order.append(job.payload["name"])
    assert order == ["b", "c", "a", "d", "e"]


def test_claim_many_takes_a_batch_in_claim_order_in_one_transaction(store: JobStore, clock: Clock) -> None:
    for name, priority in [("a", 0), ("b", 5), ("c", 5), ("d", 0), ("e", -1)]:
        store.enqueue("send:pacs", {"name": name}, priority=priority)
        clock.advance(1)
    store.enqueue("send:other", {"name": "x"}, priority=9)
    first = store.claim_many("send:pacs", "s1", 60, 3)
    assert [j.payload["name"] for j in first] == ["b", "c", "a"]
    assert all(j.state is JobState.RUNNING and j.lease_owner == "s1" and j.attempts == 1 for j in first)
    rest = store.claim_many("send:pacs", "s2", 60, 10)
    assert [j.payload["name"] for j in rest] == ["d", "e"]
    assert store.claim_many("send:pacs", "s3", 60, 10) == []
    store.complete(first[0].id, "s1", durable=False)  # a send's done mark: committed, not synced
    assert store.get(first[0].id).state is JobState.DONE


def test_claim_only_takes_the_kinds_asked_for(store: JobStore) -> None:
    send = store.enqueue("send", {"sop": UID, "peer": "PACS"}, priority=9)
    analyse = store.enqueue("analyse", {"study": UID})
    assert store.claim("encode", "w", 60) is None
    job = store.claim("analyse", "w", 60)
    assert job is not None and job.id == analyse
    job = store.claim(("analyse", "send"), "w", 60)
    assert job is not None and job.id == send
    with pytest.raises(ValueError, match="at least one kind"):
        store.claim([], "w", 60)


def test_not_before_delays_the_first_claim(store: JobStore, clock: Clock) -> None:
    store.enqueue("send", {}, not_before=clock.now + 30)
    assert store.claim("send", "w", 60) is None
    clock.advance(30)
    assert store.claim("send", "w", 60) is not None


def test_dedup_key_returns_the_live_job(store: JobStore) -> None:
    key = f"send:{UID}:PACS"
    first = store.enqueue("send", {"sop": UID, "peer": "PACS"}, dedup_key=key)
    assert store.enqueue("send", {"sop": UID, "peer": "PACS"}, dedup_key=key) == first
    # The same key of another kind is other work.
    assert store.enqueue("analyse", {}, dedup_key=key) != first
    # A higher-priority request for queued work raises the job's priority.
    assert store.enqueue("send", {"sop": UID, "peer": "PACS"}, dedup_key=key, priority=7) == first
    job = store.get(first)
    assert job is not None and job.priority == 7 and job.dedup_key == key
    # Running is still live: no second send while the first is in flight.
    assert store.claim("send", "w", 60) is not None
    assert store.enqueue("send", {"sop": UID, "peer": "PACS"}, dedup_key=key) == first
    # Once done, the same send can be asked for again (the instance changed, a rule re-ran).
    store.complete(first, "w")
    assert store.enqueue("send", {"sop": UID, "peer": "PACS"}, dedup_key=key) != first
    assert store.counts()[("send", JobState.QUEUED)] == 1


def test_once_does_not_enqueue_work_already_done(store: JobStore) -> None:
    first = store.enqueue("send", {"n": 1}, dedup_key="pacs|1.2.3", once=True)
    job = store.claim("send", "w", 60)
    assert job is not None and job.id == first
    store.complete(first, "w")
    assert store.enqueue("send", {"n": 1}, dedup_key="pacs|1.2.3", once=True) == first
    assert store.claim("send", "w", 60) is None
    # Without once, done work may be asked for again (a new job); another key is new work either way.
    again = store.enqueue("send", {"n": 1}, dedup_key="pacs|1.2.3")
    assert again != first
    assert store.enqueue("send", {"n": 2}, dedup_key="archive|1.2.3", once=True) not in (first, again)


def test_once_enqueues_again_after_a_dead_job(store: JobStore) -> None:
    first = store.enqueue("send", {}, dedup_key="k", once=True)
    assert store.claim("send", "w", 60) is not None
    store.fail(first, "w", "peer refused", retry=False)
    assert store.enqueue("send", {}, dedup_key="k", once=True) != first


def test_expired_lease_goes_back_to_the_queue(store: JobStore, clock: Clock) -> None:
    job_id = store.enqueue("analyse", {"study": UID})
    assert store.claim("analyse", "w1", 30) is not None
    clock.advance(29)
    assert store.requeue_expired() == 0
    clock.advance(1)
    assert store.requeue_expired() == 1
    job = store.get(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.lease_owner is None
    assert job.attempts == 1 and job.last_error is not None and "w1" in job.last_error
    # The old owner has lost the job: its late results are refused and its heartbeat says so.
    assert not store.heartbeat(job_id, "w1", 30)
    with pytest.raises(LeaseLostError):
        store.complete(job_id, "w1")
    again = store.claim("analyse", "w2", 30)
    assert again is not None and again.id == job_id and again.attempts == 2
    store.complete(job_id, "w2")


def test_heartbeat_keeps_the_lease(store: JobStore, clock: Clock) -> None:
    job_id = store.enqueue("analyse", {})
    assert store.claim("analyse", "w1", 30) is not None
    for _ in range(5):
        clock.advance(20)
        assert store.heartbeat(job_id, "w1", 30)
        assert store.requeue_expired() == 0
    assert not store.heartbeat(job_id, "w2", 30)
    job = store.get(job_id)
    assert job is not None and job.state is JobState.RUNNING and job.lease_expires == clock.now + 30


def test_failed_job_waits_its_backoff(store: JobStore, clock: Clock) -> None:
    job_id = store.enqueue("send", {"sop": UID, "peer": "PACS"})
    assert store.claim("send", "w", 60) is not None
    assert store.fail(job_id, "w", "association rejected") is JobState.QUEUED
    job = store.get(job_id)
    assert job is not None and job.not_before == clock.now + 10 and job.last_error == "association rejected"
    clock.advance(9.9)
    assert store.claim("send", "w", 60) is None
    clock.advance(0.1)
    job = store.claim("send", "w", 60)
    assert job is not None and job.id == job_id and job.attempts == 2
    # The second failure waits twice as long.
    store.fail(job_id, "w", "timeout")
    clock.advance(19.9)
    assert store.claim("send", "w", 60) is None
    clock.advance(0.1)
    assert store.claim("send", "w", 60) is not None


def test_job_is_dead_after_max_attempts_with_its_last_error(store: JobStore, clock: Clock) -> None:
    job_id = store.enqueue("send", {"sop": UID, "peer": "PACS"})
    states = []
    for attempt in range(1, 4):
        job = store.claim("send", "w", 60)
        assert job is not None and job.attempts == attempt
        states.append(store.fail(job_id, "w", f"refused, try {attempt}"))
        clock.advance(1000)
    assert states == [JobState.QUEUED, JobState.QUEUED, JobState.DEAD]
    assert store.claim("send", "w", 60) is None
    dead = store.list(state=JobState.DEAD)
    assert [job.id for job in dead] == [job_id]
    assert dead[0].last_error == "refused, try 3" and dead[0].attempts == 3 and dead[0].lease_owner is None


def test_fail_without_retry_is_dead_at_once(store: JobStore) -> None:
    job_id = store.enqueue("analyse", {})
    assert store.claim("analyse", "w", 60) is not None
    assert store.fail(job_id, "w", "series has mixed orientations", retry=False) is JobState.DEAD
    job = store.get(job_id)
    assert job is not None and job.state is JobState.DEAD and job.attempts == 1


def test_dead_job_is_retried_on_request(store: JobStore, clock: Clock) -> None:
    job_id = store.enqueue("send", {})
    assert store.claim("send", "w", 60) is not None
    store.fail(job_id, "w", "peer unknown", retry=False)
    clock.advance(5)
    store.retry(job_id)
    job = store.get(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0 and job.not_before == clock.now
    assert job.last_error == "peer unknown"  # kept for the record
    again = store.claim("send", "w", 60)
    assert again is not None and again.id == job_id and again.attempts == 1
    with pytest.raises(JobStateError, match="only a dead job"):
        store.retry(job_id)
    with pytest.raises(JobNotFoundError):
        store.retry(9999)


def test_retry_refuses_a_dead_job_whose_work_is_live_again(store: JobStore) -> None:
    key = f"send:{UID}:PACS"
    dead = store.enqueue("send", {}, dedup_key=key)
    assert store.claim("send", "w", 60) is not None
    store.fail(dead, "w", "refused", retry=False)
    live = store.enqueue("send", {}, dedup_key=key)
    assert live != dead
    with pytest.raises(JobStateError, match=f"job {live} already does"):
        store.retry(dead)


def test_release_does_not_count_an_attempt(store: JobStore) -> None:
    job_id = store.enqueue("analyse", {})
    assert store.claim("analyse", "w1", 60) is not None
    with pytest.raises(LeaseLostError):
        store.release(job_id, "w2")
    store.release(job_id, "w1")
    job = store.get(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0 and job.lease_owner is None
    job = store.claim("analyse", "w2", 60)
    assert job is not None and job.attempts == 1


def test_complete_by_a_non_owner_is_refused(store: JobStore) -> None:
    job_id = store.enqueue("send", {})
    with pytest.raises(LeaseLostError, match="does not hold"):
        store.complete(job_id, "w1")  # never claimed
    assert store.claim("send", "w1", 60) is not None
    with pytest.raises(LeaseLostError):
        store.complete(job_id, "w2")
    with pytest.raises(LeaseLostError):
        store.fail(job_id, "w2", "not mine")
    job = store.get(job_id)
    assert job is not None and job.state is JobState.RUNNING and job.lease_owner == "w1"
    store.complete(job_id, "w1")
    with pytest.raises(LeaseLostError):
        store.complete(job_id, "w1")  # done is final
    with pytest.raises(JobNotFoundError):
        store.complete(9999, "w1")
    assert isinstance(LeaseLostError("x"), NodeError)


def test_expired_lease_of_a_job_out_of_attempts_parks_it(store: JobStore, clock: Clock) -> None:
    # A job that kills every worker running it must stop coming back.
    job_id = store.enqueue("analyse", {})
    for _ in range(3):
        assert store.claim("analyse", "w", 10) is not None
        clock.advance(11)
        assert store.requeue_expired() == 1
    job = store.get(job_id)
    assert job is not None and job.state is JobState.DEAD and job.attempts == 3


def test_counts_and_list(store: JobStore) -> None:
    for _ in range(3):
        store.enqueue("analyse", {})
    send = store.enqueue("send", {})
    assert store.claim("analyse", "w", 60) is not None
    assert store.claim("send", "w", 60) is not None
    store.complete(send, "w")
    assert store.counts() == {
        ("analyse", JobState.QUEUED): 2,
        ("analyse", JobState.RUNNING): 1,
        ("send", JobState.DONE): 1,
    }
    assert [job.id for job in store.list()] == [4, 3, 2, 1]
    assert [job.id for job in store.list(state="queued", kind="analyse")] == [3, 2]
    assert [job.id for job in store.list(limit=1)] == [4]
    assert store.get(42) is None


def test_rows_survive_a_reopen(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "jobs.db"
    with JobStore(path, clock=clock) as first:
        job_id = first.enqueue("send", {"sop": UID, "peer": "PACS"}, dedup_key="k", priority=3)
        assert first.claim("send", "w", 60) is not None
    with JobStore(path, clock=clock) as second:
        job = second.get(job_id)
        assert job is not None and job.state is JobState.RUNNING and job.payload == {"sop": UID, "peer": "PACS"}
        assert second.enqueue("send", {}, dedup_key="k") == job_id
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_threads_of_one_process_share_a_store(store: JobStore) -> None:
    ids = {store.enqueue("analyse", {"n": n}) for n in range(100)}
    claimed: list[int] = []

    def work(owner: str) -> None:
        while (job := store.claim("analyse", owner, 60)) is not None:
            claimed.append(job.id)
            store.complete(job.id, owner)

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)
    assert store.counts() == {("analyse", JobState.DONE): 100}


def test_a_store_is_refused_in_another_process(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # As in a child after fork: SQLite connections must not cross it.
    monkeypatch.setattr(os, "getpid", lambda: -1)
    with pytest.raises(JobStoreError, match="open one per process"):
        store.claim("analyse", "w", 60)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    JobStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(JobStoreError, match="schema version 99"):
        JobStore(path)


def test_one_info_line_per_state_change_and_no_uids(
    store: JobStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="node.jobs")
    job_id = store.enqueue("send", {"sop": UID, "peer": "PACS"}, dedup_key=f"send:{UID}:PACS")
    store.enqueue("send", {"sop": UID, "peer": "PACS"}, dedup_key=f"send:{UID}:PACS")  # no state change
    store.claim("send", "w", 60)
    store.fail(job_id, "w", f"peer refused {UID}")
    clock.advance(100)
    store.claim("send", "w", 60)
    store.complete(job_id, "w")
    shown = [record for record in caplog.records if record.levelno >= logging.INFO]
    states = [record.getMessage().split(" -> ")[1].split()[0] for record in shown]
    assert states == ["queued", "running", "queued", "running", "done"]
    assert all(record.getMessage().startswith(f"job {job_id} send -> ") for record in shown)
    assert not any(UID in record.getMessage() for record in shown)


def test_backoff_doubles_up_to_the_cap() -> None:
    expected = [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert [delay(n, 30, 3600, jitter_fraction=0.5) for n in range(1, 10)] == expected  # no rng: no jitter
    assert delay(10_000, 30, 3600) == 3600  # no overflow however many attempts
    assert delay(3, 0, 0) == 0


def test_backoff_jitter_is_bounded_and_reproducible() -> None:
    first = [delay(n, 10, 1000, 0.2, random.Random(7)) for n in range(1, 12)]
    assert first == [delay(n, 10, 1000, 0.2, random.Random(7)) for n in range(1, 12)]
    rng = random.Random(1)
    for n in range(1, 12):
        base = min(1000.0, 10.0 * 2 ** (n - 1))
        for _ in range(50):
            assert 0.8 * base <= delay(n, 10, 1000, 0.2, rng) <= min(1000.0, 1.2 * base)
    assert len({delay(1, 10, 1000, 0.2, rng) for _ in range(20)}) > 1


@pytest.mark.parametrize(
    ("attempt", "initial", "maximum", "jitter"),
    [(0, 1, 10, 0.1), (1, -1, 10, 0.1), (1, 20, 10, 0.1), (1, 1, 10, 1.5), (1, 1, 10, -0.1)],
)
def test_backoff_rejects_bad_arguments(attempt: int, initial: float, maximum: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        delay(attempt, initial, maximum, jitter)


def test_search_finds_jobs_by_payload_text(store: JobStore) -> None:
    a = store.enqueue("send:pacs", {"path": "spool/1.2.3/4/5.dcm", "peer": "pacs"})
    b = store.enqueue("analyse", {"study": "1.2.3", "model": "m_1"})
    store.enqueue("analyse", {"study": "1.2.30", "model": "m%1"})
    assert [j.id for j in store.search('"study":"1.2.3"')] == [b]
    assert [j.id for j in store.search('"path":"spool/1.2.3/')] == [a]
    assert len(store.search("m_1")) == 1 and len(store.search("m%1")) == 1  # LIKE wildcards are literal


def test_enqueue_many_is_one_transaction_with_the_same_dedup_rules(store: JobStore) -> None:
    done = store.enqueue("send:pacs", {"n": 0}, dedup_key="pacs|0", once=True)
    assert store.claim("send:pacs", "w", 60) is not None
    store.complete(done, "w")
    ids = store.enqueue_many(
        [
            NewJob("send:pacs", {"n": 0}, dedup_key="pacs|0", once=True),  # done: found, not added
            NewJob("send:pacs", {"n": 1}, dedup_key="pacs|1", once=True),
            NewJob("send:pacs", {"n": 1}, dedup_key="pacs|1", once=True),  # twice in one batch: one job
            NewJob("analyse", {"study": "1"}, priority=10),
        ]
    )
    assert ids[0] == done and ids[1] == ids[2] and len(set(ids)) == 3
    assert store.counts() == {
        ("send:pacs", JobState.DONE): 1,
        ("send:pacs", JobState.QUEUED): 1,
        ("analyse", JobState.QUEUED): 1,
    }
    with pytest.raises(ValueError, match="kind"):
        store.enqueue_many([NewJob("", {})])


def test_requeue_owners_takes_back_the_jobs_of_a_dead_process_at_once(store: JobStore) -> None:
    a = store.enqueue("send:pacs", {"n": 1})
    b = store.enqueue("analyse", {"n": 2})
    assert store.claim("send:pacs", "sender-111-pacs-0", 300) is not None
    assert store.claim("analyse", "worker-host-222", 300) is not None
    assert store.requeue_owners(lambda owner: owner.startswith("sender-111-"), lambda kind: 30) == 1
    job = store.get(a)
    assert job is not None and job.state is JobState.QUEUED and "sender-111-pacs-0 died" in (job.last_error or "")
    running = store.get(b)
    assert running is not None and running.state is JobState.RUNNING  # another owner's job is left alone


# -- jobs filed under their study (retention) ------------------------------------------------------------

STUDY, OTHER = "1.2.826.0.1.3680043.99.7", "1.2.826.0.1.3680043.99.8"


def _analyse(study: str) -> NewJob:
    return NewJob("analyse", {"study": study, "series": None, "model": "m", "results_to": ["pacs"]})


def _send(path: str, sop: str = UID) -> NewJob:
    return NewJob("send:pacs", {"peer": "pacs", "path": path, "sop": sop, "sop_class": "1.2"})


def test_every_job_is_filed_under_the_study_it_concerns(store: JobStore) -> None:
    analysis, other = store.enqueue_many([_analyse(STUDY), _analyse(OTHER)])
    forward, result, orphan, unknown = store.enqueue_many(
        [
            _send(f"spool/{STUDY}/1.2.3/{UID}.dcm"),  # a forwarded instance: the study is in its spool path
            _send(f"outbox/analyse-{analysis}/1.2.3/seg.dcm", "1.9"),  # a result: its analysis's study
            _send("outbox/analyse-999/x/seg.dcm", "1.8"),  # no such analysis
            NewJob("other", {"study": STUDY}),  # a kind that concerns no study
        ]
    )
    studies = {
        job_id: job.study
        for job_id in (analysis, other, forward, result, orphan, unknown)
        if (job := store.get(job_id))
    }
    assert studies == {analysis: STUDY, other: OTHER, forward: STUDY, result: STUDY, orphan: None, unknown: None}
    assert store.analyses_of_study(STUDY) == [analysis]


@pytest.mark.parametrize("state", ["queued", "running", "retrying", "dead"])
def test_a_study_with_a_job_not_done_has_unfinished_jobs(store: JobStore, clock: Clock, state: str) -> None:
    (done,) = store.enqueue_many([_analyse(STUDY)])
    assert store.claim("analyse", "w", 60) is not None
    store.complete(done, "w")
    assert store.unfinished_jobs_of_study(STUDY) == 0 and store.studies_with_unfinished_jobs() == set()
    (job,) = store.enqueue_many([_send(f"spool/{STUDY}/1.2.3/{UID}.dcm")])
    if state != "queued":
        assert store.claim("send:pacs", "s", 60) is not None
    if state == "retrying":
        assert store.fail(job, "s", "peer down") is JobState.QUEUED  # waits for its backoff
    elif state == "dead":
        assert store.fail(job, "s", "refused", retry=False) is JobState.DEAD
    assert store.unfinished_jobs_of_study(STUDY) == 1 and store.studies_with_unfinished_jobs() == {STUDY}
    assert store.unfinished_jobs_of_study(OTHER) == 0
    # forget_study deletes done jobs only; the unfinished one stays whatever the caller thought.
    assert store.forget_study(STUDY) == 1
    assert store.get(done) is None and store.get(job) is not None


def test_forgotten_done_sends_may_be_queued_again(store: JobStore) -> None:
    job = store.enqueue("send:pacs", {"path": f"spool/{STUDY}/1.2/{UID}.dcm"}, dedup_key="pacs|x", once=True)
    assert store.claim("send:pacs", "s", 60) is not None
    store.complete(job, "s")
    assert store.enqueue("send:pacs", {"path": f"spool/{STUDY}/1.2/{UID}.dcm"}, dedup_key="pacs|x", once=True) == job
    assert store.forget_study(STUDY) == 1
    again = store.enqueue("send:pacs", {"path": f"spool/{STUDY}/1.2/{UID}.dcm"}, dedup_key="pacs|x", once=True)
    assert again > job  # ids are never reused (AUTOINCREMENT)


def test_a_version_1_store_is_upgraded_and_its_jobs_filed_under_their_studies(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as conn:  # the schema as version 1 created it, with jobs of each kind
        conn.execute(
            "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, payload TEXT NOT NULL,"
            " dedup_key TEXT, priority INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL CHECK (state IN ('queued',"
            " 'running', 'done', 'dead')), attempts INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL,"
            " lease_owner TEXT, lease_expires REAL, created REAL NOT NULL, updated REAL NOT NULL, last_error TEXT)"
        )
        rows = [
            ("analyse", f'{{"model":"m","study":"{STUDY}"}}', "done"),
            ("send:pacs", '{"path":"outbox/analyse-1/1.2/seg.dcm","peer":"pacs"}', "dead"),
            ("send:pacs", f'{{"path":"spool/{OTHER}/1.2/{UID}.dcm","peer":"pacs"}}', "done"),
            ("send:pacs", '{"peer":"pacs"}', "queued"),  # no path: concerns no study it can name
        ]
        conn.executemany(
            "INSERT INTO jobs (kind, payload, state, not_before, created, updated) VALUES (?, ?, ?, 0, 0, 0)", rows
        )
        conn.execute("PRAGMA user_version = 1")
    with JobStore(path) as store:
        assert [job.study for job in sorted(store.list(limit=10), key=lambda j: j.id)] == [STUDY, STUDY, OTHER, None]
        assert store.studies_with_unfinished_jobs() == {STUDY}  # the dead result send keeps its study
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    JobStore(path).close()  # reopening an upgraded store changes nothing
