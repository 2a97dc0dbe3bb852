"""Measure a model on held-out phantom series, beside the classical baseline.

Each series is generated from a seed >= ``HELD_OUT_SEED`` (training uses small seeds), written as DICOM,
loaded back and analysed by the whole pipeline; the classical baseline segments the same volume and
reports nodules from the same size up as the card does. Scores:

- per label: Dice against the phantom's label volume (mean over series);
- per lesion (nodules >= ``min_diameter_mm``): a true nodule is found when its centre voxel lies in a
  predicted component; a predicted component is a false positive when it contains no voxel of any true
  nodule (of any size); sensitivity, precision, F1, false positives per scan, and the median absolute
  volume error of found nodules against their analytic volume.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from node.analyse import baseline, postprocess
from node.analyse.pipeline import analyse
from node.analyse.runtime import Model
from node.analyse.types import Volume
from node.analyse.volume import load_series
from node.synth.nodules import Nodule
from node.synth.phantom import NODULE, Phantom, make_phantom

HELD_OUT_SEED = 100_000


@dataclass
class Scores:
    """Accumulated scores of one method over all series."""

    dice: dict[int, list[float]] = field(default_factory=dict)
    true_positives: int = 0
    false_negatives: int = 0
    false_positives: int = 0
    correct_predictions: int = 0
    volume_errors: list[float] = field(default_factory=list)
    scans: int = 0

    @property
    def sensitivity(self) -> float:
        n = self.true_positives + self.false_negatives
        return self.true_positives / n if n else float("nan")

    @property
    def precision(self) -> float:
        n = self.correct_predictions + self.false_positives
        return self.correct_predictions / n if n else float("nan")

    @property
    def f1(self) -> float:
        s, p = self.sensitivity, self.precision
        return 2 * s * p / (s + p) if s + p > 0 else 0.0

    @property
    def fp_per_scan(self) -> float:
        return self.false_positives / self.scans if self.scans else float("nan")

    @property
    def median_volume_error(self) -> float:
        return statistics.median(self.volume_errors) if self.volume_errors else float("nan")

    def mean_dice(self, label: int) -> float:
        values = self.dice.get(label, [])
        return float(np.mean(values)) if values else float("nan")


def dice(prediction: NDArray[np.bool_], truth: NDArray[np.bool_]) -> float:
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((prediction & truth).sum()) / total


def centre_voxel(nodule: Nodule, phantom: Phantom) -> tuple[int, int, int]:
    """The (slice, row, column) voxel nearest the nodule's centre: a nodule is found when it is labelled."""
    x, y, z = nodule.centre_mm
    x0, y0, z0 = phantom.first_position
    return (
        round((z - z0) / phantom.slice_spacing),
        round((y - y0) / phantom.pixel_spacing),
        round((x - x0) / phantom.pixel_spacing),
    )


def score(
    scores: Scores,
    labels: NDArray[np.uint8],
    phantom: Phantom,
    volume: Volume,
    nodule_label: int,
    min_diameter_mm: float,
) -> None:
    """Add one series' results to ``scores``. ``labels`` uses the card's indices; truth uses the phantom's."""
    for index in np.unique(np.concatenate([np.unique(labels), np.unique(phantom.labels)])):
        if index == 0:
            continue
        scores.dice.setdefault(int(index), []).append(dice(labels == index, phantom.labels == index))
    comp, count = postprocess.components(labels == nodule_label)
    sizes = np.bincount(comp.ravel(), minlength=count + 1)
    truth, _ = postprocess.components(phantom.labels == NODULE)
    large_truth = set()
    for nodule in phantom.nodules:
        k, j, i = centre_voxel(nodule, phantom)
        if not (0 <= k < labels.shape[0]) or nodule.diameter_mm < min_diameter_mm:
            continue
        large_truth.add(int(truth[k, j, i]))
        hit = int(comp[k, j, i])
        if hit:
            scores.true_positives += 1
            predicted = float(sizes[hit]) * volume.voxel_volume_mm3
            scores.volume_errors.append(abs(predicted - nodule.volume_mm3) / nodule.volume_mm3)
        else:
            scores.false_negatives += 1
    # A prediction overlapping a large true nodule is correct; one overlapping only nodules below the
    # size threshold counts neither way; one overlapping no true nodule is a false positive.
    large_mask = np.isin(truth, list(large_truth - {0}))
    correct = set(np.unique(comp[large_mask]).tolist()) - {0}
    touched = set(np.unique(comp[truth > 0]).tolist()) - {0}
    scores.correct_predictions += len(correct)
    scores.false_positives += count - len(touched)
    scores.scans += 1


