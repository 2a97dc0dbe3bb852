"""The send stage: C-STORE of stored instances and results to the peers, retried until they answer success.

- :mod:`node.jobs.sends` (re-exported here): the send-job contract (kind ``send:<peer>``, payload, dedup
  per SOP Instance UID and peer) and :func:`enqueue_send`, which the stages that queue sends call (it
  lives in the job store's package so that the router, an earlier stage, can use it).
- :mod:`~node.send.scu`: the C-STORE SCU (one association per batch, the stored bytes sent as they are,
  decoded only for a peer that refuses the stored syntax, stall recovery) and C-ECHO; it returns one
  outcome per file and never raises for network problems. Its parts:

  - :mod:`~node.send.outcomes`: the verdict per file (:class:`FileOutcome`, :class:`Verdict`), how a
    peer's status is classified, the C-ECHO result.
  - :mod:`~node.send.contexts`: what a batch proposes (a presentation context per SOP class and transfer
    syntax) and how a batch is split when its contexts do not fit one association.
  - :mod:`~node.send.association`: :class:`ScuSettings`, opening and closing associations.
- :mod:`~node.send.sender`: the sender threads of ``serve``: claim ``send:<peer>`` jobs in batches, send
  them through the SCU, then complete, retry or park each job by the peer's answer.
- :mod:`~node.send.destination`: where to send (a configured peer, or ``HOST:PORT``).
- :mod:`~node.send.errors`: this stage's errors.
"""

from __future__ import annotations

from node.jobs.sends import SEND_KIND_PREFIX, enqueue_send, send_kind
from node.send.association import ScuSettings
from node.send.destination import Destination
from node.send.errors import DestinationError, SendError
from node.send.outcomes import EchoResult, FileOutcome, Verdict
from node.send.scu import echo, store_files
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
