from pathlib import Path

import numpy as np
import pytest

from node.analyse.card import load_card
from node.analyse.measure import findings, triage
from node.analyse.postprocess import clean, elongation, fill_holes_2d, longest_axial_diameter_mm
from tests.helpers import card_text, threshold_model, volume_from_array


@pytest.fixture
def card(tmp_path):  # type: ignore[no-untyped-def]
    sha = threshold_model(tmp_path / "model.onnx")
    (tmp_path / "model.toml").write_text(
        card_text(sha)
        .replace("findings = true", "findings = true\nmin_volume_mm3 = 20.0\nfill_holes = true")
        .replace('meaning = "Lung" }', 'meaning = "Lung" }\nfill_holes = true')
    )
    return load_card(tmp_path)


def ellipsoid(shape, centre, axes, spacing):  # type: ignore[no-untyped-def]
    zz, yy, xx = np.indices(shape).astype(float)
    return (
        ((zz - centre[0]) * spacing[0] / axes[0]) ** 2
        + ((yy - centre[1]) * spacing[1] / axes[1]) ** 2
        + ((xx - centre[2]) * spacing[2] / axes[2]) ** 2
    ) <= 1.0


@pytest.mark.parametrize("spacing", [(1.0, 0.7, 0.7), (2.0, 0.8, 0.8), (0.8, 0.6, 0.6)])
def test_sphere_volume_and_diameter_in_mm(spacing, card) -> None:  # type: ignore[no-untyped-def]
    shape = (40, 80, 80)
    mask = ellipsoid(shape, (20, 40, 40), (8.0, 8.0, 8.0), spacing)  # 16 mm sphere
    labels = np.where(mask, 2, 0).astype(np.uint8)
    volume = volume_from_array(np.where(mask, 40.0, -800.0), spacing)
    (f,) = findings(labels, card, volume)
    true_volume = 4 / 3 * np.pi * 8**3
    assert abs(f.volume_mm3 - true_volume) / true_volume < 0.05
    assert abs(f.longest_axial_diameter_mm - 16.0) < 1.0
    assert f.mean_value == pytest.approx(40.0)
    cz, cy, cx = 20 * spacing[0], 40 * spacing[1], 40 * spacing[2]
    assert np.allclose(f.centroid_mm, (cx, cy, cz), atol=0.2)


def test_ellipse_longest_diameter_is_the_major_axis() -> None:
    mask = ellipsoid((1, 100, 160), (0, 50, 80), (1.0, 10.0, 30.0), (1.0, 0.5, 0.5))  # 60 x 20 mm in plane
    assert abs(longest_axial_diameter_mm(mask, (0.5, 0.5)) - 60.0) < 1.0


def test_clean_drops_small_components_and_fills_holes(card) -> None:  # type: ignore[no-untyped-def]
    labels = np.zeros((10, 40, 40), np.uint8)
    labels[2:8, 5:35, 5:35] = 1
    labels[4:6, 15:25, 15:25] = 0  # a hole in the organ: filled
    labels[5, 30, 30] = 2  # one voxel: below min_volume_mm3, dropped, then lung hole filled
    labels[3:7, 8:13, 8:13] = 2  # 100 mm3 nodule: kept
    volume = volume_from_array(np.zeros(labels.shape), (1.0, 1.0, 1.0))
    clean(labels, card, volume)
    assert (labels[4:6, 15:25, 15:25] == 1).all()
    assert labels[5, 30, 30] == 1
    assert (labels[3:7, 8:13, 8:13] == 2).all()


def test_fill_holes_2d() -> None:
    ring = np.zeros((20, 20), np.uint8)
    ring[5:15, 5:15] = 1
    ring[8:12, 8:12] = 0
    assert fill_holes_2d(ring)[10, 10] == 1


def test_triage_default_when_nothing_qualifies(card) -> None:  # type: ignore[no-untyped-def]
    priority, reason = triage((), card)
    assert str(priority) == "ROUTINE" and "no finding" in reason


def test_elongation_tells_a_ball_from_a_tube() -> None:
    ball = ellipsoid((30, 40, 40), (15, 20, 20), (6.0, 6.0, 6.0), (1.0, 0.7, 0.7))
    assert elongation(ball, (1.0, 0.7, 0.7)) < 1.2
    tube = np.zeros((30, 40, 40), bool)
    tube[2:28, 18:22, 18:22] = True  # 26 mm along z, about 3 mm across
    assert elongation(tube, (1.0, 0.7, 0.7)) > 5
    flat = np.zeros((30, 40, 40), bool)
    flat[15, 10:30, 10:30] = True  # one slice: elongation stays finite
    assert np.isfinite(elongation(flat, (2.0, 0.7, 0.7)))


def test_clean_drops_tubes_when_the_card_says_so(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sha = threshold_model(tmp_path / "model.onnx")
    (tmp_path / "model.toml").write_text(
        card_text(sha).replace("findings = true", "findings = true\nmax_elongation = 2.2")
    )
    card = load_card(tmp_path)
    labels = np.zeros((30, 40, 40), np.uint8)
    labels[ellipsoid((30, 40, 40), (15, 10, 10), (5.0, 5.0, 5.0), (1.0, 1.0, 1.0))] = 2
    labels[2:28, 28:31, 28:31] = 2
    clean(labels, card, volume_from_array(np.zeros(labels.shape)))
    assert labels[15, 10, 10] == 2 and labels[15, 29, 29] == 0


def test_lung_nodule_card_keeps_short_outlines_and_elongated_nodules_drops_vessel_pieces() -> None:
    # The operating point chosen on tuning seeds 50000..50079: an outline measuring 4.5-5 mm (a 5 mm
    # nodule drawn slightly small by the network) is kept, so is the most elongated nodule shape the
    # phantoms draw (axes 1 : 0.6 : 0.6), and a short straight piece of vessel 3 mm across is not.
    card = load_card(Path(__file__).parents[2] / "models" / "lung-nodule-ct", verify=False)
    spacing = (1.0, 0.7, 0.7)
    shape = (30, 60, 150)
    small = ellipsoid(shape, (15, 30, 20), (2.0, 2.0, 2.0), spacing)
    long = ellipsoid(shape, (15, 30, 60), (2.4, 2.4, 4.0), spacing)
    zz, yy, xx = np.indices(shape)
    vessel = (((zz - 15) * spacing[0]) ** 2 + ((yy - 30) * spacing[1]) ** 2 <= 1.5**2) & (
        abs((xx - 120) * spacing[2]) <= 3.0
    )
    assert 4.5 < longest_axial_diameter_mm(small, spacing[1:]) < 5.0
    assert 1.5 < elongation(long, spacing) < 1.8 and 2.0 < elongation(vessel, spacing) < 2.5
    labels = np.where(small | long | vessel, 2, 1).astype(np.uint8)
    clean(labels, card, volume_from_array(np.where(labels == 2, 40.0, -800.0), spacing))
    assert (labels[small] == 2).all() and (labels[long] == 2).all()
    assert (labels[vessel] == 1).all()  # dropped, then claimed back by the lung around it
