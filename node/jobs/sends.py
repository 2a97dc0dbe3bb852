"""The send-job contract: the kind and payload of a send job, and :func:`enqueue_send`, which every stage
that queues a send (router, analysis workers) calls.

A send job has kind ``send:<peer>`` (one kind per peer: a sender thread claims only its peer's jobs) and
payload ``{"peer", "path", "sop", "sop_class"}``, ``path`` relative to ``node.data_dir``. It is
idempotent per (SOP Instance UID, peer): dedup key ``<peer>|<sop>`` with ``once=True``, so a send that is
queued, running or done is never queued again.
"""

from __future__ import annotations

from node.jobs.kinds import SEND_KIND_PREFIX
from node.jobs.store import JobStore
from node.jobs.types import NewJob

__all__ = ["SEND_KIND_PREFIX", "enqueue_send", "send_job", "send_kind"]


def send_kind(peer: str) -> str:
    """The job kind of sends to ``peer`` (a peer name from the config): ``send:<peer>``."""
    return f"{SEND_KIND_PREFIX}{peer}"


def send_job(peer: str, path_rel: str, sop: str, sop_class: str, priority: int = 0) -> NewJob:
    """The send job of one file to one peer, for :meth:`JobStore.enqueue_many` (see :func:`enqueue_send`)."""
    if not peer or not path_rel or not sop or not sop_class:
        raise ValueError("a send needs a peer, a path, a SOP Instance UID and a SOP Class UID")
    payload = {"peer": peer, "path": path_rel, "sop": sop, "sop_class": sop_class}
    return NewJob(send_kind(peer), payload, dedup_key=f"{peer}|{sop}", priority=priority, once=True)


def enqueue_send(jobs: JobStore, peer: str, path_rel: str, sop: str, sop_class: str, priority: int = 0) -> int:
    """Queue the C-STORE of one Part-10 file to ``peer``, once per (SOP Instance UID, peer).

    Parameters
    ----------
    jobs
        The job store.
    peer
        Name of a peer in the config that can receive (has host and port).
    path_rel
        The file, relative to ``node.data_dir`` (a relative POSIX path such as ``spool/1.2/3.4/5.6.dcm``).
    sop, sop_class
        SOP Instance UID and SOP Class UID of the instance in the file.
    priority
        Higher is sent first (e.g. results before forwarded studies).

    Returns
    -------
    int
        The job's id: a new job, or the queued, running or done job that already sends this instance to
        this peer (nothing is added then).
    """
    return jobs.enqueue_many([send_job(peer, path_rel, sop, sop_class, priority)])[0]
