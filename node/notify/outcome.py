"""The verdict of one delivery try, and the error a result that cannot be described raises."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from node.errors import NodeError


class Verdict(StrEnum):
    """What the job store does with a notification after one try."""

    DELIVERED = "delivered"  # the receiver acknowledged it: the job is done
    RETRY = "retry"  # down, timed out, a server error: queued again after the backoff
    PARK = "park"  # refused for good (bad request, wrong secret, AR): dead until a person retries it


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one try: the verdict and, unless delivered, why (stored as the job's last error)."""

    verdict: Verdict
    reason: str = ""


class ResultUnreadableError(NodeError):
    """The result a notification describes cannot be read (its findings.json or a result file)."""