@dataclass
class Report:
    series: int
    model: Scores
    baseline: Scores
    labels: dict[int, str]
    min_diameter_mm: float
    first_seed: int = HELD_OUT_SEED


def evaluate(
    model: Model,
    series: int = 10,
    slices: int = 200,
    min_diameter_mm: float = 5.0,
    first_seed: int = HELD_OUT_SEED,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run the model and the baseline on ``series`` held-out phantoms (all nodules >= 3 mm drawn)."""
    card = model.card
    nodule = next(lab for lab in card.labels if lab.findings)
    nodule_label = nodule.index
    organ_label = next((lab.index for lab in card.labels if not lab.findings), 1)
    ours, classical = Scores(), Scores()
    for n in range(series):
        seed = first_seed + n
        phantom = make_phantom(seed, slices=slices, nodules=1 + seed % 6)
        with tempfile.TemporaryDirectory(prefix="pacs-node-eval-") as tmp:
            phantom.write_dicom(Path(tmp))
            volume = load_series(Path(tmp))
        result = analyse(volume, model)
        score(ours, result.labels, phantom, volume, nodule_label, min_diameter_mm)
        base = baseline.segment(volume, organ_label, nodule_label, max(3.0, nodule.min_diameter_mm))
        score(classical, base, phantom, volume, nodule_label, min_diameter_mm)
        if progress is not None:
            progress(
                f"series {n + 1}/{series} (seed {seed}, {len(phantom.nodules)} nodules): "
                f"model found {ours.true_positives}/{ours.true_positives + ours.false_negatives} so far, "
                f"{ours.false_positives} FP; baseline {classical.true_positives}, {classical.false_positives} FP"
            )
    names = {lab.index: lab.name for lab in card.labels}
    return Report(series, ours, classical, names, min_diameter_mm, first_seed)


def format_report(report: Report) -> str:
    """The side-by-side table ``models evaluate`` prints."""
    rows = [f"{'':34s}{'model':>10s}{'baseline':>10s}"]
    for index, name in sorted(report.labels.items()):
        rows.append(
            f"{'Dice ' + name:34s}{report.model.mean_dice(index):10.3f}{report.baseline.mean_dice(index):10.3f}"
        )
    d = f">= {report.min_diameter_mm:g} mm"
    for title, attr, fmt in (
        (f"sensitivity (nodules {d})", "sensitivity", "{:10.3f}"),
        ("precision", "precision", "{:10.3f}"),
        ("F1", "f1", "{:10.3f}"),
        ("false positives per scan", "fp_per_scan", "{:10.2f}"),
        ("median abs volume error", "median_volume_error", "{:10.1%}"),
    ):
        rows.append(
            f"{title:34s}" + fmt.format(getattr(report.model, attr)) + fmt.format(getattr(report.baseline, attr))
        )
    m = report.model
    rows.append(
        f"({report.series} held-out series, seeds {report.first_seed}..{report.first_seed + report.series - 1}; "
        f"{m.true_positives + m.false_negatives} nodules {d}; "
        f"model {m.true_positives} found, {m.false_positives} false positives)"
    )
    return "\n".join(rows)
