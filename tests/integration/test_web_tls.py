"""``pacs-node web`` with ``web.certificate`` and ``web.private_key``: HTTPS only, a certificate the client
verifies (made at test time by trustme), and the session cookie marked Secure."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import trustme

from tests.peers import free_port, wait_for
from tests.web_fixtures import PASSWORD, web_config


def test_the_console_speaks_https_only_and_its_cookie_is_secure(tmp_path: Path) -> None:
    ca = trustme.CA(organization_name="pacs-node web tests")
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, trust = tmp_path / "web.pem", tmp_path / "web.key", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(trust))
    trusted = ssl.create_default_context(cafile=trust)
    port = free_port()
    tls = f'certificate = "{cert}"\nprivate_key = "{key}"\n'
    section = web_config(port).replace("[web]\n", "[web]\n" + tls, 1)
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nae_title = "PACSNODE"\ndata_dir = "{tmp_path / "data"}"\n{section}')
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", "web", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        base = f"https://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{base}/healthz", verify=trusted).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=30, interval=0.2, what="the HTTPS console")
        try:
            plain = httpx.get(f"http://127.0.0.1:{port}/healthz").status_code
        except httpx.HTTPError:
            plain = None
        assert plain != 200  # no plain HTTP beside HTTPS
        with httpx.Client(base_url=base, verify=trusted) as client:
            response = client.post("/login", data={"username": "operator1", "password": PASSWORD})
            cookie = response.headers["set-cookie"].lower()
            assert response.status_code == 303 and "secure" in cookie and "httponly" in cookie
            assert response.headers["strict-transport-security"] == "max-age=31536000"
        other = trustme.CA()
        other.cert_pem.write_to_path(str(tmp_path / "other.pem"))
        try:
            httpx.get(f"{base}/healthz", verify=ssl.create_default_context(cafile=tmp_path / "other.pem"))
            raise AssertionError("a certificate from another CA was accepted")
        except httpx.ConnectError:
            pass
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
