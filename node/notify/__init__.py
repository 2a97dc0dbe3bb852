"""Notifications: a result's findings and suggested priority told to a webhook or an HL7 interface engine.

A notification is a job in the job store, like a send (DESIGN §4.3): the worker queues one per result
(an analysed series) and ``[[notify]]`` target whose minimum priority the result reaches, in the same
transaction as the result's sends; the sender process delivers it, retries it with backoff and parks it
as dead after ``[sender] give_up_after_hours``, retryable with ``pacs-node jobs retry``.

- :mod:`~node.notify.jobs`: the job contract (kind ``notify:<target>``, payload, dedup per result and
  target) and :func:`notify_jobs`, which the worker calls.
- :mod:`~node.notify.payload`: the JSON document of one result, from its ``findings.json`` and the
  headers of its SEG and SR.
- :mod:`~node.notify.webhook`: the signed HTTP POST.
- :mod:`~node.notify.hl7`: the ORU^R01 message; :mod:`~node.notify.mllp`: sending it over MLLP and
  reading the ACK (python-hl7).
- :mod:`~node.notify.runner`: the notifier threads of the sender process.
- :mod:`~node.notify.outcome`: the verdict of one try.
"""

from __future__ import annotations

from node.notify.jobs import NOTIFY_KIND_PREFIX, notify_jobs, notify_kind
from node.notify.outcome import Delivery, Verdict
from node.notify.runner import Notifier

__all__ = ["NOTIFY_KIND_PREFIX", "Delivery", "Notifier", "Verdict", "notify_jobs", "notify_kind"]
