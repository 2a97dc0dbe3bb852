"""Logging set-up.

One logger per module (``logging.getLogger(__name__)``). Context such as the job id or the peer AE
title travels in context variables and is added to every record by a filter, so call sites never
format it themselves. Never log patient name, patient ID or birth date.
"""

from __future__ import annotations

import contextvars
import logging
import sys

job_id: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="-")
peer_ae: contextvars.ContextVar[str] = contextvars.ContextVar("peer_ae", default="-")


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = job_id.get()
        record.peer_ae = peer_ae.get()
        return True


def setup(level: str = "INFO", stream: object = None) -> None:
    """Configure the root logger once: one line per record with time, level, logger and context."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)  # type: ignore[arg-type]
    handler.addFilter(_ContextFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [job=%(job_id)s peer=%(peer_ae)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom logs every PDU at DEBUG; that costs throughput and fills disks.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, root.level))
    # A peer that is down makes pynetdicom's transport log two ERROR lines per attempt; the sender reports
    # each failed attempt itself, once, with the peer's name.
    logging.getLogger("pynetdicom.transport").setLevel(logging.CRITICAL)
    # highdicom logs every copied module with the source's SOP Instance UID at INFO.
    logging.getLogger("highdicom").setLevel(max(logging.WARNING, root.level))
