"""``[[notify]]``: who is told about a result, besides the PACS that receives its SEG and SR.

A target is a webhook (an HTTPS or HTTP POST of a JSON document, signed with HMAC-SHA256) or an HL7 v2
interface engine (ORU^R01 over MLLP, acknowledged). Each has a minimum priority: a result whose
suggested priority is below it notifies nobody there. Keys of the other kind are refused, with the kind
they belong to. Delivery itself is :mod:`node.notify`; its retries follow ``[sender]``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from node.config.base import Host, Loc, Port, Seconds, Slug, _check, _problems, _Section
from node.config.tls import ConfigFile, ca_problems

# The suggested priorities, lowest first: the values of node.analyse.types.Priority (config is a shared
# module and must not import a stage; tests/unit/test_notify_parts.py holds the two lists equal).
PRIORITIES = ("LOW", "ROUTINE", "MEDIUM", "HIGH", "STAT")
PriorityName = Literal["LOW", "ROUTINE", "MEDIUM", "HIGH", "STAT"]

_WEBHOOK_KEYS = ("url", "secret", "ca_certificates")
_HL7_KEYS = (
    "host",
    "port",
    "sending_application",
    "sending_facility",
    "receiving_application",
    "receiving_facility",
    "include_patient",
)


def _http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a port that is not a number or out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0 and not parts.fragment


Url = Annotated[str, _check(_http_url, "must be an http:// or https:// URL such as 'https://ris.example/hooks/ai'")]
# HMAC keys shorter than this are guessable; the secret is shared with the receiver, never sent.
Secret = Annotated[str, _check(lambda v: 16 <= len(v) <= 1024, "must be 16..1024 characters (a random string)")]
# HL7 HD (namespace ID): printable ASCII without the message's separator characters | ^ ~ \ &.
_HD = "must be 1..40 printable ASCII characters without | ^ ~ \\ &"
HDName = Annotated[
    str, _check(lambda v: 0 < len(v) <= 40 and all(" " <= c <= "~" and c not in "|^~\\&" for c in v), _HD)
]


class NotifyTarget(_Section):
    """One ``[[notify]]`` table: a webhook or an HL7 v2 (MLLP) target."""

    name: Slug
    kind: Literal["webhook", "hl7"]
    # Results whose suggested priority is below this one do not notify this target.
    min_priority: PriorityName = "LOW"
    # Seconds for connecting, and then for the answer (HTTP response, HL7 ACK); past it the try is retried.
    timeout_s: Seconds = 10.0
    # webhook
    url: Url | None = None
    secret: Secret | None = None
    ca_certificates: ConfigFile | None = None  # CAs the server's certificate must chain to (default: system's)
    # hl7
    host: Host | None = None
    port: Port | None = None
    sending_application: HDName = "PACSNODE"
    sending_facility: HDName | None = None
    receiving_application: HDName | None = None
    receiving_facility: HDName | None = None
    # PID-3/5/7/8 (patient ID, name, birth date, sex) from the source, when it had them; off by default:
    # the order is identified by its accession number and the study's UID.
    include_patient: bool = False

    def _relations(self) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        other: tuple[str, ...]
        if self.kind == "webhook":
            needed, other, other_kind = ("url", "secret"), _HL7_KEYS, "hl7"
        else:
            needed, other, other_kind = ("host", "port"), _WEBHOOK_KEYS, "webhook"
        problems += [
            ((key,), f"missing (required for kind = '{self.kind}')") for key in needed if getattr(self, key) is None
        ]
        given = self.model_fields_set
        problems += [((key,), f"only for kind = '{other_kind}'") for key in other if key in given]
        if self.kind == "webhook" and self.ca_certificates is not None:
            problems += ca_problems(self.ca_certificates)
            if self.url is not None and not self.url.startswith("https:"):
                problems.append((("ca_certificates",), "only for an https:// url"))
        return problems


def _unique_names(targets: tuple[NotifyTarget, ...]) -> tuple[NotifyTarget, ...]:
    seen: set[str] = set()
    problems: list[tuple[Loc, str]] = []
    for i, target in enumerate(targets):
        if target.name in seen:
            problems.append(((i, "name"), f"'{target.name}' is already a notify target name; names must be unique"))
        seen.add(target.name)
    if problems:
        raise _problems(problems)
    return targets


NotifyTargets = Annotated[tuple[NotifyTarget, ...], Field(strict=False), AfterValidator(_unique_names)]
"""The ``[[notify]]`` array of :class:`node.config.tree.NodeConfig`."""


def priority_rank(name: str) -> int:
    """Position of a priority name in :data:`PRIORITIES` (LOW is 0); ``ValueError`` for another name."""
    return PRIORITIES.index(name)


def notifies(target: NotifyTarget, priority: Any) -> bool:
    """Whether a result of suggested ``priority`` (a name such as ``"HIGH"``) notifies ``target``.

    A result with no priority, or one this node does not know, notifies every target: a missed
    notification is worse than an extra one.
    """
    name = str(priority)
    return name not in PRIORITIES or priority_rank(name) >= priority_rank(target.min_priority)
