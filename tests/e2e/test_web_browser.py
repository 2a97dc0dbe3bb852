"""The web console in headless Chromium (Debian's, through Playwright) on real studies: DCMTK ``storescu``
sends three phantom CT studies through ``serve``, the worker analyses them, the results go to Orthanc.

- log in; every page shows those studies (nothing is written into a database by the test);
- the triage list orders them HIGH (an 11.8 mm nodule), then the one with a small finding (5.1 mm, below
  the card's 6 mm rule), then the one without findings;
- each key image loads, is a PNG and shows the label colour at the finding's position (computed here from
  the source slice's geometry and the finding's centroid);
- a radiologist confirms a finding and the Models page's agreement changes;
- Orthanc down, the HIGH study's result sends go dead; an operator retries them from the Failures page
  with Orthanc up again; the results arrive once.

Screenshots go to the test's folder (and to ``$PACS_NODE_SCREENSHOTS`` when set: docs/screenshots/).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pydicom import dcmread

from node.synth.phantom import make_phantom
from tests.nodeproc import NodeProcess
from tests.peers import Orthanc, free_port, scanner_and_pacs, storescu
from tests.tools import require_tool
from tests.web_fixtures import PASSWORD, Web, eventually, web_config

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR_3D = "1.2.840.10008.5.1.4.1.1.88.34"
NODULE_COLOUR = (230, 60, 60)  # the card's Nodule colour (RGB)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# (seed, nodules drawn): the model finds the 11.8 mm nodule of the first (HIGH) and the small one of the
# second (drawn 4.3 mm across, measured 5.1 mm on 1.5 mm pixels: below the card's 6 mm rule, ROUTINE),
# nothing in the third (no nodule drawn).
STUDIES = {"high": (27, 1), "small": (939, 1), "none": (5, 0)}


def config(pacs: Orthanc, web_port: int) -> str:
    return f"""
