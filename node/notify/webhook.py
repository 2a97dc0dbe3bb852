"""The webhook: one HTTP(S) POST of a result's JSON document, signed with HMAC-SHA256.

Headers::

    Content-Type: application/json
    X-PacsNode-Signature: sha256=<hex of HMAC-SHA256(secret, body)>
    Idempotency-Key: <target>|<SR SOP Instance UID>     (the same on every try of the result)
    X-PacsNode-Event: result

Any 2xx answer delivers the notification. 408, 409, 425, 429, 5xx, a refused connection, a timeout or a
TLS failure are retried; any other answer (a bad request, a wrong secret: 401/403, a missing endpoint)
parks it: another try would get the same answer until a person fixes the config or the receiver.
Redirects are not followed: a signed POST goes only where the config says.

TLS: an ``https://`` URL is verified against ``ca_certificates`` (or the system's trust store), with the
host name checked; there is no switch to turn verification off.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ssl
from urllib.parse import urlsplit

from node.config.notify import NotifyTarget
from node.notify.outcome import Delivery, Verdict

SIGNATURE_HEADER = "X-PacsNode-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-PacsNode-Event"
_RETRIED = {408, 409, 425, 429}  # timeouts, conflicts with a concurrent try, rate limits: worth another try
_ANSWER_CHARS = 200  # of a refusal's body, kept in the job's last error


def signature(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``body`` keyed with ``secret``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _connection(target: NotifyTarget) -> http.client.HTTPConnection:
    url = urlsplit(str(target.url))
    host = str(url.hostname)
    if url.scheme == "https":
        cafile = None if target.ca_certificates is None else str(target.ca_certificates)
        context = ssl.create_default_context(cafile=cafile)  # verifies the chain and the host name
        return http.client.HTTPSConnection(host, url.port, timeout=target.timeout_s, context=context)
    return http.client.HTTPConnection(host, url.port, timeout=target.timeout_s)


def post(target: NotifyTarget, body: bytes, key: str) -> Delivery:
    """POST ``body`` (JSON) to ``target.url``, signed; never raises for network problems.

    Parameters
    ----------
    target
        A webhook target (``url`` and ``secret`` set).
    body
        The document's bytes; signed as they are.
    key
        The idempotency key (see :func:`node.notify.jobs.idempotency_key`).
    """
    if target.url is None or target.secret is None:
        return Delivery(Verdict.PARK, f"notify target '{target.name}' has no url or secret")
    url = urlsplit(target.url)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(target.secret, body),
        IDEMPOTENCY_HEADER: key,
        EVENT_HEADER: "result",
        "User-Agent": "pacs-node",
    }
    connection = _connection(target)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read(4096).decode("utf-8", errors="replace").strip()
        status = response.status
    except ssl.SSLError as exc:
        return Delivery(Verdict.RETRY, f"TLS with {url.hostname} failed: {exc.reason or exc}")
    except TimeoutError:
        return Delivery(Verdict.RETRY, f"no answer from {url.hostname} within {target.timeout_s:g} s")
    except (OSError, http.client.HTTPException) as exc:
        return Delivery(Verdict.RETRY, f"cannot post to {url.hostname}:{url.port or url.scheme}: {exc}")
    finally:
        connection.close()
    if 200 <= status < 300:
        return Delivery(Verdict.DELIVERED)
    reason = f"{target.url} answered HTTP {status}" + (f": {answer[:_ANSWER_CHARS]}" if answer else "")
    if status in (401, 403):
        reason += " (check the secret shared with the receiver)"
    retry = status in _RETRIED or status >= 500
    return Delivery(Verdict.RETRY if retry else Verdict.PARK, reason)
