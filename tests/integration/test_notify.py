"""Notifications end to end below serve: jobs queued as the worker queues them, delivered by the notifier
threads to real listeners on 127.0.0.1 (an HTTP server, python-hl7's MLLP server), settled in a real job
store."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.config import NodeConfig
from node.jobs import JobState, JobStore
from node.notify import Notifier, notify_jobs
from node.notify.oru import control_id
from tests.listeners import MllpListener, WebhookListener, parse
from tests.notify_fixtures import (
    PATIENT_ID,
    PATIENT_NAME,
    SECRET,
    config_text,
    finding,
    hl7_target,
    make_result,
    node_config,
    webhook,
)
from tests.peers import free_port, wait_for

RUN: dict[str, Any] = {"capture_output": True, "text": True, "check": True, "timeout": 60}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


@pytest.fixture
def store(data_dir: Path) -> Iterator[JobStore]:
    # Short backoff so that a receiver that is down is tried again within the test.
    with JobStore(data_dir / "jobs.sqlite3", max_attempts=50, backoff_initial=0.2, backoff_max=0.4) as jobs:
        yield jobs


def queue(config: NodeConfig, jobs: JobStore, files: list[tuple[str, str, str]]) -> list[int]:
    """Queue a result's notifications as the worker does (node.worker.loop)."""
    return jobs.enqueue_many(notify_jobs(config.notify, config.node.data_dir, files, "lung-nodule-ct"))


