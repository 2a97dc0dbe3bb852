"""Measure an ECG rhythm model on held-out synthetic recordings, beside the rule-based classifier.

Each recording is generated from a seed >= ``HELD_OUT_SEED`` (training uses 0..N-1, validation 50000..),
written as a 12-lead ECG file, loaded back through the node's loader and analysed by the whole pipeline.
Scores: per rhythm recall, precision and F1, accuracy, macro F1 and the confusion matrix, for the network
and for :func:`node.analyse.ecg.measure.rule_rhythm` on the same recordings; and the mean absolute error
of heart rate, PR, QRS and QT against the generator's truth (readable recordings; PR where both the
truth and the measurement have a P wave, with how many had one).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from node.analyse.ecg.analysis import analyse_ecg, load
from node.analyse.ecg.rhythm import rhythm_key
from node.analyse.runtime import Model
from node.synth.ecg import make_ecg

HELD_OUT_SEED = 100_000


@dataclass
class Confusion:
    """Counts[truth][predicted] over the card's rhythm names."""

    names: list[str]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, truth: str, predicted: str) -> None:
        row = self.counts.setdefault(truth, {})
        row[predicted] = row.get(predicted, 0) + 1

    def count(self, truth: str, predicted: str) -> int:
        return self.counts.get(truth, {}).get(predicted, 0)

    @property
    def total(self) -> int:
        return sum(sum(row.values()) for row in self.counts.values())

    @property
    def accuracy(self) -> float:
        return sum(self.count(n, n) for n in self.names) / max(1, self.total)

    def recall(self, name: str) -> float:
        n = sum(self.counts.get(name, {}).values())
        return self.count(name, name) / n if n else float("nan")

    def precision(self, name: str) -> float:
        n = sum(self.count(t, name) for t in self.counts)
        return self.count(name, name) / n if n else float("nan")

    def f1(self, name: str) -> float:
        r, p = self.recall(name), self.precision(name)
        return 2 * r * p / (r + p) if r + p > 0 else 0.0

    @property
    def macro_f1(self) -> float:
        return float(np.mean([self.f1(n) for n in self.names]))


@dataclass
class EcgReport:
    recordings: int
    first_seed: int
    model: Confusion
    rules: Confusion
    errors: dict[str, list[float]]
    p_waves_expected: int = 0

    def mae(self, name: str) -> float:
        values = self.errors.get(name, [])
        return float(np.mean(np.abs(values))) if values else float("nan")


def evaluate_ecg(
    model: Model, recordings: int, first_seed: int = HELD_OUT_SEED, progress: Callable[[str], None] | None = None
) -> EcgReport:
    card = model.card
    names = [label.name for label in card.labels]
    by_key = {rhythm_key(name): name for name in names}
    report = EcgReport(
        recordings, first_seed, Confusion(names), Confusion(names), {"hr": [], "pr": [], "qrs": [], "qt": []}
    )
    with tempfile.TemporaryDirectory(prefix="ecg-eval-") as tmp:
        for n, seed in enumerate(range(first_seed, first_seed + recordings), 1):
            ecg = make_ecg(seed, rate_hz=card.input.sampling_rate_hz)
            path = ecg.write_dicom(Path(tmp) / "ecg.dcm")
            result = analyse_ecg(load(path, card), model)
            truth = by_key[ecg.truth.rhythm]
            report.model.add(truth, result.rhythm)
            report.rules.add(truth, result.rule_rhythm)
            t, m = ecg.truth, result.measurements
            if t.rhythm != "unreadable":
                pairs = [
                    ("hr", m.heart_rate_bpm, t.heart_rate_bpm),
                    ("qrs", m.qrs_ms, t.qrs_ms),
                    ("qt", m.qt_ms, t.qt_ms),
                ]
                if t.pr_ms is not None:
                    report.p_waves_expected += 1
                    pairs.append(("pr", m.pr_ms, t.pr_ms))
                for key, measured, true in pairs:
                    if measured is not None and true is not None:
                        report.errors[key].append(float(measured) - float(true))
            if progress is not None and n % 100 == 0:
                progress(f"{n}/{recordings} recordings, accuracy so far {report.model.accuracy:.3f}")
    return report


def format_ecg_report(report: EcgReport) -> str:
    names = report.model.names
    last = report.first_seed + report.recordings - 1
    lines = [
        f"{report.recordings} held-out recordings (seeds {report.first_seed}..{last})",
        f"{'rhythm':<22}{'n':>5}  {'model R':>8}{'P':>7}{'F1':>7}  {'rules R':>8}{'P':>7}{'F1':>7}",
    ]
    for name in names:
        count = sum(report.model.counts.get(name, {}).values())
        m, r = report.model, report.rules
        lines.append(
            f"{name:<22}{count:>5}  {m.recall(name):>8.3f}{m.precision(name):>7.3f}{m.f1(name):>7.3f}"
            f"  {r.recall(name):>8.3f}{r.precision(name):>7.3f}{r.f1(name):>7.3f}"
        )
    lines.append(f"{'accuracy':<27}  {report.model.accuracy:>8.3f}{'':>14}  {report.rules.accuracy:>8.3f}")
    lines.append(f"{'macro F1':<27}  {report.model.macro_f1:>8.3f}{'':>14}  {report.rules.macro_f1:>8.3f}")
    lines.append("confusion (rows truth, columns model):")
    short = [n[:10] for n in names]
    lines.append(" " * 22 + "".join(f"{s:>11}" for s in short))
    for name in names:
        lines.append(f"{name:<22}" + "".join(f"{report.model.count(name, p):>11}" for p in names))
    pr = len(report.errors["pr"])
    lines.append(
        f"mean absolute error: heart rate {report.mae('hr'):.2f} bpm, PR {report.mae('pr'):.1f} ms "
        f"({pr} of {report.p_waves_expected} P waves found), QRS {report.mae('qrs'):.1f} ms, "
        f"QT {report.mae('qt'):.1f} ms"
    )
    return "\n".join(lines)


def card_section(report: EcgReport, name: str) -> str:
    """The card's [evaluation] table for ``models evaluate NAME --write-card``."""
    m, r = report.model, report.rules
    lines = [
        "[evaluation]",
        f"# pacs-node models evaluate {name} --series {report.recordings} --first-seed {report.first_seed} "
        "--write-card (the model beside the rule-based classifier on the same recordings)",
        f"held_out_recordings = {report.recordings}",
        f"held_out_first_seed = {report.first_seed}",
        f"accuracy = {m.accuracy:.4f}",
        f"macro_f1 = {m.macro_f1:.4f}",
    ]
    for name in m.names:
        key = rhythm_key(name)
        lines += [f"recall_{key} = {m.recall(name):.4f}", f"f1_{key} = {m.f1(name):.4f}"]
    lines += [f"baseline_accuracy = {r.accuracy:.4f}", f"baseline_macro_f1 = {r.macro_f1:.4f}"]
    for name in m.names:
        lines.append(f"baseline_f1_{rhythm_key(name)} = {r.f1(name):.4f}")
    lines += [
        f"heart_rate_mae_bpm = {report.mae('hr'):.3f}",
        f"pr_mae_ms = {report.mae('pr'):.2f}",
        f"pr_measured = {len(report.errors['pr'])}",
        f"pr_expected = {report.p_waves_expected}",
        f"qrs_mae_ms = {report.mae('qrs'):.2f}",
        f"qt_mae_ms = {report.mae('qt'):.2f}",
    ]
    return "\n".join(lines) + "\n"
