"""The web app's API and pages, every endpoint and role, in process (Starlette's test client) on real stores.

The stores are filled through their own APIs (Index.record, JobStore.enqueue/claim/fail/complete) and the
results folder as a worker writes it; the browser tests (tests/e2e/test_web_browser.py) use real studies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from node.config import parse_config
from node.jobs import JobStore
from node.store import Index
from node.web.app import create_app
from node.web.auth import token_sha256

STUDY = "1.2.826.0.1.3680043.8.498.1001"
SERIES = "1.2.826.0.1.3680043.8.498.1001.1"
PASSWORD = "correct horse battery"
TOKEN = "prometheus-scrape-token-0123456789"
_hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # cheap: tests log in many times


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def config_text(data_dir: Path) -> str:
    users = "".join(
        f'[[web.users]]\nname = "{role}1"\npassword_hash = "{_hasher.hash(PASSWORD)}"\nrole = "{role}"\n'
        for role in ("viewer", "radiologist", "operator")
    )
    return (
        f'[node]\nae_title = "PACSNODE"\ndata_dir = "{data_dir}"\n[limits]\nmin_free_disk_mb = 0\n'
        '[[peers]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 104\n'
        f'[web]\nenabled = true\nsession_minutes = 10\nviewer_url = "https://viewer/?study={{study_uid}}"\n{users}'
        f'[[web.tokens]]\nname = "prometheus"\nsha256 = "{token_sha256(TOKEN)}"\nrole = "viewer"\n'
    )


def fill(data_dir: Path, clock: Clock) -> dict[str, int]:
    """A study of 3 instances, one done analysis with one finding, a dead send and a retrying one."""
    config = parse_config(config_text(data_dir))
    data_dir.mkdir(parents=True)
    index = Index(config.node.index_path, clock=clock)
    for i in range(3):
        index.record(
            sop_instance_uid=f"{SERIES}.{i}",
            study_instance_uid=STUDY,
            series_instance_uid=SERIES,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            path=f"{STUDY}/{SERIES}/{SERIES}.{i}.dcm",
            size=1000,
            calling_ae="CTSCANNER",
            association_id="a1",
        )
    index.close()
    jobs = JobStore(config.node.jobs_path, clock=clock, max_attempts=5)
    analysis = jobs.enqueue("analyse", {"study": STUDY, "model": "lung-nodule-ct"})
    assert jobs.claim("analyse", "worker-test-1", 60) is not None
    folder = config.node.results_dir(analysis) / SERIES
    folder.mkdir(parents=True)
    finding = {
        "label": "Nodule",
        "number": 1,
        "volume_mm3": 300.0,
        "longest_axial_diameter_mm": 8.5,
        "centroid_mm": [1.0, 2.0, 3.0],
        "mean_value": 20.0,
        "segment_number": 2,
        "confidence": {"mean": 0.8, "max": 0.97},
    }
    (folder / "findings.json").write_text(
        json.dumps(
            {
                "series_instance_uid": SERIES,
                "priority": "HIGH",
                "priority_reason": "Nodule 1: 8.5 mm >= 6 mm",
                "findings": [finding],
                "files": [],
                "model": {"name": "lung-nodule-ct", "version": "1.1.0"},
            }
        )
    )
    (config.node.results_dir(analysis) / "manifest.json").write_text('{"files": [], "series": {}}')
    jobs.complete(analysis, "worker-test-1")
    ids = {"analysis": analysis}
    for n in range(2):
        ids[f"send{n}"] = jobs.enqueue(
            "send:pacs", {"path": f"outbox/analyse-{analysis}/x{n}.dcm", "peer": "pacs", "sop": f"1.2.3.{n}"}
        )
        claimed = jobs.claim("send:pacs", f"sender-1-pacs-{n}", 60)
        assert claimed is not None
        jobs.fail(claimed.id, f"sender-1-pacs-{n}", "connection refused", retry=n == 1)
    jobs.close()
    return ids


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, int], Clock, Path]]:
    clock = Clock()
    data_dir = tmp_path / "data"
    ids = fill(data_dir, clock)
    app = create_app(parse_config(config_text(data_dir)), one_time_token="once-only-token", clock=clock)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, ids, clock, data_dir
    app.state.ctx.close()


def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Log in; the CSRF token the pages carry."""
    response = client.post("/login", data={"username": name, "password": password}, follow_redirects=False)
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    page = client.get("/failures")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


GETS = [
    "/api/v1/overview",
    "/api/v1/studies",
    f"/api/v1/studies/{STUDY}",
    "/api/v1/jobs",
    "/api/v1/failures",
    "/api/v1/peers",
    "/api/v1/worklist",
    "/api/v1/models",
    "/api/v1/feedback.csv",
    "/metrics",
]
PAGES = ["/", "/studies", f"/studies/{STUDY}", "/failures", "/triage", "/models"]


