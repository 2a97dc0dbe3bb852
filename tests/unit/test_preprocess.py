import numpy as np

from node.analyse.card import InputSpec, Window
from node.analyse.preprocess import apply_window, from_model, labels_to_model, plan_2d, to_model


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
