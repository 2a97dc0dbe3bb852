"""The ecg-rhythm card and model: a waveform input kind, a recurrent ONNX graph, triage by rhythm and rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from pydicom.data import get_testdata_file

from node.analyse.card import find_card, parse_card
from node.analyse.ecg.analysis import analyse_ecg, load, refusal, triage
from node.analyse.ecg.rhythm import network_input
from node.analyse.runtime import Model
from node.analyse.types import Priority
from node.errors import ConfigError, InputError
from node.synth.ecg import RHYTHMS, make_ecg

REAL_ECG = Path(get_testdata_file("waveform_ecg.dcm", download=False))


@pytest.fixture(scope="module")
def model() -> Model:
    return Model(find_card("ecg-rhythm"), threads=1)


def test_card_has_a_waveform_input_and_coded_rhythms() -> None:
    card = find_card("ecg-rhythm")  # verifies the ONNX file's sha256
    spec = card.input
    assert spec.kind == "waveform" and len(spec.leads) == 12 and spec.sampling_rate_hz == 500.0
    assert spec.channels == 14 and spec.window_s == 10.0
    assert [label.name.lower().replace(" ", "_") for label in card.labels] == list(RHYTHMS)
    assert card.label(4).type.value == "49436004" and card.label(4).type.scheme == "SCT"
    assert not card.outputs.seg and card.outputs.sr
    assert card.training["script"] == "models/ecg-rhythm/train.py"


_CARD = """
[model]
name = "w"
version = "1"
description = "d"
manufacturer = "m"
intended_use = "u"
sha256 = "{sha}"
[input]
{input}
[[labels]]
index = 1
name = "Sinus rhythm"
category = {{ scheme = "SCT", value = "404684003", meaning = "Clinical finding" }}
type = {{ scheme = "SCT", value = "426783006", meaning = "Sinus rhythm" }}
[outputs]
seg = false
"""


def test_waveform_and_image_fields_do_not_mix() -> None:
    def card(spec: str) -> None:
        parse_card(_CARD.format(sha="0" * 64, input=spec))

    card('kind = "waveform"\nleads = ["II"]\nsampling_rate_hz = 500.0\nwindow_s = 10.0')
    with pytest.raises(ConfigError, match="for images, not waveforms"):
        card('kind = "waveform"\nleads = ["II"]\nsampling_rate_hz = 500.0\nwindow_s = 10.0\nsize = [64, 64]')
    with pytest.raises(ConfigError, match="needs leads, sampling_rate_hz > 0 and window_s > 0"):
        card('kind = "waveform"\nsampling_rate_hz = 500.0\nwindow_s = 10.0')
    with pytest.raises(ConfigError, match="are for kind 'waveform'"):
        card(
            'kind = "2d"\nsize = [64, 64]\nspacing_mm = [1.0, 1.0]\nwindow = { center = 0, width = 1 }\nleads = ["II"]'
        )
    with pytest.raises(ConfigError, match=r"input\.window: required for image models"):
        card('kind = "2d"\nsize = [64, 64]\nspacing_mm = [1.0, 1.0]')


def test_the_onnx_graph_is_recurrent_and_fits_the_card() -> None:
    card = find_card("ecg-rhythm")
    graph = onnx.load(str(card.onnx_path)).graph
    assert {"GRU", "LSTM", "RNN"} & {node.op_type for node in graph.node}
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [card.input.channels, round(card.input.window_s * card.input.sampling_rate_hz)]


def test_the_real_ecg_is_sinus_rhythm(model: Model) -> None:
    result = analyse_ecg(load(REAL_ECG, model.card), model)
    assert result.rhythm == "Sinus rhythm", result.probabilities
    assert result.rule_rhythm == "Sinus rhythm"
    assert result.priority == Priority.ROUTINE


@pytest.mark.parametrize("rhythm", RHYTHMS)
def test_synthetic_rhythms_through_file_and_network(tmp_path: Path, model: Model, rhythm: str) -> None:
    rate = {"sinus_rhythm": 75.0, "sinus_bradycardia": 48.0, "sinus_tachycardia": 125.0}.get(rhythm)
    path = make_ecg(777, rhythm, heart_rate_bpm=rate).write_dicom(tmp_path / "ecg.dcm")
    result = analyse_ecg(load(path, model.card), model)
    assert result.rhythm.lower().replace(" ", "_") == rhythm, result.probabilities
    assert abs(sum(result.probabilities.values()) - 1) < 1e-3


def test_triage_follows_the_cards_rules() -> None:
    card = find_card("ecg-rhythm")
    assert triage("Atrial fibrillation", 130.0, card)[0] == Priority.HIGH
    assert triage("Atrial fibrillation", 90.0, card)[0] == Priority.ROUTINE
    assert triage("Sinus bradycardia", 36.0, card) == (Priority.HIGH, "Sinus bradycardia at 36 bpm (below 40)")
    assert triage("Sinus rhythm", 80.0, card)[0] == Priority.ROUTINE


def test_refusals_by_modality_and_by_the_cards_rate(tmp_path: Path, model: Model) -> None:
    wave = load(REAL_ECG, model.card)
    assert refusal(wave, model.card) is None
    path = make_ecg(5, "sinus_rhythm", rate_hz=200.0).write_dicom(tmp_path / "slow.dcm")
    with pytest.raises(InputError, match="sampled at 200 Hz, the analysis needs at least 250 Hz"):
        load(path, model.card)


def test_network_input_is_scaled_per_recording() -> None:
    spec = find_card("ecg-rhythm").input
    ecg = make_ecg(9, "sinus_rhythm")
    peaks = np.array(ecg.truth.r_peaks)
    a = network_input(ecg.signals, peaks, spec)
    b = network_input(ecg.signals * 3, peaks, spec)
    assert a.shape == (1, 14, 5000) and np.allclose(a, b, atol=1e-5)
    assert np.isclose(a[0, 12, peaks[0]], 1.0)  # the beat channel peaks at each detected QRS
    # The tachogram's time average is the heart rate (standardised), between the first and last beat.
    between = a[0, 13, peaks[0] : peaks[-1]]
    assert abs(float(between.mean()) * 30 + 90 - 60000 / (np.diff(peaks).mean() * 2)) < 0.01
