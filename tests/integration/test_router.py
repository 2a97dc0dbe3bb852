"""The router over real associations: instance-level forwards as instances arrive, per-rule quiet periods,
series/study rules and the fallback at completion, @caller, discard, and no second forward."""

from __future__ import annotations

from pathlib import Path

from node.jobs.kinds import ANALYSE
from node.routing.log import RoutingLog
from node.send import send_kind
from tests.helpers import tiny_ct
from tests.integration.test_pipeline import Pipeline, associate
from tests.integration.test_receive import SERIES, STUDY

PEERS = """
[[peers]]
name = "scanner"
ae_title = "STORESCU"
allow_store = true
host = "127.0.0.1"
port = 11113
[[peers]]
name = "pacs"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = 4242
[[peers]]
name = "archive"
ae_title = "ARCHIVE"
host = "127.0.0.1"
port = 4243
"""


def make(tmp: Path, rules: str) -> Pipeline:
    return Pipeline(tmp, "[completion]\nquiet_seconds = 10\n", peers=PEERS, analysis="", rules=rules)


def store(p: Pipeline, n: int, series: str = SERIES) -> None:
    assoc = associate(p.port)
    for i in range(n):
        assert assoc.send_c_store(tiny_ct(STUDY, series, f"{series}.{i}", index=i)).Status == 0
    assoc.release()


def sends(p: Pipeline, peer: str) -> list[str]:
    return sorted(str(j.payload["sop"]) for j in p.jobs.list(kind=send_kind(peer)))


def test_instance_rules_forward_as_instances_arrive_once(tmp_path: Path) -> None:
    p = make(
        tmp_path,
        '[[rules]]\nname = "ct"\nlevel = "instance"\nwhen = { attribute = "Modality", equals = "CT" }\n'
        'forward = ["pacs", "archive"]\n',
    )
    try:
        store(p, 3)
        assert p.router.route_new() == 3
        assert sends(p, "pacs") == sends(p, "archive") == [f"{SERIES}.{i}" for i in range(3)]
        job = p.jobs.list(kind=send_kind("pacs"))[0]
        assert str(job.payload["path"]).startswith(f"spool/{STUDY}/{SERIES}/")
        assert p.router.route_new() == 0
        # The cursor is durable: a new router (a restart) does not route them again.
        again = p.fresh_router()
        assert again.route_new() == 0
        # A duplicate is not routed again, a new instance is; completion adds nothing for instance rules.
        store(p, 4)
        assert p.router.route_new() == 1
        assert len(sends(p, "pacs")) == 4
        p.clock.now += 10
        assert p.timer.check() == [STUDY]
        assert len(sends(p, "pacs")) == 4 and p.jobs.list(kind=ANALYSE) == []
    finally:
        p.close()


def test_a_rules_quiet_period_and_series_rules_at_completion(tmp_path: Path) -> None:
    rules = """
[[rules]]
name = "fast"
level = "series"
quiet_seconds = 2
when = { attribute = "Modality", equals = "CT" }
forward = ["archive"]
[[rules]]
name = "mr"
level = "series"
when = { attribute = "Modality", equals = "MR" }
forward = ["pacs"]
"""
    p = make(tmp_path, rules)
    try:
        store(p, 2)
        p.router.route_new()
        assert sends(p, "archive") == []  # series rules wait for completion
        p.clock.now += 2
        assert p.timer.check() == [STUDY]  # the rule's 2 s, not the config's 10 s
        assert sends(p, "archive") == [f"{SERIES}.0", f"{SERIES}.1"] and sends(p, "pacs") == []
        log = RoutingLog(p.config.node.data_dir / "routing.sqlite3")
        decided = {(d.rule, d.matched) for d in log.decisions(STUDY)}
        assert decided == {("fast", True), ("mr", False)}
        assert "Modality equals 'MR' failed (actual CT)" in next(
            d.detail for d in log.decisions(STUDY) if d.rule == "mr"
        )
    finally:
        p.close()


def test_fallback_caller_and_discard(tmp_path: Path) -> None:
    rules = """
[[rules]]
name = "scouts"
level = "series"
when = { attribute = "SeriesDescription", regex = "(?i)scout" }
discard = true
[[rules]]
name = "mr"
level = "study"
when = { attribute = "Modality", equals = "MR" }
forward = ["pacs"]
[fallback]
forward = ["archive", "@caller"]
"""
    p = make(tmp_path, rules)
    try:
        store(p, 2)
        p.router.route_new()
        p.clock.now += 10
        assert p.timer.check() == [STUDY]
        assert sends(p, "archive") == sends(p, "scanner") == [f"{SERIES}.0", f"{SERIES}.1"]  # @caller = scanner
        assert sends(p, "pacs") == []
    finally:
        p.close()