def test_nothing_without_a_login_and_everything_to_read_for_every_role(node: tuple) -> None:
    client, _, _, _ = node
    for path in GETS:
        assert client.get(path).status_code == 401, path
    for path in [*PAGES, "/audit"]:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login"), path
    assert client.get("/healthz").json() == {"status": "ok"}
    for role in ("viewer", "radiologist", "operator"):
        login(client, f"{role}1")
        for path in GETS + PAGES:
            assert client.get(path).status_code == 200, (role, path)
        audit = client.get("/api/v1/audit")
        assert audit.status_code == (200 if role == "operator" else 403), role
        assert client.get("/audit").status_code == (200 if role == "operator" else 403)
    study = client.get(f"/api/v1/studies/{STUDY}").json()
    assert study["study"]["instances"] == 3 and study["study"]["calling_aes"] == ["CTSCANNER"]
    assert study["viewer_url"] == f"https://viewer/?study={STUDY}"
    assert client.get("/api/v1/studies?modality=CT").json()["total"] == 1
    assert client.get("/api/v1/studies?modality=MR").json()["total"] == 0
    assert client.get("/api/v1/studies/1.2.3.4").status_code == 404
    worklist = client.get("/api/v1/worklist").json()
    assert [w["priority"] for w in worklist] == ["HIGH"]
    explanation = worklist[0]["findings"][0]["explanation"]
    assert explanation["rule"].startswith("Nodule with longest axial diameter >= 6 mm -> HIGH")
    assert explanation["confidence_max"] == 0.97
    schema = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/jobs/{job_id}/retry" in schema["paths"] and "/studies" not in schema["paths"]


