"""The send stage: C-STORE of stored instances and results to the peers, retried until they answer success.

- :mod:`node.jobs.sends` (re-exported here): the send-job contract (kind ``send:<peer>``, payload, dedup
  per SOP Instance UID and peer) and :func:`enqueue_send`, which the stages that queue sends call (it
  lives in the job store's package so that the router, an earlier stage, can use it).
- :mod:`~node.send.scu`: the C-STORE SCU (one association per batch, a presentation context per SOP class
  and transfer syntax, the stored bytes sent as they are, stall recovery) and C-ECHO; it returns one
  outcome per file and never raises for network problems.
- :mod:`~node.send.sender`: the sender threads of ``serve``: claim ``send:<peer>`` jobs in batches, send
  them through the SCU, then complete, retry or park each job by the peer's answer.
- :mod:`~node.send.destination`: where to send (a configured peer, or ``HOST:PORT``).
- :mod:`~node.send.errors`: this stage's errors.
"""

from __future__ import annotations

from node.jobs.sends import SEND_KIND_PREFIX, enqueue_send, send_kind
from node.send.destination import Destination
from node.send.errors import DestinationError, SendError
from node.send.scu import EchoResult, FileOutcome, ScuSettings, Verdict, echo, store_files
from node.send.sender import Sender, sender_job_store

__all__ = [
    "SEND_KIND_PREFIX",
    "Destination",
    "DestinationError",
    "EchoResult",
    "FileOutcome",
    "ScuSettings",
    "SendError",
    "Sender",
    "Verdict",
    "echo",
    "enqueue_send",
    "send_kind",
    "sender_job_store",
    "store_files",
]
