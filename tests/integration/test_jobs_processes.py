"""Several processes on one job store file: no job claimed twice, and a killed worker's job is not lost.

Workers are separate Python interpreters (subprocesses), as the node's worker processes are: they share
nothing but the SQLite file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from node.jobs import JobState, JobStore

ROOT = Path(__file__).resolve().parents[2]

# argv: database, owner, mode ("drain": wait for a line on stdin, then claim and complete until the
# queue is empty; "hold": claim one job and hang while holding its lease), lease seconds.
WORKER = """
import sys, time
from node.jobs import JobStore

path, owner, mode, lease = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
store = JobStore(path)
print("ready", flush=True)
if mode == "drain":
    sys.stdin.readline()
    while (job := store.claim("work", owner, lease)) is not None:
        print(job.id, flush=True)
        time.sleep(0.002)  # a little work, so that the workers interleave
        store.complete(job.id, owner)
else:
    job = store.claim("work", owner, lease)
    print(job.id, flush=True)
    time.sleep(600)
"""


def start_worker(path: Path, owner: str, mode: str, lease: float) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(path), owner, mode, str(lease)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    line = worker.stdout.readline().strip()
    assert line == "ready", worker.stderr.read() if worker.stderr else line
    return worker


def run_drain(workers: list[subprocess.Popen[str]]) -> list[list[int]]:
    """Release the workers together and return the job ids each one claimed."""
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    claimed = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        claimed.append([int(line) for line in out.split()])
    return claimed


def test_four_processes_complete_every_job_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with JobStore(path) as store:
        ids = [store.enqueue("work", {"n": n}, priority=n % 3) for n in range(200)]
    workers = [start_worker(path, f"worker-{n}", "drain", 30) for n in range(4)]
    claimed = run_drain(workers)

    every_claim = [job_id for ids_of_one in claimed for job_id in ids_of_one]
    assert len(every_claim) == len(set(every_claim)) == 200, "a job was claimed twice"
    assert sorted(every_claim) == ids
    assert sum(1 for ids_of_one in claimed if ids_of_one) >= 2, f"no concurrency: {list(map(len, claimed))}"
    with JobStore(path) as store:
        jobs = store.list(limit=1000)
        assert {job.state for job in jobs} == {JobState.DONE}
        assert {job.attempts for job in jobs} == {1}  # a second claim would have counted a second attempt
        assert store.counts() == {("work", JobState.DONE): 200}


def test_job_of_a_killed_worker_is_requeued_and_completed_by_another(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    lease = 2.0
    with JobStore(path) as store:
        job_id = store.enqueue("work", {"n": 1})
        holder = start_worker(path, "holder", "hold", lease)
        assert holder.stdout is not None
        assert int(holder.stdout.readline()) == job_id
        os.kill(holder.pid, signal.SIGKILL)
        holder.communicate(timeout=10)
        assert holder.returncode == -signal.SIGKILL

        job = store.get(job_id)
        assert job is not None and job.state is JobState.RUNNING and job.lease_owner == "holder"
        assert store.requeue_expired() == 0  # the lease still runs: the job is not taken back early
        deadline = time.monotonic() + lease + 5
        while (requeued := store.requeue_expired()) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert requeued == 1
        job = store.get(job_id)
        assert job is not None and job.state is JobState.QUEUED and job.last_error is not None
        assert "holder" in job.last_error

        assert run_drain([start_worker(path, "rescuer", "drain", 30)]) == [[job_id]]
        job = store.get(job_id)
        assert job is not None and job.state is JobState.DONE and job.attempts == 2