def notifying(config: NodeConfig, jobs: JobStore, until: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Run the notifier threads until ``until()`` is truthy; stop them and return its value."""
    stop = threading.Event()
    notifier = Notifier(config, jobs, stop, poll_s=0.05)
    notifier.start()
    try:
        return wait_for(until, timeout=timeout, what="the notifications")
    finally:
        stop.set()
        assert notifier.join(10)


def state(jobs: JobStore, job_id: int) -> JobState:
    job = jobs.get(job_id)
    assert job is not None
    return job.state


def test_one_signed_webhook_per_qualifying_result_and_none_below_the_minimum_priority(
    data_dir: Path, store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with WebhookListener().start() as listener:
        config = node_config(data_dir, webhook("ris", listener.url, min_priority="MEDIUM"))
        study, high = make_result(data_dir, store, "HIGH", [finding(1), finding(2, 80.0, 5.5)])
        _, low = make_result(data_dir, store, "LOW", [finding(1, 30.0, 4.0)], accession="ACC-0002")
        ids = queue(config, store, high) + queue(config, store, low)
        assert len(ids) == 1  # the LOW result reaches no target
        notifying(config, store, lambda: state(store, ids[0]) is JobState.DONE)
        # The analysis runs again (a retry reuses its results): the result is not notified twice.
        assert queue(config, store, high) == ids
        assert store.list(JobState.QUEUED, "notify:ris") == []
    assert len(listener.requests) == 1
    request = listener.requests[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-PacsNode-Signature"], expected)
    assert request.path == "/hooks/results"
    sr_uid = high[1][1]
    assert request.headers["Idempotency-Key"] == f"ris|{sr_uid}"
    document = json.loads(request.body)
    assert document["study_instance_uid"] == study
    assert document["accession_number"] == "ACC-0001"
    assert document["model"] == {"name": "lung-nodule-ct", "version": "1.1.0"}
    assert document["priority"]["suggested"] == "HIGH"
    assert [(f["number"], f["name"]) for f in document["findings"]] == [(1, "Nodule 1"), (2, "Nodule 2")]
    first = document["findings"][0]
    assert first["measurements"]["volume_mm3"] == 523.6
    assert first["confidence"] == {"mean": 0.91, "max": 0.98}
    assert first["key_slice"]["index"] == 17
    assert sorted(r["sop_instance_uid"] for r in document["results"]) == sorted(uid for _, uid, _ in high)
    # Filed under the study (retention keeps a study until its notifications are done).
    job = store.get(ids[0])
    assert job is not None and job.study == study
    # No patient identity in the document or in any log line.
    for text in (request.body.decode(), caplog.text):
        assert PATIENT_NAME not in text and PATIENT_ID not in text and "19700101" not in text


def test_an_oru_r01_over_mllp_parses_back_with_an_obx_per_finding_and_is_acknowledged(
    data_dir: Path, store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with MllpListener().start() as engine:
        config = node_config(data_dir, hl7_target("engine", engine.port))
        study, files = make_result(data_dir, store, "HIGH", [finding(1), finding(2, 80.0, 5.5)])
        ids = queue(config, store, files)
        notifying(config, store, lambda: state(store, ids[0]) is JobState.DONE)
    assert len(engine.messages) == 1
    message = parse(engine.raw[0])  # python-hl7 parses what the engine received
    msh = message.segment("MSH")
    assert str(msh(9)) == "ORU^R01^ORU_R01"
    assert str(msh(10)) == control_id(f"engine|{files[1][1]}")
    assert (str(msh(5)), str(msh(6)), str(msh(12))) == ("RIS", "RADIOLOGY", "2.5.1")
    obr = message.segment("OBR")
    assert (str(obr(2)), str(obr(3))) == ("ACC-0001", study)
    obx = message.segments("OBX")
    assert len(obx) == 1 + 2  # the suggested priority, then one per finding
    assert str(obx[0](3)).startswith("PRIORITY^") and str(obx[0](5)) == "HIGH^HIGH^L"
    assert [str(o(4)) for o in obx[1:]] == ["1", "2"]
    assert str(obx[1](5)).startswith("Nodule 1: volume 523.6 mm3") and "confidence 0.91 (max 0.98)" in str(obx[1](5))
    with pytest.raises(KeyError):
        message.segment("PID")  # no patient identity unless the config asks for it
    assert PATIENT_NAME not in engine.raw[0] and PATIENT_NAME not in caplog.text


def test_hl7_with_include_patient_carries_the_sources_identifiers_in_pid(data_dir: Path, store: JobStore) -> None:
    with MllpListener().start() as engine:
        config = node_config(data_dir, hl7_target("engine", engine.port, extra="include_patient = true"))
        _, files = make_result(data_dir, store, "ROUTINE", [])
        ids = queue(config, store, files)
        notifying(config, store, lambda: state(store, ids[0]) is JobState.DONE)
    pid = parse(engine.raw[0]).segment("PID")
    assert (str(pid(3)), str(pid(5)), str(pid(7))) == (PATIENT_ID, PATIENT_NAME, "19700101")


def _ack_with(code: str) -> Callable[[Any], Any]:
    def ack(message: Any) -> Any:
        answer = message.create_ack(code)
        answer.segment("MSA").append(answer.create_field(["unknown receiving application"]))
        return answer

    return ack


@pytest.mark.parametrize(("code", "expected"), [("AR", JobState.DEAD), ("AE", JobState.QUEUED)])
def test_a_refused_hl7_message_is_parked_and_an_application_error_retried(
    data_dir: Path, store: JobStore, code: str, expected: JobState
) -> None:
    with MllpListener(_ack_with(code)).start() as engine:
        config = node_config(data_dir, hl7_target("engine", engine.port))
        _, files = make_result(data_dir, store, "HIGH", [finding(1)])
        ids = queue(config, store, files)
        job = notifying(config, store, lambda: (j := store.get(ids[0])) and j.last_error and j)
    assert job.state is expected
    assert f"answered {code}" in job.last_error and "unknown receiving application" in job.last_error


@pytest.mark.parametrize(("status", "expected"), [(400, JobState.DEAD), (503, JobState.QUEUED)])
def test_a_refused_webhook_is_parked_and_a_server_error_retried(
    data_dir: Path, store: JobStore, status: int, expected: JobState
) -> None:
    with WebhookListener(status=status).start() as listener:
        config = node_config(data_dir, webhook("ris", listener.url))
        _, files = make_result(data_dir, store, "HIGH", [finding(1)])
        ids = queue(config, store, files)
        job = notifying(config, store, lambda: (j := store.get(ids[0])) and j.last_error and j)
    assert job.state is expected and f"HTTP {status}" in job.last_error


def test_a_parked_notification_is_delivered_once_a_person_retries_it_with_pacs_node_jobs(
    data_dir: Path, store: JobStore, tmp_path: Path
) -> None:
    with WebhookListener(status=404).start() as listener:
        target = webhook("ris", listener.url)
        config = node_config(data_dir, target)
        _, files = make_result(data_dir, store, "HIGH", [finding(1)])
        [job_id] = queue(config, store, files)
        notifying(config, store, lambda: state(store, job_id) is JobState.DEAD)
        listener.status = 200  # the receiver's endpoint is fixed
        config_file = tmp_path / "node.toml"
        config_file.write_text(config_text(data_dir, target), encoding="utf-8")
        command = [sys.executable, "-m", "node", "jobs"]
        listed = subprocess.run([*command, "list", "--config", str(config_file), "--state", "dead"], **RUN).stdout
        assert f"{job_id}" in listed and "notify:ris" in listed and "HTTP 404" in listed
        subprocess.run([*command, "retry", str(job_id), "--config", str(config_file)], **RUN)
        notifying(config, store, lambda: state(store, job_id) is JobState.DONE)
    assert [r.headers["Idempotency-Key"] for r in listener.requests] == [f"ris|{files[1][1]}"] * 2


@pytest.mark.parametrize("kind", ["webhook", "hl7"])
def test_a_receiver_that_is_down_gets_the_notification_once_after_it_comes_back(
    data_dir: Path, store: JobStore, kind: str
) -> None:
    listener: WebhookListener | MllpListener = WebhookListener() if kind == "webhook" else MllpListener()
    target = webhook("ris", listener.url) if isinstance(listener, WebhookListener) else hl7_target("ris", listener.port)
    config = node_config(data_dir, target)
    _, files = make_result(data_dir, store, "HIGH", [finding(1)])
    [job_id] = queue(config, store, files)
    stop = threading.Event()
    notifier = Notifier(config, store, stop, poll_s=0.05)
    notifier.start()
    try:
        # Down: tries fail and are retried with backoff (the job waits, queued, between them).
        failed = wait_for(lambda: (j := store.get(job_id)) and j.attempts >= 2 and j, timeout=20, what="2 tries")
        assert failed.last_error and failed.state is not JobState.DONE
        with listener.start():
            wait_for(lambda: state(store, job_id) is JobState.DONE, timeout=20, what="the delivery")
            done_attempts = store.get(job_id).attempts  # type: ignore[union-attr]
            # Nothing follows a delivery: the job is done, its key taken for good.
            assert queue(config, store, files) == [job_id]
            received = listener.requests if isinstance(listener, WebhookListener) else listener.messages
            assert len(received) == 1
    finally:
        stop.set()
        assert notifier.join(10)
    assert done_attempts >= 3
    assert len(received) == 1


def test_https_webhook_verifies_the_server_against_the_configured_ca(
    data_dir: Path, store: JobStore, tmp_path: Path
) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with WebhookListener(tls=server).start() as listener:
        trusted = webhook("trusted", listener.url, extra=f'ca_certificates = "{ca_file}"')
        config = node_config(data_dir, trusted + webhook("untrusted", listener.url))
        _, files = make_result(data_dir, store, "HIGH", [finding(1)])
        ids = queue(config, store, files)
        jobs = {store.get(i).kind: i for i in ids}  # type: ignore[union-attr]
        untrusted = notifying(
            config,
            store,
            lambda: (
                state(store, jobs["notify:trusted"]) is JobState.DONE
                and (j := store.get(jobs["notify:untrusted"]))
                and j.last_error
                and j
            ),
        )
    assert len(listener.requests) == 1  # the untrusted target never got through the handshake
    assert untrusted.state is JobState.QUEUED and "TLS" in untrusted.last_error


def test_a_notification_whose_result_is_gone_is_parked_with_the_reason(data_dir: Path, store: JobStore) -> None:
    config = node_config(data_dir, hl7_target("engine", free_port()))
    _, files = make_result(data_dir, store, "HIGH", [finding(1)])
    ids = queue(config, store, files)
    (data_dir / files[0][0]).parent.joinpath("findings.json").unlink()
    job = notifying(config, store, lambda: (j := store.get(ids[0])) and j.state is JobState.DEAD and j)
    assert "findings.json: missing" in job.last_error
