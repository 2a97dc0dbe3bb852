"""DICOM TLS settings (PS3.15 Annex B secure transport connection profiles): ``[node.tls]`` and a peer's ``tls``.

- :class:`ListenerTLS`, ``[node.tls]``: when present, the node's one DICOM port speaks TLS only (no second,
  plain port): our certificate and private key, and for mutual TLS the CA certificates client certificates
  must chain to.
- :class:`PeerTLS`, a peer's ``tls = true`` or ``tls = { ... }``: we open associations to that peer over
  TLS, verify its certificate (against ``ca_certificates``, else the system's trust store) and its host
  name (unless ``verify_hostname = false``), and present our certificate when one is given (mutual TLS).

Files are PEM, named relative to the config file's folder, and checked when the config is loaded: each
must exist and be readable, certificates must parse, and the private key must be unencrypted and match
the certificate, so ``check-config`` reports a problem under its key path instead of the listener or the
sender failing later. The contexts themselves are built by :mod:`node.dicom.tls`.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from node.config.base import Loc, _check, _resolve, _Section

TLSVersion = Literal["1.2", "1.3"]


def _readable_file(path: Path) -> Path:
    """A file we can read, or why not: ``no such file``, ``is a folder``, ``cannot read (permission denied)``."""
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"not a file: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"cannot read {path} (permission denied for this user)")
    return path


_NOT_EMPTY = _check(lambda v: v != "", "must be a file path", before=True)
ConfigFile = Annotated[Path, Field(strict=False), _NOT_EMPTY, AfterValidator(_resolve), AfterValidator(_readable_file)]
"""A PEM file: relative to the config file's folder, existing and readable when the config is loaded."""


class _EncryptedKeyError(Exception):
    """The private key asks for a password (the node never prompts: it runs as a service)."""


def _no_password() -> str:
    raise _EncryptedKeyError


def certificate_problems(certificate: Path, private_key: Path | None) -> list[tuple[Loc, str]]:
    """Problems of a certificate and its key, under their keys: not PEM, encrypted key, key of another certificate."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.load_verify_locations(cafile=certificate)  # at least one PEM certificate in the file
    except ssl.SSLError:
        return [(("certificate",), f"{certificate} holds no PEM certificate")]
    try:
        probe.load_cert_chain(certificate, private_key, password=_no_password)
    except _EncryptedKeyError:
        why = (
            f"{private_key or certificate} is encrypted; the node needs an unencrypted key (readable by its user only)"
        )
        return [(("private_key",), why)]
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            return [(("private_key",), f"{private_key} is not the key of the certificate {certificate}")]
        detail = f" ({exc.reason})" if exc.reason else ""  # OpenSSL's "PEM lib" comes without one
        return [(("private_key",), f"{private_key or certificate} holds no PEM private key{detail}")]
    return []


def ca_problems(ca_certificates: Path) -> list[tuple[Loc, str]]:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=ca_certificates)
    except ssl.SSLError:
        return [(("ca_certificates",), f"{ca_certificates} holds no PEM certificate")]
    return []


class ListenerTLS(_Section):
    """``[node.tls]``: the DICOM listener speaks TLS only (TLS 1.2 or newer, BCP 195 cipher suites).

    ``require_client_certificate`` (mutual TLS) refuses a client without a certificate that chains to
    ``ca_certificates``; without it, a client certificate is optional but, when one is sent and
    ``ca_certificates`` is set, it must verify.
    """

    certificate: ConfigFile
    private_key: ConfigFile
    ca_certificates: ConfigFile | None = None
    require_client_certificate: bool = False
    min_version: TLSVersion = "1.2"

    def _relations(self) -> list[tuple[Loc, str]]:
        problems = certificate_problems(self.certificate, self.private_key)
        if self.ca_certificates is not None:
            problems += ca_problems(self.ca_certificates)
        elif self.require_client_certificate:
            why = "needs ca_certificates: the CA certificates client certificates must chain to"
            problems.append((("require_client_certificate",), why))
        return problems


class PeerTLS(_Section):
    """A peer's ``tls``: we send to it over TLS, verifying its certificate (and host name, by default).

    ``ca_certificates`` absent: the system's trust store. ``certificate`` + ``private_key``: ours, for a
    peer that requires client certificates (mutual TLS).
    """

    ca_certificates: ConfigFile | None = None
    certificate: ConfigFile | None = None
    private_key: ConfigFile | None = None
    verify_hostname: bool = True
    min_version: TLSVersion = "1.2"

    def _relations(self) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        if (self.certificate is None) != (self.private_key is None):
            key = "private_key" if self.private_key is None else "certificate"
            problems.append(((key,), "missing: give certificate and private_key (for mutual TLS), or neither"))
        elif self.certificate is not None:
            problems += certificate_problems(self.certificate, self.private_key)
        if self.ca_certificates is not None:
            problems += ca_problems(self.ca_certificates)
        return problems


def _peer_tls(value: Any) -> Any:
    """``tls = true``: TLS with the defaults; ``false``: none; a table: its settings."""
    if value is True:
        return {}
    if value is False:
        return None
    if value is None or isinstance(value, dict | PeerTLS):
        return value
    shown = repr(value) if not isinstance(value, list) else "an array"
    raise ValueError(f'must be true, false or a table such as {{ ca_certificates = "ca.pem" }}, not {shown}')


PeerTLSSetting = Annotated[PeerTLS | None, BeforeValidator(_peer_tls)]
"""A peer's ``tls`` key: ``true``, ``false`` or a :class:`PeerTLS` table; ``None`` when absent or false."""
