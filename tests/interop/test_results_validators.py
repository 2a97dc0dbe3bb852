"""Every result object the node writes must pass dicom3tools' ``dciodvfy`` without errors.

``dciodvfy`` exits 0 even when it reports errors, so its output is read: any line starting with
"Error" fails the test, and the assertion message shows all of them.

Warnings known and accepted (see ``node/encode``): dicom3tools 2022 does not yet know Device UID in
the Contributing Equipment Sequence (IHE AI Results needs it), nor the private coding scheme of the
suggested priority ("99PACSNODE", declared in the Coding Scheme Identification Sequence).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import Dataset

from node.analyse.card import ModelCard, Outputs
from node.analyse.types import AnalysisResult
from node.encode import encode_results, write_datasets
from tests.encode_fixtures import lung_card, make_result, write_phantom

pytestmark = pytest.mark.interop


def _dciodvfy() -> str:
    path = shutil.which("dciodvfy")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("dciodvfy (dicom3tools) is required in CI but is not installed")
        pytest.skip("dciodvfy (dicom3tools) is not installed; apt-get install dicom3tools")
    return path


def _errors(tool: str, path: Path) -> tuple[list[str], str]:
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120, check=False)
    output = run.stdout + run.stderr
    return [line for line in output.splitlines() if line.startswith("Error")], output


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    card: ModelCard = lung_card()
    card = card.model_copy(update={"outputs": Outputs(seg=True, sr=True, sc=True)})
    result: AnalysisResult = make_result(write_phantom(tmp_path_factory.mktemp("ct")))
    datasets: list[Dataset] = encode_results(result, card)
    return write_datasets(datasets, tmp_path_factory.mktemp("results"))


@pytest.mark.parametrize("modality", ["SEG", "SR", "OT"])
def test_result_passes_dciodvfy(modality: str, written: list[Path]) -> None:
    tool = _dciodvfy()
    files = [p for p in written if p.name.startswith(f"{modality}_")]
    assert files, f"no {modality} object was written"
    for path in files:
        errors, output = _errors(tool, path)
        assert not errors, f"dciodvfy reports errors for {path.name}:\n" + "\n".join(errors) + f"\n---\n{output}"


def test_sr_without_findings_or_seg_passes_dciodvfy(tmp_path: Path) -> None:
    tool = _dciodvfy()
    volume = write_phantom(tmp_path / "ct", nodules=False)
    result = make_result(volume, nodules=False)
    card = lung_card().model_copy(update={"outputs": Outputs(seg=False, sr=True, sc=False)})
    (path,) = write_datasets(encode_results(result, card), tmp_path / "out")
    errors, output = _errors(tool, path)
    assert not errors, f"dciodvfy reports errors for {path.name}:\n" + "\n".join(errors) + f"\n---\n{output}"