def test_only_an_operator_retries_cancels_or_completes_and_only_with_the_csrf_token(node: tuple) -> None:
    client, ids, clock, data_dir = node
    dead, retrying = ids["send0"], ids["send1"]
    for role in ("viewer", "radiologist"):
        csrf = login(client, f"{role}1")
        for action in ("retry", "cancel"):
            response = client.post(f"/api/v1/jobs/{dead}/{action}", headers={"X-CSRF-Token": csrf})
            assert response.status_code == 403, (role, action)
        assert client.post("/api/v1/peers/pacs/retry", headers={"X-CSRF-Token": csrf}).status_code == 403
        assert client.post(f"/api/v1/studies/{STUDY}/complete", headers={"X-CSRF-Token": csrf}).status_code == 403
    csrf = login(client, "operator1")
    assert client.post(f"/api/v1/jobs/{dead}/retry").status_code == 403  # no CSRF token
    assert client.post(f"/api/v1/jobs/{dead}/retry", headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.post(f"/failures/jobs/{dead}/retry", data={"csrf_token": "forged"}).status_code == 403
    jobs = {j["id"]: j["state"] for j in client.get("/api/v1/jobs").json()}
    assert jobs[dead] == "dead"
    assert client.post(f"/api/v1/jobs/{dead}/retry", headers={"X-CSRF-Token": csrf}).json() == {"status": "ok"}
    assert client.post(f"/api/v1/jobs/{dead}/retry", headers={"X-CSRF-Token": csrf}).status_code == 409
    page = client.post(f"/failures/jobs/{retrying}/cancel", data={"csrf_token": csrf}, follow_redirects=False)
    assert page.status_code == 303 and "cancelled" in page.headers["location"]
    jobs = {j["id"]: j["state"] for j in client.get("/api/v1/jobs").json()}
    assert jobs[dead] == "queued" and jobs[retrying] == "dead"
    assert client.post("/api/v1/peers/pacs/retry", headers={"X-CSRF-Token": csrf}).json()["retried"] == 1
    # Force the study complete: its quiet period ends now (serve's completion timer does the rest).
    index = Index(data_dir / "index.sqlite3")
    assert index.quiet_studies(clock.now, 1e9, 1e9) == []
    assert client.post(f"/api/v1/studies/{STUDY}/complete", headers={"X-CSRF-Token": csrf}).json() == {"status": "ok"}
    assert index.quiet_studies(clock.now, 1e9, 1e9) == [STUDY]
    index.close()
    assert client.post("/api/v1/studies/1.2.3/complete", headers={"X-CSRF-Token": csrf}).status_code == 409
    audit = [json.loads(line) for line in (data_dir / "audit" / "audit.jsonl").read_text().splitlines()]
    actions = [(a["user"], a["action"], a["outcome"]) for a in audit if a["event"] == "user-action"]
    assert ("operator1", "complete", 0) in actions
    assert ("operator1", "retry", 0) in actions and ("operator1", "cancel", 0) in actions
    assert ("operator1", "retry-peer", 0) in actions
    assert {a["user"] for a in audit if a["event"] == "user-login"} == {"viewer1", "radiologist1", "operator1"}


def test_feedback_by_a_radiologist_moves_the_agreement_and_is_exported(node: tuple) -> None:
    client, ids, _, _ = node
    url = f"/api/v1/analyses/{ids['analysis']}/series/{SERIES}/findings/1/feedback"
    for role in ("viewer", "operator"):
        csrf = login(client, f"{role}1")
        assert client.post(url, json={"verdict": "confirm"}, headers={"X-CSRF-Token": csrf}).status_code == 403
    csrf = login(client, "radiologist1")
    assert client.post(url, json={"verdict": "confirm"}).status_code == 403  # no CSRF token
    rejected = client.post(url, json={"verdict": "reject"}, headers={"X-CSRF-Token": csrf})
    assert rejected.status_code == 422 and "reason" in rejected.text
    missing = f"/api/v1/analyses/{ids['analysis']}/series/{SERIES}/findings/9/feedback"
    assert client.post(missing, json={"verdict": "confirm"}, headers={"X-CSRF-Token": csrf}).status_code == 404
    models = client.get("/api/v1/models").json()
    assert models[0]["versions"][0]["agreement"] is None
    ok = client.post(
        url,
        json={"verdict": "reject", "reason": "false positive", "comment": "a vessel"},
        headers={"X-CSRF-Token": csrf},
    )
    assert ok.status_code == 200
    version = next(v for v in client.get("/api/v1/models").json()[0]["versions"] if v["version"] == "1.1.0")
    assert (version["confirmed"], version["rated"], version["agreement"]) == (0, 1, 0.0)
    assert "below the card's precision" in version["warning"]
    form = client.post(
        "/triage/feedback",
        data={"csrf_token": csrf, "analysis": ids["analysis"], "series": SERIES, "number": 1, "verdict": "confirm"},
        follow_redirects=False,
    )
    assert form.status_code == 303
    version = next(v for v in client.get("/api/v1/models").json()[0]["versions"] if v["version"] == "1.1.0")
    assert (version["confirmed"], version["rated"], version["warning"]) == (1, 1, None)
    rows = client.get("/api/v1/feedback.csv").text.splitlines()
    assert rows[0].startswith("id,time_utc,user") and len(rows) == 3
    assert "radiologist1" in rows[1] and "false positive" in rows[1] and "a vessel" in rows[1]
    worklist = client.get("/api/v1/worklist").json()
    assert worklist[0]["read"] is True and worklist[0]["findings"][0]["feedback"]["verdict"] == "confirm"
    assert (
        'pacs_node_feedback_agreement_ratio{model="lung-nodule-ct",version="1.1.0"} 1.0' in client.get("/metrics").text
    )


def test_login_limit_session_expiry_logout_and_one_time_login(node: tuple) -> None:
    client, _, clock, data_dir = node
    for _ in range(5):
        assert client.post("/login", data={"username": "viewer1", "password": "wrong"}).status_code == 401
    limited = client.post("/login", data={"username": "viewer1", "password": PASSWORD})
    assert limited.status_code == 429
    clock.now += 61
    login(client, "viewer1")
    assert client.get("/api/v1/overview").status_code == 200
    clock.now += 10 * 60 + 1  # session_minutes = 10
    assert client.get("/api/v1/overview").status_code == 401
    csrf = login(client, "viewer1")
    assert client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert client.get("/api/v1/overview").status_code == 401
    assert client.get("/login?token=wrong").status_code == 401
    once = client.get("/login?token=once-only-token", follow_redirects=False)
    assert once.status_code == 303
    assert client.get("/api/v1/audit").status_code == 200  # the one-time login may do everything
    client.cookies.clear()
    assert client.get("/login?token=once-only-token").status_code == 401  # it works once
    events = [json.loads(line)["event"] for line in (data_dir / "audit" / "audit.jsonl").read_text().splitlines()]
    assert events.count("user-login-failed") == 8 and "user-logout" in events


def test_metrics_with_a_bearer_token_and_readiness(node: tuple) -> None:
    """(No patient identity in the logs: the e2e tests check serve's log, web process included, after
    real phantom studies with a patient name and ID went through it.)"""
    client, _, _, _ = node
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert 'pacs_node_jobs{kind="send:pacs",state="dead"} 1.0' in response.text
    assert "pacs_node_disk_free_bytes" in response.text
    # A token needs no CSRF token, and a viewer's token still may not retry.
    assert client.post("/api/v1/jobs/1/retry", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 403
    assert client.get("/readyz").status_code == 503  # serve is not running here
    assert "serve is not running" in client.get("/readyz").text
