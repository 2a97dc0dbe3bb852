from pathlib import Path

import pytest

from node.analyse.card import find_card, load_card, parse_card
from node.errors import ChecksumError, ConfigError
from tests.helpers import card_text, threshold_model


def test_shipped_card_loads_and_verifies() -> None:
    card = find_card("lung-nodule-ct")
    assert card.model.name == "lung-nodule-ct"
    assert {label.name for label in card.labels} == {"Lung", "Nodule"}
    assert card.onnx_path.is_file()


def test_checksum_mismatch_refuses_with_clear_message(tmp_path: Path) -> None:
    sha = threshold_model(tmp_path / "model.onnx")
    (tmp_path / "model.toml").write_text(card_text("f" * 64))
    with pytest.raises(ChecksumError, match=r"sha256 is .* but the card says f{64}.*Refusing to load"):
        load_card(tmp_path)
    (tmp_path / "model.toml").write_text(card_text(sha))
    assert load_card(tmp_path).model.sha256 == sha


def test_missing_model_file(tmp_path: Path) -> None:
    (tmp_path / "model.toml").write_text(card_text("0" * 64))
    with pytest.raises(ChecksumError, match="missing"):
        load_card(tmp_path)


def test_unknown_key_and_bad_values_name_their_path() -> None:
    text = card_text("0" * 64).replace('version = "1.0"', 'version = "1.0"\ncolour = 3')
    with pytest.raises(ConfigError, match=r"model\.colour: Extra inputs are not permitted"):
        parse_card(text, "x.toml")
    text = card_text("0" * 64).replace("size = [64, 64]", "size = [64, 64, 8]")
    with pytest.raises(ConfigError, match=r"input: input.size and input.spacing_mm need 2 numbers"):
        parse_card(text, "x.toml")
    text = card_text("0" * 64).replace('label = "Bright"', 'label = "Nope"')
    with pytest.raises(ConfigError, match=r"triage.rules: label 'Nope' is not one of"):
        parse_card(text, "x.toml")


def test_not_toml_and_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_card("[model", "bad.toml")
    with pytest.raises(ConfigError, match=r"model 'nope' not found.*known models"):
        find_card("nope", tmp_path)


def test_replace_table_keeps_the_rest_of_the_card() -> None:
    from node.analyse.card import replace_table

    text = '[model]\nname = "x"\n\n[training]\nsteps = 1\n\n[evaluation]\nf1 = 0.5\n\n[other]\na = 1\n'
    out = replace_table(text, "training", "[training]\nsteps = 2\n")
    assert "steps = 2" in out and "steps = 1" not in out and "[evaluation]\nf1 = 0.5" in out and "[other]" in out
    out = replace_table(out, "evaluation", "[evaluation]\nf1 = 0.9\n")
    assert "f1 = 0.9" in out and "f1 = 0.5" not in out and "[training]\nsteps = 2" in out and "a = 1" in out
    added = replace_table('[model]\nname = "x"\n', "evaluation", "[evaluation]\nf1 = 1\n")
    assert added.endswith('name = "x"\n\n[evaluation]\nf1 = 1\n')
