"""DICOM TLS on real associations on 127.0.0.1: the node's listener (SCP) and its SCU, with pynetdicom peers.

Certificates are made at test time by trustme (no key is committed): a CA the tests trust, which issues the
node's, the peers' and a scanner's certificates, and another CA nobody here trusts.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from node.config import NodeConfig, parse_config
from node.config.tls import PeerTLS
from node.dicom.status import Status
from node.receive import Receiver, StoreHandler
from node.send.destination import Destination, resolve_destination
from node.send.scu import ScuSettings, Verdict, echo, store_files
from node.store import DiskGuard, Index, Spool
from tests.helpers import node_toml, tiny_ct
from tests.peers import free_port

HOST = "127.0.0.1"
STUDY, SERIES = "1.2.826.0.1.3680043.10.2", "1.2.826.0.1.3680043.10.2.1"
FAST = ScuSettings("PACSNODE", acse_timeout=3.0, dimse_timeout=3.0, network_timeout=5.0)
SERVER_LOG = "node.receive.server"


# -- certificates --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """A PEM certificate (chain) and its unencrypted private key."""

    certificate: Path
    key: Path


class Pki:
    """Two CAs and their certificates as PEM files in ``folder``.

    ``ca`` (trusted by the tests) issued ``node`` (localhost, 127.0.0.1), ``peer`` (the same names: a
    PACS the node sends to), ``scanner`` (a client certificate) and ``elsewhere`` (valid, for another host
    name); ``other`` (trusted by nobody) issued ``rogue``, a client certificate with the scanner's name.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._ca = trustme.CA(organization_name="pacs-node tests")
        self._other = trustme.CA(organization_name="someone else")
        self.ca = self._write_ca(self._ca, "ca")
        self.other_ca = self._write_ca(self._other, "other-ca")
        self.node = self._issue(self._ca, "node", "localhost", HOST)
        self.peer = self._issue(self._ca, "peer", "localhost", HOST)
        self.scanner = self._issue(self._ca, "scanner", "scanner.example.org")
        self.elsewhere = self._issue(self._ca, "elsewhere", "pacs.example.org")
        self.rogue = self._issue(self._other, "rogue", "scanner.example.org")

    def _write_ca(self, ca: trustme.CA, name: str) -> Path:
        path = self.folder / f"{name}.pem"
        ca.cert_pem.write_to_path(str(path))
        return path

    def _issue(self, ca: trustme.CA, name: str, *identities: str) -> Pair:
        leaf = ca.issue_cert(*identities)
        pair = Pair(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        for i, pem in enumerate(leaf.cert_chain_pems):
            pem.write_to_path(str(pair.certificate), append=i > 0)
        leaf.private_key_pem.write_to_path(str(pair.key))
        return pair

    def listener_toml(self, *, mutual: bool = False, min_version: str = "1.2") -> str:
        """``[node.tls]`` with the node's certificate; ``mutual``: client certificates from ``ca`` required."""
        text = f'[node.tls]\ncertificate = "{self.node.certificate}"\nprivate_key = "{self.node.key}"\n'
        text += f'min_version = "{min_version}"\n'
        if mutual:
            text += f'ca_certificates = "{self.ca}"\nrequire_client_certificate = true\n'
        return text

    def client_context(
        self, pair: Pair | None = None, *, trust: Path | None = None, version: ssl.TLSVersion | None = None
    ) -> ssl.SSLContext:
        """A test client's context: trusts ``trust`` (default ``ca``), presents ``pair`` if given."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=trust or self.ca)
        if pair is not None:
            context.load_cert_chain(pair.certificate, pair.key)
        if version is not None:
            with warnings.catch_warnings():  # setting TLS 1.0/1.1 is deprecated: that is the point
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = context.maximum_version = version
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 allows TLS 1.1 only at level 0
        return context

    def server_context(self, pair: Pair, *, clients_from: Path | None = None) -> ssl.SSLContext:
        """A test SCP's context presenting ``pair``; ``clients_from``: client certificates required, from that CA."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pair.certificate, pair.key)
        if clients_from is not None:
            context.load_verify_locations(cafile=clients_from)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def peer_tls(self, pair: Pair | None = None, *, trust: Path | None = None, verify_hostname: bool = True) -> PeerTLS:
        """The node's settings for sending to a TLS peer (as a peer's ``tls`` table would give them)."""
        table: dict[str, Any] = {"ca_certificates": str(trust or self.ca), "verify_hostname": verify_hostname}
        if pair is not None:
            table |= {"certificate": str(pair.certificate), "private_key": str(pair.key)}
        return PeerTLS.model_validate(table)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(0.02)


def refusals(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == SERVER_LOG and r.levelno == level and "TLS connection from" in r.getMessage()
    ]


# -- the node's listener ----------------------------------------------------------------------------------


class TLSNode:
    """A receiver with ``[node.tls]`` over a temp data dir, as serve builds it (without the other stages)."""

    def __init__(self, tmp: Path, tls_toml: str) -> None:
        self.port = free_port()
        self.config: NodeConfig = parse_config(node_toml(tmp / "data", self.port, extra=tls_toml))
        node = self.config.node
        self.spool = Spool(node.spool_dir)
        self.index = Index(node.index_path)
        guard = DiskGuard(node.data_dir, 0, ttl=0.0)
        self.receiver = Receiver(self.config, StoreHandler(self.spool, self.index, guard, keep_first=True))
        self.receiver.start()

    def associate(self, context: ssl.SSLContext | None, calling: str = "STORESCU") -> Association:
        ae = AE(ae_title=calling)
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 5
        tls_args = (context, "localhost") if context is not None else None
        return ae.associate(HOST, self.port, ae_title="PACSNODE", tls_args=tls_args)

    def close(self) -> None:
        self.receiver.stop()
        self.index.close()


@pytest.fixture
def tls_node(tmp_path: Path, pki: Pki) -> Iterator[TLSNode]:
    node = TLSNode(tmp_path, pki.listener_toml())
    yield node
    node.close()


@pytest.fixture
def mutual_node(tmp_path: Path, pki: Pki) -> Iterator[TLSNode]:
    node = TLSNode(tmp_path, pki.listener_toml(mutual=True))
    yield node
    node.close()


def test_echo_and_store_over_tls_with_nodelay(tls_node: TLSNode, pki: Pki) -> None:
    assoc = tls_node.associate(pki.client_context())
    assert assoc.is_established
    sock = next(c.sock for c in tls_node.receiver.connections() if c.established)
    assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0  # set before wrapping: still on
    assert int(assoc.send_c_echo().Status) == Status.SUCCESS
    ds = tiny_ct(STUDY, SERIES, f"{SERIES}.1")
    assert int(assoc.send_c_store(ds).Status) == Status.SUCCESS
    assoc.release()
    assert tls_node.spool.path_for(STUDY, SERIES, ds.SOPInstanceUID).is_file()
    assert tls_node.index.get(ds.SOPInstanceUID) is not None


def test_a_plain_client_is_refused_and_the_listener_serves_on(
    tls_node: TLSNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SERVER_LOG)
    assert not tls_node.associate(None).is_established
    wait_for(lambda: refusals(caplog), what="the refusal in the log")
    assert refusals(caplog) == [
        "TLS connection from 127.0.0.1 refused: not a TLS client (plain DICOM on the TLS port?)"
    ]
    assoc = tls_node.associate(pki.client_context())
    assert assoc.is_established
    assoc.release()


def test_a_silent_connection_does_not_hold_up_other_clients(tls_node: TLSNode, pki: Pki) -> None:
    """The handshake runs on the connection's thread: a client that connects and says nothing blocks no one."""
    with socket.create_connection((HOST, tls_node.port)):
        started = time.monotonic()
        assoc = tls_node.associate(pki.client_context())
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == Status.SUCCESS
        assoc.release()
        assert time.monotonic() - started < 2.0


def test_stop_ends_handshakes_in_progress(tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    """The stop joins the connection threads: a silent client must not delay it by its handshake timeout."""
    caplog.set_level(logging.DEBUG, logger=SERVER_LOG)
    node = TLSNode(tmp_path, pki.listener_toml())
    with socket.create_connection((HOST, node.port)):
        wait_for(lambda: node.receiver.connections(), what="a handshake")
        started = time.monotonic()
        node.close()
        assert time.monotonic() - started < 2.0  # the handshake timeout (limits.acse_timeout_s) is 5 s
    assert refusals(caplog) == refusals(caplog, logging.DEBUG) == []  # stopping is no refusal


def test_an_old_tls_version_is_refused(tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=SERVER_LOG)
    node = TLSNode(tmp_path, pki.listener_toml())
    try:
        assert not node.associate(pki.client_context(version=ssl.TLSVersion.TLSv1_1)).is_established
        wait_for(lambda: refusals(caplog), what="the refusal in the log")
        assert refusals(caplog) == [
            "TLS connection from 127.0.0.1 refused: the client offers only TLS versions older than 1.2 "
            "(node.tls.min_version)"
        ]
        assoc = node.associate(pki.client_context(version=ssl.TLSVersion.TLSv1_2))
        assert assoc.is_established
        assoc.release()
    finally:
        node.close()
    strict = TLSNode(tmp_path / "1.3", pki.listener_toml(min_version="1.3"))
    try:
        assert not strict.associate(pki.client_context(version=ssl.TLSVersion.TLSv1_2)).is_established
        assoc = strict.associate(pki.client_context())
        assert assoc.is_established
        assoc.release()
    finally:
        strict.close()


def test_mutual_tls_refuses_clients_without_a_trusted_certificate(
    mutual_node: TLSNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SERVER_LOG)
    for _ in range(2):  # the second refusal of the same address and reason is logged at DEBUG only
        assert not mutual_node.associate(pki.client_context()).is_established
    assert not mutual_node.associate(pki.client_context(pki.rogue)).is_established
    wait_for(lambda: len(refusals(caplog)) == 2 and refusals(caplog, logging.DEBUG), what="the refusals")
    assert refusals(caplog) == [
        "TLS connection from 127.0.0.1 refused: no client certificate, and node.tls.require_client_certificate = "
        "true (mutual TLS)",
        "TLS connection from 127.0.0.1 refused: client certificate not trusted: unable to get local issuer "
        "certificate (node.tls.ca_certificates)",
    ]
    assoc = mutual_node.associate(pki.client_context(pki.scanner))
    assert assoc.is_established
    assert int(assoc.send_c_store(tiny_ct(STUDY, SERIES, f"{SERIES}.2")).Status) == Status.SUCCESS
    assoc.release()
    assert mutual_node.receiver.active_associations() == 0


# -- the node's SCU ---------------------------------------------------------------------------------------


class TLSPeer:
    """A pynetdicom storage + verification SCP on 127.0.0.1 speaking TLS with ``context`` (plain if ``None``)."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        self.context = context
        self.ae = AE("PEER")
        self.ae.add_supported_context(CTImageStorage)
        self.ae.add_supported_context(Verification)
        self.stored: list[str] = []
        self._lock = threading.Lock()
        self.server: Any = None

    def __enter__(self) -> TLSPeer:
        handlers = [(evt.EVT_C_STORE, self._store)]
        self.server = self.ae.start_server((HOST, 0), block=False, ssl_context=self.context, evt_handlers=handlers)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.ae.shutdown()

    def _store(self, event: Any) -> int:
        with self._lock:
            self.stored.append(str(event.request.AffectedSOPInstanceUID))
        return Status.SUCCESS

    def destination(self, tls: PeerTLS | None) -> Destination:
        return Destination("PEER", HOST, int(self.server.server_address[1]), "pacs", tls)


def ct_files(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        ds = tiny_ct(STUDY, SERIES, f"{SERIES}.{100 + i}", index=i)
        path = folder / f"ct{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_scu_echoes_and_stores_over_tls(tmp_path: Path, pki: Pki) -> None:
    files = ct_files(tmp_path / "ct", 2)
    with TLSPeer(pki.server_context(pki.peer)) as peer:
        destination = peer.destination(pki.peer_tls())
        result = echo(destination, FAST)
        assert result.ok, result.reason
        outcomes = store_files(destination, files, FAST)
        assert [o.verdict for o in outcomes] == [Verdict.SENT, Verdict.SENT], [o.reason for o in outcomes]
        assert sorted(peer.stored) == [f"{SERIES}.100", f"{SERIES}.101"]


def test_a_peer_with_tls_in_the_config_is_sent_to_over_tls(tmp_path: Path, pki: Pki) -> None:
    with TLSPeer(pki.server_context(pki.peer)) as peer:
        port = int(peer.server.server_address[1])
        peers = (
            f'[[peers]]\nname = "pacs"\nae_title = "PEER"\nhost = "{HOST}"\nport = {port}\n'
            f'tls = {{ ca_certificates = "{pki.ca}" }}\n'
        )
        config = parse_config(node_toml(tmp_path / "data", free_port(), peers=peers))
        destination = resolve_destination("pacs", config.peers, "PEER")
        assert destination.tls is not None and destination.tls.ca_certificates == pki.ca
        assert echo(destination, ScuSettings.from_config(config)).ok
        # The same peer without tls: our plain association request is not DICOM to a TLS port.
        plain = parse_config(node_toml(tmp_path / "data", free_port(), peers=peers.replace("tls = ", "# tls = ")))
        result = echo(resolve_destination("pacs", plain.peers), FAST)
        assert not result.ok


def test_scu_does_not_send_to_a_server_it_cannot_verify(tmp_path: Path, pki: Pki) -> None:
    files = ct_files(tmp_path / "ct", 1)
    with TLSPeer(pki.server_context(pki.peer)) as peer:
        wrong_ca = peer.destination(pki.peer_tls(trust=pki.other_ca))
        result = echo(wrong_ca, FAST)
        assert not result.ok
        assert result.reason == (
            f"TLS: the certificate of {HOST}:{wrong_ca.port} is not trusted: unable to get local issuer certificate "
            "(check the peer's tls.ca_certificates)"
        )
        [outcome] = store_files(wrong_ca, files, FAST)
        assert outcome.verdict is Verdict.RETRY and "is not trusted" in outcome.reason
        assert peer.stored == []
    with TLSPeer(pki.server_context(pki.elsewhere)) as peer:
        result = echo(peer.destination(pki.peer_tls()), FAST)
        assert not result.ok
        assert f"is not valid for '{HOST}'" in result.reason and "tls.verify_hostname = false" in result.reason
        assert echo(peer.destination(pki.peer_tls(verify_hostname=False)), FAST).ok  # the chain is still checked
        assert not echo(peer.destination(pki.peer_tls(trust=pki.other_ca, verify_hostname=False)), FAST).ok
    with TLSPeer(None) as plain:
        result = echo(plain.destination(pki.peer_tls()), FAST)
        assert not result.ok and result.reason.startswith("TLS: "), result.reason


def test_scu_presents_its_certificate_to_a_peer_that_requires_one(tmp_path: Path, pki: Pki) -> None:
    with TLSPeer(pki.server_context(pki.peer, clients_from=pki.ca)) as peer:
        without = echo(peer.destination(pki.peer_tls()), FAST)
        assert not without.ok
        assert "requires a client certificate: set the peer's tls.certificate and tls.private_key" in without.reason
        rogue = echo(peer.destination(pki.peer_tls(pki.rogue)), FAST)
        assert not rogue.ok and "does not trust our client certificate" in rogue.reason, rogue.reason
        assert echo(peer.destination(pki.peer_tls(pki.node)), FAST).ok
