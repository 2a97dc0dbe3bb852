"""`models evaluate` end to end on one short held-out series (the real figures take 10 x 200 slices)."""

from __future__ import annotations

import subprocess
import sys

from node.analyse.card import find_card
from node.analyse.evaluate import HELD_OUT_SEED, evaluate, format_report
from node.analyse.runtime import Model


def test_evaluate_scores_model_and_baseline_on_held_out_series() -> None:
    lines: list[str] = []
    report = evaluate(Model(find_card("lung-nodule-ct")), series=1, slices=40, progress=lines.append)
    assert report.series == 1 and report.model.scans == report.baseline.scans == 1
    assert f"seed {HELD_OUT_SEED}" in lines[0]
    # The lung is large and easy: both methods must find it; nodule scores are in [0, 1].
    assert report.model.mean_dice(1) > 0.9 and report.baseline.mean_dice(1) > 0.9
    table = format_report(report)
    assert "Dice Lung" in table and "false positives per scan" in table and "baseline" in table


def test_evaluate_command_prints_the_table() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "node", "models", "evaluate", "lung-nodule-ct", "--series", "1", "--slices", "24"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "sensitivity (nodules >= 5 mm)" in run.stdout and "held-out series" in run.stdout


def test_evaluate_command_takes_another_held_out_range() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "node", "models", "evaluate", "lung-nodule-ct"]
        + ["--series", "1", "--slices", "24", "--first-seed", str(HELD_OUT_SEED + 7)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert f"seed {HELD_OUT_SEED + 7}" in run.stdout + run.stderr
    assert f"seeds {HELD_OUT_SEED + 7}..{HELD_OUT_SEED + 7};" in run.stdout


def test_evaluate_command_refuses_seeds_that_are_not_held_out() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "node", "models", "evaluate", "lung-nodule-ct", "--first-seed", "50000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "not held out" in run.stderr and "Traceback" not in run.stderr
