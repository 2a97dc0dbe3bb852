"""Prometheus scrapes the node: storescu sends a study through ``serve``; a real Prometheus server's query API
then reports ``pacs_node_instances_received_total`` equal to the instances sent, and ``promtool check
metrics`` accepts ``/metrics``."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from node.synth.phantom import make_phantom
from tests.nodeproc import NodeProcess
from tests.peers import free_port, storescu
from tests.web_fixtures import Prometheus, Web, eventually, promtool_check, web_config

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SLICES = 12


def _ready(web: Web) -> bytes | None:
    try:
        return web.get("/readyz", token=False)
    except urllib.error.HTTPError:  # 503 while serve's status file is not written yet
        return None


def test_prometheus_counts_the_instances_storescu_sent(tmp_path: Path) -> None:
    folder = tmp_path / "ct"
    make_phantom(3, slices=SLICES, rows=64, columns=64).write_dicom(folder)
    web_port = free_port()
    config = (
        "[limits]\nmin_free_disk_mb = 0\n[completion]\nquiet_seconds = 0.5\n[workers]\ncount = 0\n"
        '[[peers]]\nname = "scanner"\nae_title = "STORESCU"\nallow_store = true\n' + web_config(web_port)
    )
    with NodeProcess(tmp_path / "node", config) as node:
        web = Web(web_port)
        web.wait()
        # Ready: serve's status is fresh, its sender alive, the stores writable, the disk above the floor.
        assert json.loads(eventually(lambda: _ready(web), 30, "/readyz"))["reasons"] == []
        status = subprocess.run(
            [sys.executable, "-m", "node", "status", "--config", str(node.config_path)], capture_output=True, text=True
        )
        assert f"web console: running on http://127.0.0.1:{web_port}" in status.stdout, status.stdout
        with Prometheus(f"127.0.0.1:{web_port}") as prometheus:
            storescu(folder, node.port, aec="PACSNODE")
            storescu(folder, node.port, aec="PACSNODE")  # the same files again: duplicates
            text = web.get("/metrics")

            def counted() -> list[object] | None:
                found = prometheus.query("pacs_node_instances_received_total")
                return found if found and float(found[0]["value"][1]) == 2 * SLICES else None

            try:
                result = eventually(counted, 60, "prometheus to scrape the instances")
            except AssertionError:
                raise AssertionError(f"{prometheus.targets()}\n{prometheus.log()[-2000:]}") from None
            assert result[0]["metric"]["job"] == "pacs-node"
            duplicates = eventually(lambda: prometheus.query("pacs_node_duplicates_received_total"), 30, "duplicates")
            assert float(duplicates[0]["value"][1]) == SLICES
            accepted = prometheus.query("pacs_node_associations_accepted_total")
            assert float(accepted[0]["value"][1]) == 2
            answers = prometheus.query('pacs_node_cstore_responses_total{status="0x0000"}')
            assert float(answers[0]["value"][1]) == 2 * SLICES
            completed = eventually(
                lambda: (r := prometheus.query("pacs_node_studies_completed_total")) and float(r[0]["value"][1]) == 1,
                30,
                "the study to complete",
            )
            assert completed
        text = web.get("/metrics")
        checked = promtool_check(text)
        assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
        assert b"pacs_node_received_bytes_total" in text and b"pacs_node_disk_free_bytes" in text
        node.stop()
        not_ready = None
        try:
            web.get("/readyz", token=False)
        except (urllib.error.URLError, ConnectionError) as exc:
            not_ready = exc  # the web process stops with serve
        assert not_ready is not None
    assert node.proc is not None and node.proc.returncode == 0
    assert "PHANTOM" not in node.log()
