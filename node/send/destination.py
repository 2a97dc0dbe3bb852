"""Where an association goes: a configured peer, or a ``HOST:PORT`` given on the command line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from node.config import Peer
from node.config.deid import Deidentify
from node.config.tls import PeerTLS
from node.send.errors import DestinationError

DEFAULT_CALLED_AE = "ANY-SCP"


@dataclass(frozen=True, slots=True)
class Destination:
    """A DICOM peer to open associations with.

    Attributes
    ----------
    ae_title
        Its AE title (the Called AE Title we send).
    host, port
        Where it listens: a host name or an IP address, and a TCP port.
    name
        The peer's name in the config, or ``None`` for an address given on the command line.
    tls
        The peer's TLS settings when associations to it go over TLS (its ``tls`` in the config), else ``None``.
    deidentify
        The peer's ``deidentify`` when every instance sent to it is de-identified (:mod:`node.send.deidentify`).
    """

    ae_title: str
    host: str
    port: int
    name: str | None = None
    tls: PeerTLS | None = None
    deidentify: Deidentify | None = None

    @classmethod
    def from_peer(cls, peer: Peer) -> Destination:
        """The destination of a configured peer; :class:`DestinationError` if it has no host and port."""
        if peer.host is None or peer.port is None:
            raise DestinationError(f"peer '{peer.name}' has no host and port to send to (add them to its [[peers]])")
        return cls(peer.ae_title, peer.host, peer.port, peer.name, peer.tls, peer.deidentify)

    @property
    def address(self) -> str:
        """``AE@host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"

    def __str__(self) -> str:
        """``pacs (ORTHANC@10.1.2.3:4242)`` for a peer, ``ORTHANC@10.1.2.3:4242`` for an address."""
        return f"{self.name} ({self.address})" if self.name else self.address


def parse_host_port(text: str) -> tuple[str, int] | None:
    """``("host", port)`` from ``HOST:PORT`` or ``[IPv6]:PORT``; ``None`` if ``text`` has no port."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # a bare IPv6 address without brackets: the last part is not a port
        return None
    number = int(port)
    if not 1 <= number <= 65535:
        raise DestinationError(f"'{text}': port must be 1..65535, not {number}")
    return host, number


def resolve_destination(spec: str, peers: Sequence[Peer], called_ae: str | None = None) -> Destination:
    """The destination a user named: a peer name from the config, or ``HOST:PORT``.

    A peer name wins over an address. ``called_ae`` replaces the peer's AE title, and is the Called AE
    Title for an address (default ``ANY-SCP``).

    Raises
    ------
    DestinationError
        ``spec`` is neither a peer name nor ``HOST:PORT`` (the message lists the peers), or the peer has
        no host and port.
    """
    for peer in peers:
        if peer.name == spec:
            destination = Destination.from_peer(peer)
            if called_ae:
                destination = replace(destination, ae_title=called_ae)
            return destination
    address = parse_host_port(spec)
    if address is not None:
        return Destination(called_ae or DEFAULT_CALLED_AE, address[0], address[1])
    receiving = [p.name for p in peers if p.can_receive]
    if not peers:
        hint = "give HOST:PORT, or --config FILE to use the peer names of a config"
    elif receiving:
        hint = f"peers we can send to: {', '.join(receiving)}; or give HOST:PORT"
    else:
        hint = "no peer in the config has a host and port; give HOST:PORT"
    raise DestinationError(f"'{spec}' is not a peer name or HOST:PORT ({hint})")
