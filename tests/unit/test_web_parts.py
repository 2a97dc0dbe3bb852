"""The web console's parts on their own: [web] config, auth (limit, expiry, tokens, CSRF), the worklist order,
orientation letters, the feedback store, JobStore.cancel and the read-only index reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from node.config import parse_config
from node.errors import ConfigError
from node.jobs import JobState, JobStateError, JobStore
from node.store import Index
from node.store.browse import IndexReader, modality_of
from node.web.auth import Auth, csrf_ok, token_sha256
from node.web.feedback import FeedbackError, FeedbackStore
from node.web.keyimage import orientation_letters
from node.web.triage import FindingsCache, worklist

HASH = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("secret password")
BASE = '[node]\nae_title = "N"\ndata_dir = "/tmp/x"\n'


def web(extra: str) -> str:
    return BASE + "[web]\nenabled = true\n" + extra


def test_web_config_problems_name_their_keys() -> None:
    config = parse_config(web(f'[[web.users]]\nname = "ann"\npassword_hash = "{HASH}"\nrole = "radiologist"\n'))
    assert config.web.users[0].role == "radiologist" and config.web.port == 8080 and config.web.scheme == "http"
    cases = {
        'viewer_url = "https://v/?study=x"': "web.viewer_url: must contain {study_uid}",
        '[[web.users]]\nname = "bob"\npassword_hash = "plain"\n': "web.users.0.password_hash: must be an argon2 hash",
        '[[web.tokens]]\nname = "p"\nsha256 = "abc"\n': "web.tokens.0.sha256: must be the 64 hex digits",
        f'[[web.users]]\nname = "bob"\npassword_hash = "{HASH}"\nrole = "admin"\n': "web.users.0.role",
        'certificate = "/etc/hostname"\n': "web.private_key: missing",
        "port = 0\n": "web.port: must be 1..65535",
    }
    for text, message in cases.items():
        with pytest.raises(ConfigError) as caught:
            parse_config(web(text))
        assert message in str(caught.value), (text, str(caught.value))
    twice = f'[[web.users]]\nname = "a"\npassword_hash = "{HASH}"\n[[web.tokens]]\nname = "a"\nsha256 = "{"0" * 64}"\n'
    with pytest.raises(ConfigError, match="'a' is named twice"):
        parse_config(web(twice))


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_auth_limits_failures_per_address_expires_sessions_and_knows_tokens() -> None:
    clock = Clock()
    token = "t" * 40
    config = parse_config(
        web(
            f'session_minutes = 1\n[[web.users]]\nname = "ann"\npassword_hash = "{HASH}"\nrole = "operator"\n'
            f'[[web.tokens]]\nname = "prom"\nsha256 = "{token_sha256(token)}"\n'
        )
    )
    auth = Auth(config.web, one_time_token="once", clock=clock)
    for _ in range(5):
        assert auth.login("ann", "wrong", "10.0.0.1") is None
    assert auth.limited("10.0.0.1") and not auth.limited("10.0.0.2")
    clock.now += 60.1
    assert not auth.limited("10.0.0.1")
    who = auth.login("ann", "secret password", "10.0.0.1")
    assert who is not None and who.may("retry") and not who.may("feedback") and who.session is not None
    assert auth.session(who.session) == who
    assert csrf_ok(who, who.csrf) and not csrf_ok(who, None) and not csrf_ok(who, "x")
    clock.now += 61
    assert auth.session(who.session) is None
    bearer = auth.bearer(token)
    assert bearer is not None and bearer.role == "viewer" and csrf_ok(bearer, None) and not bearer.may("retry")
    assert auth.bearer("other") is None and auth.login("nobody", "secret password", "10.0.0.3") is None
    once = auth.login_once("once", "10.0.0.4")
    assert once is not None and once.may("audit") and auth.login_once("once", "10.0.0.4") is None


def results(outbox: Path, job: int, priority: str, diameters: list[float]) -> None:
    folder = outbox / f"analyse-{job}" / f"1.2.{job}"
    folder.mkdir(parents=True)
    findings = [{"label": "Nodule", "number": i + 1, "longest_axial_diameter_mm": d} for i, d in enumerate(diameters)]
    data = {"series_instance_uid": f"1.2.{job}", "priority": priority, "findings": findings, "files": []}
    (folder / "findings.json").write_text(json.dumps(data))
    (folder.parent / "manifest.json").write_text("{}")


def test_worklist_orders_by_priority_then_findings_then_arrival(tmp_path: Path) -> None:
    results(tmp_path, 1, "ROUTINE", [])
    results(tmp_path, 2, "ROUTINE", [4.0])
    results(tmp_path, 3, "HIGH", [9.0])
    results(tmp_path, 4, "ROUTINE", [5.0])
    cache = FindingsCache(tmp_path)
    analyses = [
        (1, "none", "m"),
        (2, "small-late", "m"),
        (3, "high", "m"),
        (4, "small-early", "m"),
        (5, "unfinished", "m"),
    ]
    arrivals = {"none": 1.0, "small-late": 5.0, "high": 9.0, "small-early": 2.0, "unfinished": 3.0}
    order = [item.study_instance_uid for item in worklist(analyses, arrivals, cache)]
    assert order == ["high", "small-early", "small-late", "none", "unfinished"]
    assert cache.of(5, "m") == ()  # no manifest yet: not cached, asked again later
    results(tmp_path, 5, "STAT", [20.0])
    assert worklist(analyses, arrivals, cache)[0].study_instance_uid == "unfinished"


def test_orientation_letters_of_axial_and_coronal_slices() -> None:
    assert orientation_letters([1, 0, 0, 0, 1, 0]) == {"right": "L", "left": "R", "bottom": "P", "top": "A"}
    assert orientation_letters([1, 0, 0, 0, 0, -1]) == {"right": "L", "left": "R", "bottom": "F", "top": "H"}


def test_feedback_latest_verdict_counts_and_a_rejection_needs_a_reason(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback.sqlite3")
    common = {"analysis": 1, "series": "1.2", "study": "9", "model": "m", "version": "1", "comment": ""}
    with pytest.raises(FeedbackError, match="needs a reason"):
        store.add(number=1, verdict="reject", reason="", user="ann", **common)
    store.add(number=1, verdict="reject", reason="wrong size", user="ann", **common)
    store.add(number=1, verdict="confirm", reason="ignored", user="bob", **common)
    store.add(number=2, verdict="reject", reason="false positive", user="ann", **{**common, "comment": "=HYPERLINK()"})
    [agreement] = store.agreement()
    assert (agreement.confirmed, agreement.rated, agreement.ratio) == (1, 2, 0.5)
    assert store.latest()[(1, "1.2", 1)].user == "bob" and store.latest()[(1, "1.2", 1)].reason == ""
    assert len(store.csv().splitlines()) == 4 and "'=HYPERLINK()" in store.csv()  # not a formula in a spreadsheet
    store.close()
    assert FeedbackStore(tmp_path / "feedback.sqlite3").agreement() == [agreement]  # durable


def test_cancel_parks_a_waiting_job_and_closes_a_dead_one(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path / "jobs.sqlite3", max_attempts=5)
    waiting = jobs.enqueue("send:pacs", {"n": 1})
    running = jobs.enqueue("send:pacs", {"n": 2})
    assert jobs.cancel(waiting, "by ann") is JobState.DEAD
    assert jobs.cancel(waiting, "by ann") is JobState.DONE
    job = jobs.get(waiting)
    assert job is not None and job.last_error == "cancelled: by ann"
    assert jobs.claim("send:pacs", "sender-1-pacs-0", 60) is not None
    with pytest.raises(JobStateError, match="only a queued or dead job"):
        jobs.cancel(running, "by ann")
    jobs.close()


def test_index_reader_pages_filters_and_never_writes(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite3", clock=lambda: 100.0)
    for study, sop_class, ae in (
        ("1.1", "1.2.840.10008.5.1.4.1.1.2", "CT1"),
        ("1.2", "1.2.840.10008.5.1.4.1.1.4", "MR1"),
    ):
        index.record(
            sop_instance_uid=study + ".1.1",
            study_instance_uid=study,
            series_instance_uid=study + ".1",
            sop_class_uid=sop_class,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            path="p",
            size=10,
            calling_ae=ae,
            association_id="a",
        )
    reader = IndexReader(tmp_path / "index.sqlite3")
    assert reader.studies(modality="CT")[1] == 1 and reader.studies(calling_ae="MR1")[0][0].study_instance_uid == "1.2"
    assert reader.studies(state="complete")[1] == 0 and reader.totals() == (2, 2)
    study = reader.study("1.1")
    assert study is not None and study.series[0].modality == "CT" and study.calling_aes == ("CT1",)
    assert modality_of("1.2.840.10008.5.1.4.1.1.88.34") == "SR" and modality_of("1.2.3") == "?"
    with pytest.raises(Exception, match="readonly"):
        reader._db.execute("DELETE FROM instances")
    assert reader.writable() is None
    reader.close()
    index.close()


def test_users_hash_and_token_commands_print_what_the_config_takes(tmp_path: Path) -> None:
    import subprocess
    import sys

    hashed = subprocess.run(
        [sys.executable, "-m", "node", "users", "hash"], input="a long password\n", capture_output=True, text=True
    )
    assert hashed.returncode == 0, hashed.stderr
    digest = hashed.stdout.strip()
    assert PasswordHasher().verify(digest, "a long password")
    short = subprocess.run(
        [sys.executable, "-m", "node", "users", "hash"], input="short\n", capture_output=True, text=True
    )
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    made = subprocess.run([sys.executable, "-m", "node", "users", "token"], capture_output=True, text=True)
    token, sha = (line.split(":", 1)[1].strip() for line in made.stdout.splitlines())
    assert token_sha256(token) == sha
    config = parse_config(
        web(
            f'[[web.users]]\nname = "ann"\npassword_hash = "{digest}"\n'
            f'[[web.tokens]]\nname = "prom"\nsha256 = "{sha}"\n'
        )
    )
    auth = Auth(config.web)
    assert auth.login("ann", "a long password", "10.0.0.9") is not None and auth.bearer(token) is not None
