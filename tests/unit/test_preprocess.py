import numpy as np
import pytest

from node.analyse.card import InputSpec, Window
from node.analyse.preprocess import (
    apply_window,
    from_model,
    labels_from_model,
    labels_to_model,
    plan_2d,
    resize_back,
    to_model,
)


def spec(size: int = 64, spacing: float = 2.0, **kw: object) -> InputSpec:
    return InputSpec(
        kind="2d", size=(size, size), spacing_mm=(spacing, spacing), window=Window(center=0.0, width=200.0), **kw
    )


def test_window_maps_and_clips() -> None:
    out = apply_window(np.array([-200.0, -100.0, 0.0, 100.0, 500.0]), Window(center=0.0, width=200.0))
    assert np.allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_plan_scales_to_target_spacing_and_centres() -> None:
    plan = plan_2d((100, 120), (1.0, 1.0), spec(64, 2.0))
    assert plan.scaled == (50, 60)
    assert plan.offset == (-7, -2)  # padded: window larger than the image
    plan = plan_2d((512, 512), (0.5, 0.5), spec(64, 2.0))
    assert plan.scaled == (128, 128) and plan.offset == (32, 32)  # cropped


def test_roundtrip_keeps_a_disc_in_place() -> None:
    yy, xx = np.mgrid[:100, :120]
    disc = ((yy - 40) ** 2 + (xx - 70) ** 2 <= 15**2).astype(np.uint8)
    plan = plan_2d(disc.shape, (1.0, 1.0), spec(64, 2.0))
    targets = labels_to_model(disc, plan, 2)
    assert targets.shape == (2, 64, 64)
    assert np.allclose(targets.sum(axis=0), 1.0)
    back = from_model(targets, plan, "linear")
    assert back.shape == (2, 100, 120)
    restored = back.argmax(axis=0)
    dice = 2 * (restored & disc).sum() / (restored.sum() + disc.sum())
    assert dice > 0.95


def test_outside_field_of_view_is_background() -> None:
    plan = plan_2d((512, 512), (1.0, 1.0), spec(64, 2.0))  # 256 scaled, window 64: most is cut off
    probs = np.zeros((3, 64, 64), np.float32)
    probs[2] = 1.0
    back = from_model(probs, plan, "nearest")
    assert back[0, 0, 0] == 1.0 and back[2, 0, 0] == 0.0
    assert back[2, 256, 256] == 1.0


def test_to_model_range_and_options() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(0, 50, (80, 80)).astype(np.float32)
    for kw in ({}, {"denoise": "gaussian"}, {"denoise": "bilateral"}, {"clahe": True}):
        out = to_model(image, plan_2d(image.shape, (1.0, 1.0), spec(64, 1.0, **kw)), spec(64, 1.0, **kw))
        assert out.shape == (64, 64) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
@pytest.mark.parametrize(
    ("source", "spacing"), [((512, 512), (0.7, 0.7)), ((100, 120), (1.0, 1.0)), ((90, 70), (3.0, 2.5))]
)
@pytest.mark.parametrize("thresholds", [(0.0, 0.0), (0.0, 0.3), (0.45, 0.2)])
def test_labels_from_model_is_argmax_of_resized_probabilities(
    interpolation: str, source: tuple[int, int], spacing: tuple[float, float], thresholds: tuple[float, float]
) -> None:
    """The fast per-plane decision equals argmax over resize_back, then thresholds in channel order."""
    plan = plan_2d(source, spacing, spec(64, 2.0))
    rng = np.random.default_rng(sum(source))
    logits = rng.normal(0, 2, (3, 64, 64)).astype(np.float32)
    logits[:, 20:30, 20:30] = 0.0  # exact ties: the first class must win, as with argmax
    probs = np.exp(logits) / np.exp(logits).sum(axis=0)
    values = np.array([0, 1, 7], np.uint8)
    expected = values[np.argmax(resize_back(probs, plan, interpolation), axis=-1)]
    back = resize_back(probs, plan, interpolation)
    for c, threshold in enumerate(thresholds, start=1):
        if threshold > 0:
            expected[back[..., c] >= threshold] = values[c]
    got = labels_from_model(probs, plan, interpolation, values, thresholds)
    assert got.dtype == np.uint8 and got.shape == source
    assert np.array_equal(got, expected)
