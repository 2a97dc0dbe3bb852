"""``pacs-node serve`` end to end with ``[[notify]]``: a phantom CT sent by DCMTK storescu is analysed, and
its result reaches a webhook listener (signed) and an MLLP listener (ORU^R01, acknowledged), once each."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from node.synth.phantom import make_phantom
from tests.listeners import MllpListener, WebhookListener, parse
from tests.nodeproc import NodeProcess
from tests.notify_fixtures import SECRET, hl7_target, webhook
from tests.peers import storescu, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def test_a_study_sent_by_storescu_notifies_a_webhook_and_an_hl7_engine_once(tmp_path: Path) -> None:
    folder = tmp_path / "ct"
    make_phantom(11, slices=40, rows=256, columns=256).write_dicom(folder)
    source = dcmread(next(folder.iterdir()), stop_before_pixels=True)
    with WebhookListener().start() as hook, MllpListener().start() as engine:
        config = f"""
[limits]
min_free_disk_mb = 0
[completion]
quiet_seconds = 1
[workers]
count = 1
threads = 2
[analysis]
models = ["lung-nodule-ct"]
[[peers]]
name = "scanner"
ae_title = "STORESCU"
allow_store = true
{webhook("ris", hook.url)}
{hl7_target("engine", engine.port)}
"""
        with NodeProcess(tmp_path / "node", config) as node:
            storescu(folder, node.port, aec="PACSNODE")
            wait_for(lambda: hook.requests and engine.messages, timeout=150, what="both notifications")
            listed = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "node",
                    "jobs",
                    "list",
                    "--config",
                    str(node.config_path),
                    "--kind",
                    "notify:ris",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert node.stop() == 0
            log = node.log()
    assert len(hook.requests) == 1 and len(engine.messages) == 1
    request = hook.requests[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-PacsNode-Signature"], expected)
    document = json.loads(request.body)
    assert document["study_instance_uid"] == source.StudyInstanceUID
    assert document["series_instance_uid"] == source.SeriesInstanceUID
    assert document["priority"]["suggested"] in ("LOW", "ROUTINE", "MEDIUM", "HIGH", "STAT")
    assert {r["modality"] for r in document["results"]} == {"SEG", "SR"}
    assert document["model"]["name"] == "lung-nodule-ct" and document["model"]["version"]
    # The findings as the worker measured them (findings.json), each tied to its slice of the source series.
    sources = {dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in folder.iterdir()}
    assert document["findings"], "the phantom has nodules"
    for n, item in enumerate(document["findings"], start=1):
        assert item["number"] == n and item["name"] == f"Nodule {n}"
        assert isinstance(item["segment_number"], int) and item["tracking_uid"]
        assert 0.0 < item["confidence"]["mean"] <= item["confidence"]["max"] <= 1.0
        assert item["key_slice"]["sop_instance_uid"] in sources
        assert item["measurements"]["volume_mm3"] > 0
    message = parse(engine.raw[0])
    assert str(message.segment("MSH")(9)) == "ORU^R01^ORU_R01"
    obx = message.segments("OBX")
    assert len(obx) == 1 + len(document["findings"])
    assert str(obx[0](5)) == f"{document['priority']['suggested']}^{document['priority']['suggested']}^L"
    assert all("key slice" in str(o(5)) for o in obx[1:])
    assert "notify:ris" in listed and "done" in listed
    for identity in (str(source.PatientName), str(source.PatientID)):
        assert identity and identity not in log and identity not in request.body.decode()
