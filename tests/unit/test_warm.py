"""Process set-up for analysis: the warm-up series, the garbage collector, highdicom's memoised lookup."""

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import highdicom.base
import highdicom.sr.content
import pytest
from highdicom import _standard_utils

from node.analyse.card import find_card, load_card
from node.analyse.runtime import Model
from node.encode import iod_lookup
from node.worker.warm import tune_process, warm_up
from tests.helpers import card_text, threshold_model

CT = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture
def process_state() -> Iterator[None]:
    threshold, threads = gc.get_threshold(), cv2.getNumThreads()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    cv2.setNumThreads(threads)


def test_tune_process_raises_the_young_threshold_freezes_start_up_objects_and_stops_opencv_threads(
    process_state: None,
) -> None:
    before = gc.get_threshold()
    tune_process(12_345)
    assert gc.get_threshold() == (12_345, before[1], before[2])
    assert gc.get_freeze_count() > 0
    assert cv2.getNumThreads() == 1


def test_warm_up_runs_the_real_model_and_leaves_no_timings() -> None:
    model = Model(find_card("lung-nodule-ct"), threads=1)
    seconds = warm_up([model], slices=12)
    assert seconds > 0
    assert not model.timings


def test_a_model_that_cannot_run_the_phantom_is_logged_and_left_cold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The card says softmax over three channels, the network gives two: every series fails. Start goes on.
    sha = threshold_model(tmp_path / "model.onnx", 2, "sigmoid")
    (tmp_path / "model.toml").write_text(card_text(sha))
    model = Model(load_card(tmp_path), threads=1)
    with caplog.at_level(logging.WARNING, logger="node.worker.warm"):
        warm_up([model], slices=12)
    assert "warm-up of model" in caplog.text and "starts cold" in caplog.text
    assert not model.timings


def test_memoised_iod_lookup_gives_highdicoms_answers() -> None:
    assert iod_lookup.install()
    lookup = _standard_utils.is_attribute_in_iod
    original = lookup.__wrapped__  # type: ignore[attr-defined]
    cases = [
        ("NumberOfFrames", CT, None),
        ("NumberOfFrames", ENHANCED_CT, None),
        ("NumberOfFrames", SEG, None),
        ("PixelData", CT, ["IconImageSequence"]),
        ("FloatPixelData", CT, ["IconImageSequence"]),
    ]
    for attribute, sop_class, exclude in cases:
        assert lookup(attribute, sop_class, exclude) == original(attribute, sop_class, exclude)
        assert lookup(attribute, sop_class, exclude) == original(attribute, sop_class, exclude)  # from the cache
    assert _standard_utils.is_multiframe_image(_dataset(ENHANCED_CT)) is True
    assert _standard_utils.is_multiframe_image(_dataset(CT)) is False
    assert lookup.cache_info().hits >= len(cases)  # type: ignore[attr-defined]
    # Bound by name at import in highdicom.base (every object's Content Date/Time) and highdicom.sr.content.
    assert highdicom.base.is_attribute_in_iod is lookup and highdicom.sr.content.is_attribute_in_iod is lookup
    with pytest.raises(KeyError, match="No IOD found"):
        lookup("NumberOfFrames", "1.2.3.4")


def _dataset(sop_class: str):  # type: ignore[no-untyped-def]
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SOPClassUID = sop_class
    return ds
