"""``pacs-node rules test``: per series, each rule, why it failed with the actual value, what would run."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cli import main
from tests.helpers import node_toml, tiny_ct

RULES = """
[[peers]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 4242
[[peers]]
name = "ct1"
ae_title = "CT1"
allow_store = true

[[rules]]
name = "scouts"
level = "instance"
when = { attribute = "SeriesDescription", regex = "(?i)scout" }
discard = true
[[rules]]
name = "ct-to-pacs"
level = "instance"
when = { all = [{ attribute = "Modality", equals = "CT" }, { calling_ae = { equals = "CT1" } }] }
forward = ["pacs"]
[[rules]]
name = "thin"
level = "series"
when = { attribute = "SliceThickness", le = 0.5 }
forward = ["pacs"]
[fallback]
forward = ["pacs"]
"""


def test_rules_test_explains_matches_failures_and_fallback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        node_toml(tmp_path / "data", 11112, peers=RULES.split("[[rules]]")[0])
        + "[[rules]]".join([""] + RULES.split("[[rules]]")[1:])
    )
    series = tmp_path / "in"
    series.mkdir()
    for i in range(3):
        ds = tiny_ct("1.2.3", "1.2.3.4", f"1.2.3.4.{i}", index=i)
        ds.SeriesDescription = "Scout" if i == 0 else "Chest"
        ds.save_as(series / f"{i}.dcm", enforce_file_format=True)
    (series / "notes.txt").write_text("not DICOM")
    assert main(["rules", "test", str(series), "--config", str(config), "--calling-ae", "CT1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    out = "\n".join(lines)
    scouts = next(line for line in lines if "scouts [instance]" in line)
    assert scouts.endswith("(1 of 3 instances match)")
    # The scout stopped the instance rules for itself: the forward covers the two others.
    forward = next(line for line in lines if "ct-to-pacs [instance]" in line)
    assert forward.startswith("  MATCH") or "not evaluated: rule 'scouts' matched first" in forward
    assert forward.endswith("(2 of 3 instances match)")
    assert "no    thin [series]: not matched: SliceThickness <= 0.5 failed (actual 1" in out
    assert "[fallback] -> forward to pacs" in out
    assert "1 files skipped (not DICOM)" in out
    assert main(["rules", "test", str(series), "--config", str(config), "--calling-ae", "CT9"]) == 0
    assert "calling_ae equals 'CT1' failed (actual CT9)" in capsys.readouterr().out
