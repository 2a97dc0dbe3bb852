"""Every result object the node writes must pass two independent validators without errors.

dicom3tools' ``dciodvfy`` and pixelmed's ``DicomInstanceValidator`` (SEG, SC) / ``DicomSRValidator``
(SR: IOD and TID 1500 templates) both exit 0 whatever they find, so their output is read: any line
starting with "Error" from either fails the test (:func:`tests.tools.validator_errors`).

Inputs: the synthetic phantom (two and four nodules, SEG + SR + SC), a result without SEG or findings,
and pydicom's real CT and MR files analysed by a model that accepts them (the test threshold model,
its card set to each modality), whose headers come from real scanners rather than our writer.

Warnings known and accepted (see ``node/encode``): dicom3tools 2022 does not yet know Device UID in
the Contributing Equipment Sequence (IHE AI Results needs it), nor the private coding scheme of the
suggested priority ("99PACSNODE", declared in the Coding Scheme Identification Sequence).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from node.analyse.card import ModelCard, Outputs, load_card
from node.analyse.pipeline import analyse
from node.analyse.runtime import Model
from node.analyse.types import AnalysisResult
from node.analyse.volume import load_series
from node.encode import encode_results, write_datasets
from tests.encode_fixtures import lung_card, make_result, write_phantom
from tests.helpers import card_text, threshold_model
from tests.tools import validator_errors

pytestmark = pytest.mark.interop


def _assert_valid(paths: list[Path]) -> None:
    for path in paths:
        errors = validator_errors(path)
        assert not errors, f"{path.name}:\n" + "\n".join(errors)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    card: ModelCard = lung_card()
    card = card.model_copy(update={"outputs": Outputs(seg=True, sr=True, sc=True)})
    result: AnalysisResult = make_result(write_phantom(tmp_path_factory.mktemp("ct"), count=4), count=4)
    datasets: list[Dataset] = encode_results(result, card)
    return write_datasets(datasets, tmp_path_factory.mktemp("results"))


@pytest.mark.parametrize("modality", ["SEG", "SR", "OT"])
def test_phantom_result_passes_both_validators(modality: str, written: list[Path]) -> None:
    files = [p for p in written if p.name.startswith(f"{modality}_")]
    assert files, f"no {modality} object was written"
    _assert_valid(files)


def test_sr_without_findings_or_seg_passes_both_validators(tmp_path: Path) -> None:
    volume = write_phantom(tmp_path / "ct", nodules=False)
    result = make_result(volume, nodules=False)
    card = lung_card().model_copy(update={"outputs": Outputs(seg=False, sr=True, sc=False)})
    _assert_valid(write_datasets(encode_results(result, card), tmp_path / "out"))


def _real_series(name: str, folder: Path, slices: int) -> Path:
    """``slices`` copies of one pydicom test file as a series: new UIDs, stacked along the slice normal
    by its own thickness. The headers (scanner, geometry, private tags) stay the real file's."""
    source = dcmread(get_testdata_file(name, download=False))
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    step = float(source.get("SpacingBetweenSlices", 0) or source.get("SliceThickness", 1) or 1)
    orientation = np.asarray(source.ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    folder.mkdir(parents=True)
    for k in range(slices):
        ds = copy.deepcopy(source)  # Dataset.copy() is shallow: it would move the source too
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        position = np.asarray(source.ImagePositionPatient, dtype=float) + k * step * normal
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.SliceLocation = round(float(source.get("SliceLocation", 0) or 0) + k * step, 4)
        ds.save_as(folder / f"{k:03d}.dcm", enforce_file_format=True)
    return folder


@pytest.mark.parametrize(
    ("name", "modality", "window"), [("CT_small.dcm", "CT", "0.0"), ("MR_small.dcm", "MR", "1000.0")]
)
def test_results_on_real_pydicom_files_pass_both_validators(
    name: str, modality: str, window: str, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    sha = threshold_model(model_dir / "model.onnx")
    text = card_text(sha).replace('modality = ["CT"]', f'modality = ["{modality}"]')
    text = text.replace("window = { center = 0.0,", f"window = {{ center = {window},")
    (model_dir / "model.toml").write_text(text)
    card = load_card(model_dir)
    volume = load_series(_real_series(name, tmp_path / "series", 4))
    result = analyse(volume, Model(card, threads=1))
    datasets = encode_results(result, card)
    assert [d.Modality for d in datasets] == ["SEG", "SR"], "the threshold model found nothing to segment"
    _assert_valid(write_datasets(datasets, tmp_path / "out"))
    shutil.rmtree(tmp_path / "series")