[limits]
min_free_disk_mb = 0
[completion]
quiet_seconds = 1.0
[workers]
count = 1
threads = 2
lease_seconds = 60
[sender]
retry_initial_s = 0.5
retry_max_s = 0.5
give_up_after_hours = 0.0001
[analysis]
models = ["lung-nodule-ct"]
send_results_to = ["pacs"]
{scanner_and_pacs(pacs)}{web_config(web_port, viewer_url="https://viewer.example/?study={study_uid}")}
"""


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    found = {}
    for name, (seed, nodules) in STUDIES.items():
        folder = tmp_path_factory.mktemp(name)
        make_phantom(seed, slices=40, rows=256, columns=256, nodules=nodules).write_dicom(folder)
        found[name] = (folder, str(dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID))
    return found


@pytest.fixture
def browser() -> Iterator[Any]:
    require_tool("chromium", "chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def shoot(page: Any, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    docs = os.environ.get("PACS_NODE_SCREENSHOTS")
    if docs:
        Path(docs).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(docs) / path.name)


def login(page: Any, base: str, name: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def results_in(pacs: Orthanc, study: str) -> list[str]:
    return sorted(c for c in pacs.study_sop_classes(study) if c in (SEG, SR_3D))


def outline_at_finding(png: bytes, finding: dict[str, Any], source: Path) -> int:
    """Pixels of the label colour within the finding's radius (+3 px) of its centroid on the key image."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    ds = dcmread(source, stop_before_pixels=True)
    scale = image.shape[1] / int(ds.Columns)
    x0, y0 = float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1])
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    cx = (finding["centroid_mm"][0] - x0) / col_mm * scale
    cy = (finding["centroid_mm"][1] - y0) / row_mm * scale
    radius = (finding["longest_axial_diameter_mm"] / 2 / col_mm + 3) * scale
    r, g, b = NODULE_COLOUR
    ys, xs = np.where((image[:, :, 2] == r) & (image[:, :, 1] == g) & (image[:, :, 0] == b))
    return int(np.sum((xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2))


def source_of(folder: Path, sop_instance_uid: str) -> Path:
    return next(p for p in folder.iterdir() if dcmread(p, stop_before_pixels=True).SOPInstanceUID == sop_instance_uid)


def test_console_on_real_studies(tmp_path: Path, studies: dict[str, tuple[Path, str]], browser: Any) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    web_port = free_port()
    uid = {name: study for name, (_, study) in studies.items()}
    with Orthanc() as pacs, NodeProcess(tmp_path / "node", config(pacs, web_port)) as node:
        web = Web(web_port)
        web.wait()
        for name in ("small", "none"):
            storescu(studies[name][0], node.port, aec="PACSNODE")

        def settled() -> bool:
            analyses = web.json("/api/v1/jobs?kind=analyse&state=done")
            sends = web.json("/api/v1/jobs?kind=send:pacs")
            return len(analyses) == len(STUDIES) - 1 and all(j["state"] == "done" for j in sends)

        eventually(settled, 120, "the first studies' results to be delivered")
        assert results_in(pacs, uid["small"]) == [SEG, SR_3D]
        # The PACS goes down before the HIGH study's results are sent: they go dead.
        pacs.stop(graceful=False)
        storescu(studies["high"][0], node.port, aec="PACSNODE")

        def dead_sends() -> list[Any]:
            return [j for j in web.json("/api/v1/failures")["jobs"] if j["state"] == "dead" and j["peer"] == "pacs"]

        dead = eventually(lambda: len(dead_sends()) >= 2 and dead_sends(), 120, "the HIGH study's sends to go dead")
        assert {j["study"] for j in dead} == {uid["high"]}
        eventually(
            lambda: len(web.json("/api/v1/jobs?kind=analyse&state=done")) == len(STUDIES), 120, "the analyses to finish"
        )

        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        base = web.base
        login(page, base, "radiologist1")
        assert page.locator("#studies-total").inner_text() == "3"
        shoot(page, shots, "overview")
        page.goto(f"{base}/studies")
        for study in uid.values():
            assert page.locator(f"a[href='/studies/{study}']").count() == 1
        shoot(page, shots, "studies")
        page.goto(f"{base}/studies/{uid['high']}")
        text = page.locator("main").inner_text()
        assert "40" in text and "analysis" in text and "lung-nodule-ct" in text and "HIGH" in text
        assert page.locator("a.button").get_attribute("href") == f"https://viewer.example/?study={uid['high']}"
        shoot(page, shots, "study")

        page.goto(f"{base}/triage")
        order = page.locator("article.study").evaluate_all("els => els.map(e => e.dataset.study)")
        assert order == [uid["high"], uid["small"], uid["none"]]
        priorities = page.locator("article.study").evaluate_all("els => els.map(e => e.dataset.priority)")
        assert priorities == ["HIGH", "ROUTINE", "ROUTINE"]
        # (wait_for_function would evaluate a string: the console's Content-Security-Policy forbids that)
        widths = page.locator("img.key").evaluate_all(
            "els => Promise.all(els.map(i => i.complete ? i.naturalWidth : new Promise(done => {"
            " i.onload = () => done(i.naturalWidth); i.onerror = () => done(0); })))"
        )
        assert len(widths) == 2 and all(w >= 256 for w in widths), widths
        page.locator("details").evaluate_all("els => els.forEach(e => { e.open = true; })")  # show the "why"
        assert "Rule fired: Nodule with longest axial diameter >= 6 mm -> HIGH" in page.locator("main").inner_text()
        shoot(page, shots, "triage")
        worklist = web.json("/api/v1/worklist")
        assert [len(item["findings"]) for item in worklist] == [1, 1, 0]
        for item, name in zip(worklist, ("high", "small"), strict=False):
            finding = item["findings"][0]
            response = page.request.get(base + finding["key_image"])
            assert response.status == 200 and response.headers["content-type"] == "image/png"
            png = response.body()
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            source = source_of(studies[name][0], finding["key_slice"]["sop_instance_uid"])
            assert outline_at_finding(png, finding, source) >= 4, name

        page.goto(f"{base}/models")
        assert page.locator("section.model[data-model='lung-nodule-ct'] td.agreement").first.inner_text() == "-"
        page.goto(f"{base}/triage")
        page.locator(f"article[data-study='{uid['high']}'] button[value=confirm]").click()
        page.wait_for_url(f"{base}/triage*")
        assert "confirm recorded" in page.locator(".message").inner_text()
        page.goto(f"{base}/models")
        row = page.locator("section.model[data-model='lung-nodule-ct'] tr[data-version='1.1.0']")
        assert row.locator("td.agreement").inner_text() == "1.00" and row.locator("td.rated").inner_text() == "1"
        assert float(page.locator("b.analysis-time").inner_text().removesuffix(" s")) > 0  # the workers' histogram
        shoot(page, shots, "models")
        assert page.locator("a[href='/audit']").count() == 0  # a radiologist has no audit page
        context.close()

        # An operator retries the dead sends from the Failures page once the PACS is back.
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        login(page, base, "operator1")
        page.goto(f"{base}/failures")
        assert page.locator(f"tr#job-{dead[0]['id']}").count() == 1
        shoot(page, shots, "failures")
        pacs.start()
        page.locator("form[action='/failures/peers/pacs/retry'] button").click()
        page.wait_for_url(f"{base}/failures*")
        assert "sends to pacs queued again" in page.locator(".message").inner_text()
        pacs.wait_for(lambda: results_in(pacs, uid["high"]) == [SEG, SR_3D] or None, timeout=60)
        eventually(lambda: not dead_sends(), 30, "the retried sends to finish")
        assert len(pacs.find_instances(uid["high"])) == 2  # SEG and SR, once each
        page.goto(f"{base}/audit?event=user-action")
        audit = page.locator("table.audit").inner_text()
        assert "user=operator1" in audit and "action=retry-peer" in audit and "user=radiologist1" in audit
        shoot(page, shots, "audit")
        context.close()
        # The worker's and the sender's figures reach /metrics through the multiprocess files.
        metrics = web.get("/metrics").decode()
        analyses = len(STUDIES)
        assert f'pacs_node_analysis_seconds_count{{model="lung-nodule-ct"}} {analyses}.0' in metrics
        assert f'pacs_node_inference_seconds_count{{model="lung-nodule-ct"}} {analyses}.0' in metrics
        failures = re.search(r'pacs_node_send_failures_total\{peer="pacs"\} (\d+)', metrics)
        attempts = re.search(r'pacs_node_send_attempts_total\{peer="pacs"\} (\d+)', metrics)
        assert failures and attempts and int(attempts.group(1)) > int(failures.group(1)) >= 4
        assert node.stop() == 0
    log = node.log()
    assert "PHANTOM" not in log and "Phantom" not in log
