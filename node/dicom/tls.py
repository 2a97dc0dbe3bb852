"""TLS for DICOM associations (PS3.15 Annex B): ``ssl.SSLContext`` objects from the config, failures in words.

Both sides follow the BCP 195 secure transport connection profiles: TLS 1.2 or newer (``min_version``
"1.3" for TLS 1.3 only; TLS 1.0 and 1.1, SSL, compression and renegotiation are refused), and for TLS 1.2
only the ECDHE and DHE suites with AES-GCM (:data:`BCP195_TLS12_CIPHERS`, the suites of the Non-Downgrading
BCP 195 profile); TLS 1.3 suites are OpenSSL's, all of them AEAD.

- :func:`server_context`: the listener's (``[node.tls]``). With ``ca_certificates`` a client certificate
  is verified when sent; with ``require_client_certificate`` one is required (mutual TLS).
- :func:`client_context`: for sending to a peer (its ``tls``): the peer's certificate is verified against
  ``ca_certificates`` (else the system's trust store) and its host name checked unless ``verify_hostname``
  is false; our certificate is presented when one is configured. Built once per peer setting.
- :class:`TLSAttempt`: one association attempt's ``tls_args`` for pynetdicom's ``AE.associate``; after a
  failure, :meth:`TLSAttempt.why` says what went wrong in the TLS layer (pynetdicom only reports that the
  connection failed).
- :func:`explain`: an ``ssl`` error in words, from the server's or the client's side.
"""

from __future__ import annotations

import functools
import socket
import ssl
from typing import Any, Literal, cast

from node.config.tls import ListenerTLS, PeerTLS
from node.errors import ConfigError

__all__ = ["BCP195_TLS12_CIPHERS", "TLSAttempt", "client_context", "explain", "server_context"]

# TLS 1.2 suites (OpenSSL names): ECDHE-{ECDSA,RSA}-AES{128,256}-GCM-SHA{256,384}, DHE-RSA-AES{128,256}-GCM-*.
BCP195_TLS12_CIPHERS = "ECDHE+AESGCM:DHE+AESGCM:!aNULL:!eNULL:!PSK:!SRP:!DSS"
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_OPTIONS = ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_SINGLE_DH_USE | ssl.OP_SINGLE_ECDH_USE
# X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH: the certificate does not name the host.
_NAME_MISMATCH = (62, 64)

Side = Literal["server", "client"]


def _harden(context: ssl.SSLContext, min_version: str) -> ssl.SSLContext:
    context.minimum_version = _VERSIONS[min_version]
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= _OPTIONS
    return context


def server_context(tls: ListenerTLS) -> ssl.SSLContext:
    """The listener's context from ``[node.tls]``.

    Raises
    ------
    ConfigError
        A file changed since the config was loaded and can no longer be used.
    """
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), tls.min_version)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(tls.certificate, tls.private_key)
        if tls.ca_certificates is not None:
            context.load_verify_locations(cafile=tls.ca_certificates)
    except OSError as exc:  # ssl.SSLError too
        raise ConfigError(f"node.tls: the certificate, key or CA files can no longer be used: {exc}") from None
    if tls.require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
    elif tls.ca_certificates is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


class _WatchedSocket(ssl.SSLSocket):
    """An SSLSocket that tells its :class:`TLSAttempt` why its handshake (or a read after it) failed."""

    attempt: TLSAttempt | None = None

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except OSError as exc:
            if self.attempt is not None:
                self.attempt.failed(exc, in_handshake=True)
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        # TLS 1.3: a server refusing our client certificate says so after our side of the handshake is done.
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as exc:
            if self.attempt is not None:
                self.attempt.failed(exc, in_handshake=False)
            raise


@functools.lru_cache(maxsize=64)
def client_context(tls: PeerTLS) -> ssl.SSLContext:
    """The context for sending to a peer with ``tls`` (cached: one per distinct setting).

    Raises
    ------
    ConfigError
        A file changed since the config was loaded and can no longer be used.
    """
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), tls.min_version)  # CERT_REQUIRED
    try:
        if tls.ca_certificates is not None:
            context.load_verify_locations(cafile=tls.ca_certificates)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if tls.certificate is not None:
            context.load_cert_chain(tls.certificate, tls.private_key)
    except OSError as exc:
        raise ConfigError(f"tls: the certificate, key or CA files can no longer be used: {exc}") from None
    context.check_hostname = tls.verify_hostname
    context.sslsocket_class = _WatchedSocket
    return context


