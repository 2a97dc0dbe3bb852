"""``[[notify]]`` in the config, the notification-job contract and the ORU^R01 builder, without a network."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path

import hl7
import pytest

from node.analyse.types import Priority
from node.config import parse_config
from node.config.notify import PRIORITIES
from node.errors import ConfigError
from node.jobs import JobStore
from node.notify import Notifier, notify_jobs
from node.notify.oru import control_id, escape, oru_r01
from node.notify.payload import read_result
from tests.notify_fixtures import finding, hl7_target, make_result, node_config, webhook

BASE = '[node]\nae_title = "PACSNODE"\ndata_dir = "/tmp/pacs-node-test"\n'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + text)
    return str(caught.value).splitlines()


def test_the_config_knows_the_analysis_priorities_in_their_order() -> None:
    assert tuple(p.value for p in Priority) == PRIORITIES


def test_notify_targets_parse_with_their_defaults() -> None:
    config = parse_config(BASE + webhook("ris", "https://ris.example/hooks") + hl7_target("engine", 2575))
    ris, engine = config.notify
    assert (ris.kind, ris.min_priority, ris.url, ris.timeout_s) == ("webhook", "LOW", "https://ris.example/hooks", 2.0)
    assert (engine.kind, engine.port, engine.sending_application, engine.include_patient) == (
        "hl7",
        2575,
        "PACSNODE",
        False,
    )
    assert parse_config(BASE).notify == ()


def test_notify_errors_name_their_key_path_and_what_is_allowed() -> None:
    found = problems(
        '[[notify]]\nname = "ris"\nkind = "webhook"\nurl = "ftp://ris"\nsecret = "short"\nmin_priority = "URGENT"\n'
        '[[notify]]\nname = "engine"\nkind = "hl7"\nport = 2575\nurl = "https://x.example/"\ncolour = "red"\n'
        '[[notify]]\nname = "engine"\nkind = "hl7"\nhost = "ris"\nport = 2575\nreceiving_application = "A|B"\n'
    )
    expected = [
        "node.toml: notify.0.url: must be an http:// or https:// URL such as 'https://ris.example/hooks/ai'",
        "notify.0.secret: must be 16..1024 characters",
        "notify.0.min_priority: must be 'LOW', 'ROUTINE', 'MEDIUM', 'HIGH' or 'STAT', not 'URGENT'",
        "notify.1.colour: unknown key (allowed here: name, kind,",
        "notify.2.receiving_application: must be 1..40 printable ASCII characters without | ^ ~ \\ &",
    ]
    for text in expected:
        assert any(text in line for line in found), (text, found)
    # Relations between keys are checked once the keys themselves are valid.
    assert problems('[[notify]]\nname = "engine"\nkind = "hl7"\nport = 2575\nurl = "https://x.example/"\n') == [
        "node.toml: notify.0.host: missing (required for kind = 'hl7')",
        "node.toml: notify.0.url: only for kind = 'webhook'",
    ]
    twice = webhook("ris", "https://ris.example/") + hl7_target("ris", 2575)
    assert problems(twice) == ["node.toml: notify.1.name: 'ris' is already a notify target name; names must be unique"]


def test_a_result_notifies_the_targets_whose_minimum_priority_it_reaches(tmp_path: Path) -> None:
    targets = "".join(
        webhook(name, "https://ris.example/", level) for name, level in [("all", "LOW"), ("urgent", "HIGH")]
    )
    config = node_config(tmp_path, targets)
    with JobStore(tmp_path / "jobs.sqlite3") as jobs:
        for priority, expected in [("LOW", ["notify:all"]), ("HIGH", ["notify:all", "notify:urgent"])]:
            study, files = make_result(tmp_path, jobs, priority, [finding(1)])
            new = notify_jobs(config.notify, tmp_path, files, "lung-nodule-ct", priority=5)
            assert [job.kind for job in new] == expected
            sr_uid = files[1][1]
            assert {job.dedup_key for job in new} == {f"{kind.removeprefix('notify:')}|{sr_uid}" for kind in expected}
            assert all(job.once and job.priority == 5 for job in new)
            ids = jobs.enqueue_many(new)
            assert {jobs.get(i).study for i in ids} == {study}  # type: ignore[union-attr]
        assert notify_jobs((), tmp_path, files, "lung-nodule-ct") == []


def test_notifications_for_a_target_no_longer_configured_are_reported_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with JobStore(tmp_path / "jobs.sqlite3") as jobs:
        _, files = make_result(tmp_path, jobs, "HIGH", [finding(1)])
        jobs.enqueue_many(
            notify_jobs(node_config(tmp_path, webhook("gone", "https://x.example/")).notify, tmp_path, files, "m")
        )
        stop = threading.Event()
        notifier = Notifier(node_config(tmp_path, ""), jobs, stop)
        with caplog.at_level(logging.WARNING, logger="node.notify.runner"):
            notifier.start()
        stop.set()
        assert notifier.join(5)
    assert "1 notifications wait for notify target 'gone', which the config no longer has" in caplog.text


def test_oru_r01_escapes_values_and_leaves_out_pid_by_default(tmp_path: Path) -> None:
    assert escape("a|b^c&d~e\\f\ng") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f g"
    config = node_config(tmp_path, hl7_target("engine", 2575))
    with JobStore(tmp_path / "jobs.sqlite3") as jobs:
        _, files = make_result(tmp_path, jobs, "STAT", [finding(1)], accession="A|1")
        [job] = notify_jobs(config.notify, tmp_path, files, "lung-nodule-ct")
    result = read_result(tmp_path, dict(job.payload), "PACSNODE")
    text = oru_r01(result, config.notify[0], datetime(2026, 12, 6, 1, 2, 3))
    message = hl7.parse(text)
    assert str(message.segment("MSH")(7)) == "20261206010203"
    assert str(message.segment("MSH")(10)) == control_id(str(job.dedup_key)) and len(control_id("x")) == 20
    assert message.unescape(str(message.segment("OBR")(2))) == "A|1"
    assert [str(s(0)) for s in message] == ["MSH", "ORC", "OBR", "OBX", "NTE", "OBX"]
