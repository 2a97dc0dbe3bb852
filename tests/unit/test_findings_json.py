"""findings.json: confidence and key slice per finding, and the numbers that tie it to the SEG and SR.

A small CT series with two spheres of known centre and density is analysed by a threshold model whose
probabilities are known in closed form (tests.helpers.threshold_model: softmax of 0, 12 - 40x, 40x - 28
on the windowed value x), so the confidence the worker reports can be checked, not just its presence.
"""

from __future__ import annotations

import math

import highdicom as hd
import numpy as np
import pytest

from node.analyse.card import ModelCard, load_card
from node.analyse.pipeline import analyse
from node.analyse.runtime import Model
from node.analyse.volume import load_series
from node.encode import encode_results
from node.encode.findings import findings_json
from node.synth.dicom_writer import write_ct_series
from tests.helpers import card_text, threshold_model

SHAPE = (20, 64, 64)
SPACING = 1.0  # mm, in-plane and between slices: the model grid is the source grid
FIRST_Z = -40.0
# (centre (k, j, i), radius in mm, HU): the 9 mm sphere is denser than the 6.6 mm one. Radii whose
# lattice discs shrink one slice off the centre, so the centre slice is strictly the largest.
SPHERES = [((8, 20, 20), 4.5, 300), ((12, 44, 44), 3.3, 250)]


def expected_probability(hu: float) -> float:
    """The threshold model's probability of label 2 for a voxel of ``hu`` (window 0 +- 500 HU)."""
    x = min(max((hu + 500.0) / 1000.0, 0.0), 1.0)
    logits = np.array([0.0, 12.0 - 40.0 * x, 40.0 * x - 28.0])
    e = np.exp(logits - logits.max())
    return float(e[2] / e.sum())


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> ModelCard:
    folder = tmp_path_factory.mktemp("model")
    sha = threshold_model(folder / "model.onnx")
    (folder / "model.toml").write_text(card_text(sha))
    return load_card(folder)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory, card: ModelCard) -> tuple[dict[str, object], list[object]]:
    hu = np.zeros(SHAPE, np.int16)
    k, j, i = np.indices(SHAPE)
    for (ck, cj, ci), radius, value in SPHERES:
        hu[((k - ck) ** 2 + (j - cj) ** 2 + (i - ci) ** 2) * SPACING**2 <= radius**2] = value
    folder = tmp_path_factory.mktemp("ct")
    write_ct_series(
        hu, folder, pixel_spacing=(SPACING, SPACING), slice_thickness=SPACING, first_position=(0.0, 0.0, FIRST_Z)
    )
    volume = load_series(folder)
    result = analyse(volume, Model(card, threads=1))
    datasets = encode_results(result, card)
    summary = findings_json(result, card, datasets, [])
    return summary, datasets


def test_each_finding_has_its_key_slice_through_the_largest_cross_section(
    analysed: tuple[dict[str, object], list[object]],
) -> None:
    summary, datasets = analysed
    findings = summary["findings"]
    assert isinstance(findings, list) and len(findings) == 2
    seg = datasets[0]
    for finding, ((ck, _, _), radius, _) in zip(findings, SPHERES, strict=True):
        key = finding["key_slice"]
        # A sphere is widest through its centre; slices are 1 mm apart, so that slice is the centre's.
        assert key["index"] == ck
        assert key["z_mm"] == pytest.approx(FIRST_Z + ck * SPACING)
        assert key["area_mm2"] == pytest.approx(math.pi * radius**2, rel=0.15)
        # The key slice names the source image it was taken from.
        sources = {
            str(s.ReferencedSOPInstanceUID)
            for item in seg.PerFrameFunctionalGroupsSequence
            if item.SegmentIdentificationSequence[0].ReferencedSegmentNumber == finding["segment_number"]
            for d in item.DerivationImageSequence
            for s in d.SourceImageSequence
        }
        assert key["sop_instance_uid"] in sources


def test_confidence_is_the_models_probability_inside_the_finding(
    analysed: tuple[dict[str, object], list[object]],
) -> None:
    summary, _ = analysed
    findings = summary["findings"]
    assert isinstance(findings, list)
    for finding, (_, _, value) in zip(findings, SPHERES, strict=True):
        p = expected_probability(value)
        confidence = finding["confidence"]
        # Kept as round(255 p): within one step of the closed form.
        assert confidence["max"] == pytest.approx(p, abs=1 / 255 + 1e-3)
        assert confidence["mean"] == pytest.approx(p, abs=1 / 255 + 1e-3)
    # The denser sphere is the surer one.
    assert findings[0]["confidence"]["mean"] > findings[1]["confidence"]["mean"]


def test_segment_number_and_tracking_uid_match_the_seg_and_the_sr(
    analysed: tuple[dict[str, object], list[object]],
) -> None:
    summary, datasets = analysed
    seg, sr_dataset = datasets[0], datasets[1]
    assert summary["model"] == {"name": "threshold-test", "version": "1.0"}
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    sr = hd.sr.Comprehensive3DSR.from_dataset(sr_dataset)
    groups = {g.tracking_uid: g for g in sr.content.get_volumetric_roi_measurement_groups()}
    findings = summary["findings"]
    assert isinstance(findings, list)
    for finding in findings:
        segment = segments[finding["segment_number"]]
        assert segment.SegmentLabel == finding["name"] == f"Bright {finding['number']}"
        assert segment.TrackingUID == finding["tracking_uid"]
        group = groups[finding["tracking_uid"]]
        assert group.referenced_segment is not None
        assert group.referenced_segment.referenced_segment_numbers == [finding["segment_number"]]