class TLSAttempt:
    """One association attempt over TLS: ``tls_args`` for ``AE.associate`` and, after it failed, why.

    pynetdicom calls only ``wrap_socket`` on the context it is given, then ``connect`` (which does the
    handshake) on the socket; both its failure and the reason are logged nowhere we see. This object
    stands in for the context, hands pynetdicom a socket that reports to it, and keeps the first error.
    """

    def __init__(self, tls: PeerTLS, host: str) -> None:
        self.tls = tls
        self.host = host
        self.context = client_context(tls)
        self.error: OSError | None = None
        self.in_handshake = False
        self.has_certificate = tls.certificate is not None

    @property
    def tls_args(self) -> tuple[ssl.SSLContext, str]:
        return cast(ssl.SSLContext, self), self.host

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        wrapped = self.context.wrap_socket(sock, *args, **kwargs)
        if isinstance(wrapped, _WatchedSocket):
            wrapped.attempt = self
        return wrapped

    def failed(self, exc: OSError, *, in_handshake: bool) -> None:
        if self.error is None:
            self.error, self.in_handshake = exc, in_handshake

    def why(self, where: str) -> str | None:
        """Why the TLS layer failed, in words naming ``where`` and the setting to check; ``None`` if it did not."""
        if self.error is None:
            return None
        return explain(self.error, "client", where=where, host=self.host, has_certificate=self.has_certificate)


def _alert(reason: str) -> str:
    """``TLSV1_ALERT_UNKNOWN_CA`` -> ``unknown ca``."""
    return reason.split("ALERT_", 1)[1].lower().replace("_", " ")


def _not_trusted_alert(reason: str) -> bool:
    return any(word in reason for word in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN", "DECRYPT_ERROR"))


def explain(
    exc: OSError,
    side: Side,
    *,
    where: str = "the peer",
    host: str = "",
    has_certificate: bool = True,
    min_version: str = "1.2",
    timeout: float | None = None,
) -> str:
    """Why a TLS handshake failed, for the log (``side``: ours, when ``exc`` was raised).

    ``where`` names the other side; ``host``, ``has_certificate`` (the client's) and ``min_version``
    (the server's) make the hints precise.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = str(exc.verify_message or exc.reason or exc)
        if side == "server":
            return f"client certificate not trusted: {message} (node.tls.ca_certificates)"
        if exc.verify_code in _NAME_MISMATCH:
            return (
                f"TLS: the certificate of {where} does not name the host we connect to ({message}): use a host "
                "name its certificate holds, or set the peer's tls.verify_hostname = false"
            )
        return f"TLS: the certificate of {where} is not trusted: {message} (check the peer's tls.ca_certificates)"
    if isinstance(exc, TimeoutError | socket.timeout):
        after = f" within {timeout:g} s" if timeout else ""
        return f"no TLS handshake{after}" if side == "server" else f"TLS: no handshake with {where}{after}"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ConnectionResetError | BrokenPipeError):
        if side == "server":
            return "the client closed the connection during the TLS handshake (it may not trust our certificate)"
        return (
            f"TLS: {where} closed the connection during the handshake (does it speak TLS on this port? does it "
            "require a client certificate, or not trust ours?)"
        )
    reason = str(getattr(exc, "reason", "") or "")
    if side == "server":
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "no client certificate, and node.tls.require_client_certificate = true (mutual TLS)"
        if reason in ("UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE", "TLSV1_ALERT_PROTOCOL_VERSION"):
            return f"the client offers only TLS versions older than {min_version} (node.tls.min_version)"
        if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG"):
            return "not a TLS client (plain DICOM on the TLS port?)"
        if reason == "NO_SHARED_CIPHER":
            return "no cipher suite in common (TLS 1.2 needs ECDHE or DHE with AES-GCM, BCP 195)"
        if "ALERT_" in reason and _not_trusted_alert(reason):
            return f"the client does not trust our certificate (TLS alert: {_alert(reason)})"
        if "ALERT_" in reason:
            return f"the client ended the handshake (TLS alert: {_alert(reason)})"
        return f"TLS handshake failed: {reason or exc}"
    if reason in ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE") and not has_certificate:
        return (
            f"TLS: {where} requires a client certificate: set the peer's tls.certificate and tls.private_key "
            f"({_alert(reason)})"
        )
    if "ALERT_" in reason and _not_trusted_alert(reason) and has_certificate:
        return (
            f"TLS: {where} does not trust our client certificate (TLS alert: {_alert(reason)}): it must trust "
            "the CA that issued the peer's tls.certificate"
        )
    if reason in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"):
        return f"TLS: no protocol version in common with {where} (we need TLS 1.2 or newer)"
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return f"TLS: {where} does not speak TLS on this port (a plain DICOM port?)"
    if reason in ("SSLV3_ALERT_HANDSHAKE_FAILURE", "NO_CIPHERS_AVAILABLE"):
        return f"TLS: {where} refused the handshake (no cipher suite or certificate type in common?)"
    if "ALERT_" in reason:
        return f"TLS: {where} ended the handshake (TLS alert: {_alert(reason)})"
    return f"TLS: handshake with {where} failed: {reason or exc}"
