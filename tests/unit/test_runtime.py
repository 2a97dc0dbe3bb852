"""The runtime is generic: a different ONNX model with a different card runs with no code change."""

from pathlib import Path

import numpy as np
import pytest

from node.analyse.card import InputSpec, Window, load_card
from node.analyse.pipeline import analyse, refusal
from node.analyse.runtime import Model, context_stack
from node.errors import ModelError
from tests.helpers import card_text, threshold_model, volume_from_array


def phantom_values() -> np.ndarray:
    """A dark slab (label 1) holding a bright ball of radius 5 mm (label 2) on a mid-grey field."""
    zz, yy, xx = np.mgrid[:24, :48, :48]
    values = np.zeros((24, 48, 48), np.float32)
    values[:, 8:40, 8:40] = -450.0
    values[(zz - 12) ** 2 + (yy - 24) ** 2 + (xx - 24) ** 2 <= 25] = 450.0
    return values


def make_model(tmp_path: Path, **kw: str) -> Model:
    dims = 3 if kw.get("kind") == "3d" else 2
    channels = 1 + 2 * int(kw.get("context", "0"))
    sha = threshold_model(tmp_path / "model.onnx", dims, kw.get("activation", "softmax"), channels)
    (tmp_path / "model.toml").write_text(card_text(sha, **kw))
    return Model(load_card(tmp_path), threads=1)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"activation": "sigmoid"},
        {"context": "2"},
        {"kind": "3d", "size": "[8, 16, 16]", "spacing": "[1.0, 1.0, 1.0]"},
        {"kind": "3d", "size": "[16, 32, 32]", "spacing": "[2.0, 1.5, 1.5]"},
    ],
    ids=["2d-softmax", "2d-sigmoid", "2.5d-context", "3d-sliding-window", "3d-resampled"],
)
def test_threshold_models_segment_and_measure(tmp_path: Path, kw: dict[str, str]) -> None:
    model = make_model(tmp_path, **kw)
    values = phantom_values()
    volume = volume_from_array(values)
    labels = model.segment(volume)
    truth = np.where(values > 200, 2, np.where(values < -200, 1, 0))
    agreement = (labels == truth).mean()
    assert agreement > 0.97, agreement
    result = analyse(volume, model)
    bright = [f for f in result.findings if f.label_name == "Bright"]
    assert len(bright) == 1
    f = bright[0]
    # Resampling to 2 mm along z and back blurs a 5 mm ball; the rest stays within a few voxels.
    tolerance = 0.3 if kw.get("spacing", "").startswith("[2.0") else 0.15
    assert abs(f.volume_mm3 - 4 / 3 * np.pi * 125) / (4 / 3 * np.pi * 125) < tolerance
    assert 9.0 <= f.longest_axial_diameter_mm <= 12.0
    assert np.allclose(f.centroid_mm, (24.0, 24.0, 12.0), atol=1.0)
    assert str(result.priority) == "HIGH" and "Bright 1" in result.priority_reason


def test_wrong_output_channels_is_a_clear_error(tmp_path: Path) -> None:
    sha = threshold_model(tmp_path / "model.onnx", 2, "sigmoid")  # 2 channels
    (tmp_path / "model.toml").write_text(card_text(sha))  # card says softmax: needs 3
    model = Model(load_card(tmp_path), threads=1)
    with pytest.raises(Exception, match="2 output channels, but the card has 2 labels"):
        model.segment(volume_from_array(phantom_values()))


def test_refusal_reasons(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    assert refusal(volume_from_array(phantom_values()), model.card) is None
    mr = volume_from_array(phantom_values(), modality="MR")
    assert "accepts modality CT, series is MR" in (refusal(mr, model.card) or "")


def test_context_stack_interpolates_neighbours_and_clamps_at_the_ends() -> None:
    slices = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 2), np.float32)
    spec = InputSpec(
        kind="2d",
        size=(2, 2),
        spacing_mm=(1.0, 1.0),
        window=Window(center=0, width=1),
        context_slices=2,
        context_spacing_mm=1.5,
    )
    stack = context_stack(slices, 2, 1.0, spec)  # slice spacing 1 mm: offsets -3, -1.5, 0, 1.5, 3 mm
    assert np.allclose(stack[:, 0, 0], [0.0, 0.5, 2.0, 3.5, 4.0])
    stack = context_stack(slices, 0, 1.0, spec)
    assert np.allclose(stack[:, 0, 0], [0.0, 0.0, 0.0, 1.5, 3.0])
    # Into a slot of a batch buffer, as the runtime calls it: the same values land in the buffer.
    buffer = np.full((3, 5, 2, 2), -1.0, np.float32)
    context_stack(slices, 2, 1.0, spec, out=buffer[1])
    assert np.allclose(buffer[1, :, 1, 1], [0.0, 0.5, 2.0, 3.5, 4.0]) and (buffer[[0, 2]] == -1).all()


def test_label_threshold_sets_the_operating_point(tmp_path: Path) -> None:
    sha = threshold_model(tmp_path / "model.onnx")
    text = card_text(sha).replace("findings = true", "findings = true\nthreshold = 0.1")
    values = np.full((2, 16, 16), 150.0, np.float32)  # windowed 0.65: Bright at about p = 0.12
    (tmp_path / "model.toml").write_text(card_text(sha))
    assert (Model(load_card(tmp_path), threads=1).segment(volume_from_array(values)) == 0).all()
    (tmp_path / "model.toml").write_text(text)
    assert (Model(load_card(tmp_path), threads=1).segment(volume_from_array(values)) == 2).all()


def test_card_and_network_must_agree_on_input_channels(tmp_path: Path) -> None:
    sha = threshold_model(tmp_path / "model.onnx", channels_in=1)
    (tmp_path / "model.toml").write_text(card_text(sha, context="2"))
    with pytest.raises(ModelError, match="takes 1 input channels but the card's input spec gives 5"):
        Model(load_card(tmp_path), threads=1)
