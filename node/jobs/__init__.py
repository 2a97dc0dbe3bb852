"""Durable job store: enqueue, claim with a lease, retry with backoff, park dead jobs.

The store is one SQLite file shared by the node process and its worker processes, the only channel
between them (DESIGN §3). ``store`` holds :class:`JobStore`, ``types`` the job record and the errors
(their tree is drawn there), ``backoff`` the retry delay.
"""

from __future__ import annotations

from node.jobs.backoff import delay
from node.jobs.store import JobStore
from node.jobs.types import (
    Job,
    JobError,
    JobNotFoundError,
    JobState,
    JobStateError,
    JobStoreError,
    LeaseLostError,
    NewJob,
)

__all__ = [
    "Job",
    "JobError",
    "JobNotFoundError",
    "JobState",
    "JobStateError",
    "JobStore",
    "JobStoreError",
    "LeaseLostError",
    "NewJob",
    "delay",
]
