"""DICOM TLS with DCMTK, both ways: ``storescu``/``echoscu`` to the node's TLS listener, the node's SCU to ``storescp``.

DCMTK (Debian, built with OpenSSL) uses its default security profile, Non-downgrading BCP 195 (``+py``).
Certificates come from trustme at test time (:class:`tests.integration.test_tls.Pki`); the node runs in
this process (its receiver, as ``serve`` builds it, without the other stages).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.send.destination import Destination
from node.send.scu import ScuSettings, Verdict, echo, store_files
from tests.integration.test_tls import SERIES, SERVER_LOG, Pair, Pki, TLSNode, ct_files, refusals, wait_for
from tests.peers import StoreSCP, dcmtk_tls, echoscu, storescu

pytestmark = pytest.mark.interop

FAST = ScuSettings("PACSNODE", acse_timeout=5.0, dimse_timeout=5.0, network_timeout=10.0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mutual_node(tmp_path: Path, pki: Pki) -> Iterator[TLSNode]:
    node = TLSNode(tmp_path, pki.listener_toml(mutual=True))
    yield node
    node.close()


def test_storescu_and_echoscu_send_to_the_node_over_mutual_tls(mutual_node: TLSNode, pki: Pki, tmp_path: Path) -> None:
    files = ct_files(tmp_path / "ct", 3)
    ours = dcmtk_tls(pki.scanner.key, pki.scanner.certificate, [pki.ca])
    done = storescu(files, mutual_node.port, aet="STORESCU", aec="PACSNODE", extra=ours)
    output = done.stdout + done.stderr
    assert output.count("Received Store Response (Success)") == 3, output
    stored = [mutual_node.index.get(f"{SERIES}.{100 + i}") for i in range(3)]
    assert all(row is not None and row.calling_ae == "STORESCU" for row in stored)
    echoscu(mutual_node.port, aec="PACSNODE", aet="STORESCU", extra=ours)  # raises unless it succeeded


def test_dcmtk_clients_without_a_valid_certificate_are_refused(
    mutual_node: TLSNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SERVER_LOG)
    attempts = {
        "no client certificate": dcmtk_tls(trust=[pki.ca]),  # +tla: TLS without a certificate
        "client certificate not trusted": dcmtk_tls(pki.rogue.key, pki.rogue.certificate, [pki.ca]),
        "the client does not trust our certificate": dcmtk_tls(
            pki.scanner.key, pki.scanner.certificate, [pki.other_ca]
        ),
        "not a TLS client": [],
    }
    for expected, options in attempts.items():
        done = echoscu(mutual_node.port, aec="PACSNODE", aet="STORESCU", extra=options, check=False)
        assert done.returncode != 0, expected
        assert "Association Request Failed" in done.stdout + done.stderr, done.stdout + done.stderr
        wait_for(lambda e=expected: any(e in line for line in refusals(caplog)), what=f"'{expected}' in the log")
    assert len(refusals(caplog)) == 4
    assert mutual_node.receiver.active_associations() == 0
    echoscu(
        mutual_node.port,
        aec="PACSNODE",
        aet="STORESCU",
        extra=dcmtk_tls(pki.scanner.key, pki.scanner.certificate, [pki.ca]),
    )


def test_dcmtk_security_profiles_bcp195_accepted_retired_ones_refused(
    mutual_node: TLSNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """``+pz`` (Extended BCP 195: TLS 1.2 only) works; the retired AES (``+pa``) and null-encryption (``+pn``)
    profiles offer no BCP 195 cipher suite and are refused."""
    caplog.set_level(logging.DEBUG, logger=SERVER_LOG)
    ours = dcmtk_tls(pki.scanner.key, pki.scanner.certificate, [pki.ca])
    done = echoscu(mutual_node.port, aec="PACSNODE", aet="STORESCU", extra=["-d", "+pz", *ours])
    assert "Protocol    : TLSv1.2" in done.stdout + done.stderr
    for retired in ("+pa", "+pn"):
        done = echoscu(mutual_node.port, aec="PACSNODE", aet="STORESCU", extra=[retired, *ours], check=False)
        assert done.returncode != 0, retired
    wait_for(lambda: refusals(caplog), what="the refusal in the log")
    assert refusals(caplog) == [
        "TLS connection from 127.0.0.1 refused: no cipher suite in common (TLS 1.2 needs ECDHE or DHE with AES-GCM, "
        "BCP 195)"
    ]


def test_the_node_sends_to_storescp_over_mutual_tls(pki: Pki, tmp_path: Path) -> None:
    files = ct_files(tmp_path / "ct", 2)
    # storescp requires a client certificate by default (-rc) and trusts our CA's.
    with StoreSCP(aet="PEER", extra=dcmtk_tls(pki.peer.key, pki.peer.certificate, [pki.ca])) as scp:

        def to(pair: Pair | None, trust: Path | None = None) -> Destination:
            return Destination("PEER", "127.0.0.1", scp.port, "pacs", pki.peer_tls(pair, trust=trust))

        outcomes = store_files(to(pki.node), files, FAST)
        assert [o.verdict for o in outcomes] == [Verdict.SENT] * 2, [o.reason for o in outcomes]
        assert len(scp.files()) == 2
        assert echo(to(pki.node), FAST).ok
        without = echo(to(None), FAST)
        assert not without.ok and "requires a client certificate" in without.reason, without.reason
        untrusted = echo(to(pki.node, trust=pki.other_ca), FAST)
        assert not untrusted.ok and "is not trusted" in untrusted.reason, untrusted.reason
        assert len(scp.files()) == 2
    # TLS 1.2 only (storescp with the Extended BCP 195 profile).
    options = ["+pz", *dcmtk_tls(pki.peer.key, pki.peer.certificate, [pki.ca])]
    with StoreSCP(aet="PEER", extra=options) as scp:
        destination = Destination("PEER", "127.0.0.1", scp.port, "pacs", pki.peer_tls(pki.node))
        assert [o.verdict for o in store_files(destination, files[:1], FAST)] == [Verdict.SENT]
