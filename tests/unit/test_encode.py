"""Encode stage: SEG and SR round trips through bytes, codes, references, provenance, files on disk."""

from __future__ import annotations

import dataclasses
from io import BytesIO
from pathlib import Path
from typing import cast

import highdicom as hd
import numpy as np
import pytest
from pydicom import Dataset, dcmread, dcmwrite

from node.analyse.card import ModelCard, Outputs
from node.analyse.types import AnalysisResult, Priority, Volume
from node.analyse.volume import load_series
from node.encode import encode_results, write_datasets
from node.encode.provenance import PROCESSING_ALGORITHM, device_uid
from node.encode.sc import build_sc, key_slices
from node.encode.seg import build_seg, segment_label_map, segment_layout
from node.encode.sources import TYPE2_COPIED
from node.encode.sr import ABSENT, PRESENT, PRIORITY_CONCEPT, PRIORITY_SCHEME, QUALITATIVE_EVALUATIONS, build_sr
from node.errors import EncodeError
from tests.encode_fixtures import LUNG, NODULE, lung_card, make_result, write_phantom
from tests.tools import validator_errors


def _roundtrip(ds: Dataset) -> Dataset:
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def _code(item: Dataset) -> tuple[str, str]:
    return (str(item.CodingSchemeDesignator), str(item.CodeValue))


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Volume:
    return write_phantom(tmp_path_factory.mktemp("ct"))


@pytest.fixture(scope="module")
def result(volume: Volume) -> AnalysisResult:
    return make_result(volume)


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return lung_card()


@pytest.fixture(scope="module")
def seg(result: AnalysisResult, card: ModelCard) -> hd.seg.Segmentation:
    return hd.seg.Segmentation.from_dataset(_roundtrip(build_seg(result, card)))


@pytest.fixture(scope="module")
def sr_pair(result: AnalysisResult, card: ModelCard) -> tuple[Dataset, hd.sr.Comprehensive3DSR]:
    seg = build_seg(result, card)
    return seg, _read_sr(build_sr(result, card, seg))


def _bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _read_sr(ds: Dataset) -> hd.sr.Comprehensive3DSR:
    sr = hd.sr.srread(BytesIO(_bytes(ds)))
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    return sr


def _report(sr: hd.sr.Comprehensive3DSR) -> hd.sr.MeasurementReport:
    # highdicom types ``content`` as a plain ContentSequence; for a TID 1500 document it is the report.
    return cast(hd.sr.MeasurementReport, sr.content)


def _groups(sr: hd.sr.Comprehensive3DSR) -> list[Dataset]:
    root = sr.ContentSequence
    imaging = next(i for i in root if i.ConceptNameCodeSequence[0].CodeValue == "126010")
    return list(imaging.ContentSequence)


def _evaluations(sr: hd.sr.Comprehensive3DSR) -> list[Dataset]:
    """The items of TID 1500's Qualitative Evaluations container."""
    (container,) = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    return list(container.ContentSequence)


def _items(group: Dataset, scheme: str, value: str) -> list[Dataset]:
    return [i for i in group.ContentSequence if _code(i.ConceptNameCodeSequence[0]) == (scheme, value)]


# SEG ----------------------------------------------------------------------------------------------


def test_seg_has_a_segment_per_organ_label_and_per_finding(
    seg: hd.seg.Segmentation, card: ModelCard, result: AnalysisResult
) -> None:
    assert seg.SegmentationType == "BINARY"
    lung, nodule = card.label(LUNG), card.label(NODULE)
    expected = [(lung, "Lung")] + [(nodule, f"Nodule {f.number}") for f in result.findings]
    assert len(seg.SegmentSequence) == len(expected) == 3
    for number, (item, (label, name)) in enumerate(zip(seg.SegmentSequence, expected, strict=True), start=1):
        assert item.SegmentNumber == number
        assert item.SegmentLabel == name
        assert _code(item.SegmentedPropertyCategoryCodeSequence[0]) == (label.category.scheme, label.category.value)
        assert _code(item.SegmentedPropertyTypeCodeSequence[0]) == (label.type.scheme, label.type.value)
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (card.model.name, card.model.version)
        rgb = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
        assert np.allclose(rgb, label.colour, atol=2)
        # Findings carry a tracking identity (shared with their SR group); the organ does not.
        assert ("TrackingUID" in item) == label.findings
    uids = [item.TrackingUID for item in seg.SegmentSequence[1:]]
    assert len(set(uids)) == 2


def test_seg_frame_anatomy_states_the_card_region_and_laterality(seg: hd.seg.Segmentation, card: ModelCard) -> None:
    anatomy = seg.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0]
    assert card.anatomy is not None
    assert anatomy.FrameLaterality == card.anatomy.laterality
    assert _code(anatomy.AnatomicRegionSequence[0]) == (card.anatomy.region.scheme, card.anatomy.region.value)


def _segment_map(result: AnalysisResult) -> np.ndarray:
    """What the SEG should hold: 1 where lung, 1 + n inside finding n."""
    expected = np.where(result.labels == LUNG, 1, 0).astype(np.uint8)
    for finding in result.findings:
        assert finding.box is not None and finding.mask is not None
        expected[finding.box][finding.mask] = 1 + finding.number
    return expected


def test_seg_pixels_equal_the_segment_map_on_non_empty_slices(seg: hd.seg.Segmentation, result: AnalysisResult) -> None:
    expected = _segment_map(result)
    non_empty = np.flatnonzero(expected.reshape(expected.shape[0], -1).any(axis=1))
    # Frames only for slices where a segment is present: empty frames are omitted.
    for number in range(1, 4):
        slices = np.flatnonzero((expected == number).reshape(expected.shape[0], -1).any(axis=1))
        frames = [
            f
            for f in seg.PerFrameFunctionalGroupsSequence
            if f.SegmentIdentificationSequence[0].ReferencedSegmentNumber == number
        ]
        assert len(frames) == len(slices) > 0
    uids = [str(h.SOPInstanceUID) for h in result.volume.headers]
    got = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[uids[k] for k in non_empty],
        combine_segments=True,
        skip_overlap_checks=True,
    )
    assert np.array_equal(got, expected[non_empty])


def test_seg_is_a_new_series_in_the_source_study_and_frame(seg: hd.seg.Segmentation, result: AnalysisResult) -> None:
    volume = result.volume
    assert seg.StudyInstanceUID == volume.study_instance_uid
    assert seg.FrameOfReferenceUID == volume.frame_of_reference_uid
    assert seg.SeriesInstanceUID != volume.series_instance_uid
    assert seg.SeriesNumber == 901 and seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.series_instance_uid


def test_seg_without_findings_has_the_organ_segment_only(volume: Volume, card: ModelCard, tmp_path: Path) -> None:
    no_nodules = make_result(write_phantom(tmp_path, nodules=False), nodules=False)
    seg = hd.seg.Segmentation.from_dataset(_roundtrip(build_seg(no_nodules, card)))
    assert [(s.SegmentNumber, s.SegmentLabel) for s in seg.SegmentSequence] == [(1, "Lung")]


def test_sr_references_a_seg_with_the_organ_segment_only(volume: Volume, card: ModelCard, tmp_path: Path) -> None:
    """One segment: highdicom states it in the shared functional groups, not per frame."""
    no_nodules = make_result(write_phantom(tmp_path, nodules=False), nodules=False)
    seg = build_seg(no_nodules, card)
    sr = _read_sr(build_sr(no_nodules, card, seg))
    assert _report(sr).get_volumetric_roi_measurement_groups() == []
    paths = write_datasets([seg, sr], tmp_path / "out")
    assert [validator_errors(path) for path in paths] == [[], []]


def test_seg_keeps_an_absent_organ_label_as_a_segment_without_frames(result: AnalysisResult, card: ModelCard) -> None:
    no_lung = dataclasses.replace(result, labels=np.where(result.labels == LUNG, 0, result.labels).astype(np.uint8))
    seg = hd.seg.Segmentation.from_dataset(_roundtrip(build_seg(no_lung, card)))
    assert [s.SegmentNumber for s in seg.SegmentSequence] == [1, 2, 3]
    numbers = {f.SegmentIdentificationSequence[0].ReferencedSegmentNumber for f in seg.PerFrameFunctionalGroupsSequence}
    assert numbers == {2, 3}


def test_seg_refuses_an_empty_label_map_and_unknown_values(result: AnalysisResult, card: ModelCard) -> None:
    empty = AnalysisResult(result.volume, np.zeros_like(result.labels), (), Priority.ROUTINE, "")
    with pytest.raises(EncodeError, match="nothing to segment"):
        build_seg(empty, card)
    with pytest.raises(EncodeError, match=r"values \[7\]"):
        segment_label_map(np.full((2, 2, 2), 7, dtype=np.uint8), card, segment_layout(card, ()))


def test_seg_refuses_slices_of_one_multi_frame_source(result: AnalysisResult, card: ModelCard) -> None:
    volume = result.volume
    shared = dataclasses.replace(volume, headers=(volume.headers[0],) * volume.shape[0])
    with pytest.raises(EncodeError, match="multi-frame"):
        build_seg(dataclasses.replace(result, volume=shared), card)


def test_segment_layout_puts_organs_first_then_findings_by_number(card: ModelCard, result: AnalysisResult) -> None:
    data = card.model_dump()
    # Nodules first in the card and with a lower index: the organ still gets segment 1.
    data["labels"] = [data["labels"][1], data["labels"][0]]
    data["labels"][0]["index"], data["labels"][1]["index"] = 3, 5
    shuffled = ModelCard.model_validate(data)
    findings = [dataclasses.replace(f, label=3) for f in reversed(result.findings)]
    layout = segment_layout(shuffled, findings)
    assert [(s.number, s.name) for s in layout] == [(1, "Lung"), (2, "Nodule 1"), (3, "Nodule 2")]
    assert layout[0].tracking_uid is None and layout[1].tracking_uid != layout[2].tracking_uid
    labels = np.zeros(result.volume.shape, np.uint8)
    labels[0, 0, 0] = 5
    for f in findings:
        assert f.box is not None and f.mask is not None
        labels[f.box][f.mask] = 3
    pixels = segment_label_map(labels, shuffled, layout)
    assert pixels[0, 0, 0] == 1
    for f in findings:
        assert f.box is not None and f.mask is not None
        assert (pixels[f.box][f.mask] == 1 + f.number).all()


# SR -----------------------------------------------------------------------------------------------


def test_sr_has_one_volumetric_group_per_finding_with_values_and_units(
    sr_pair: tuple[Dataset, hd.sr.Comprehensive3DSR], result: AnalysisResult
) -> None:
    _, sr = sr_pair
    groups = _report(sr).get_volumetric_roi_measurement_groups()
    assert len(groups) == len(result.findings)
    for group, finding in zip(groups, result.findings, strict=True):
        assert group.finding_type is not None and group.finding_type.value == "27925004"
        by_name = {m.name.value: m for m in group.get_measurements()}
        assert by_name["118565006"].value == pytest.approx(finding.volume_mm3, abs=0.01)
        assert by_name["118565006"].unit.value == "mm3"
        assert by_name["103339001"].value == pytest.approx(finding.longest_axial_diameter_mm, abs=0.01)
        assert by_name["103339001"].unit.value == "mm"
        assert by_name["112031"].value == pytest.approx(finding.mean_value, abs=0.1)
        assert by_name["112031"].unit.value == "[hnsf'U]"


def test_sr_findings_reference_their_own_seg_segment_and_slices(
    sr_pair: tuple[Dataset, hd.sr.Comprehensive3DSR], result: AnalysisResult
) -> None:
    seg, sr = sr_pair
    segments = {int(item.SegmentNumber): item for item in seg.SegmentSequence}
    uids = [str(h.SOPInstanceUID) for h in result.volume.headers]
    groups = _report(sr).get_volumetric_roi_measurement_groups()
    for group, finding in zip(groups, result.findings, strict=True):
        ref = group.referenced_segment
        assert ref is not None
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        (number,) = ref.referenced_segment_numbers
        assert segments[number].SegmentLabel == f"Nodule {finding.number}"
        # The group and its segment share one tracking identity.
        assert group.tracking_uid == segments[number].TrackingUID
        assert group.tracking_identifier == f"Nodule {finding.number}"
        sources = {s.referenced_sop_instance_uid for s in ref.source_images_for_segmentation}
        assert sources == {uids[k] for k in finding.slice_indices}


def test_sr_reports_presence_per_label_and_the_priority_outside_the_measurement_groups(
    sr_pair: tuple[Dataset, hd.sr.Comprehensive3DSR], result: AnalysisResult, card: ModelCard
) -> None:
    _, sr = sr_pair
    assert QUALITATIVE_EVALUATIONS.value == "C0034375"
    items = _evaluations(sr)
    presence = {
        _code(i.ConceptNameCodeSequence[0]): _code(i.ConceptCodeSequence[0]) for i in items if i.ValueType == "CODE"
    }
    for label in card.labels:
        assert presence[(label.type.scheme, label.type.value)] == ("SCT", PRESENT.value)
    priority = presence[(PRIORITY_CONCEPT.scheme_designator, PRIORITY_CONCEPT.value)]
    assert priority == (PRIORITY_SCHEME, result.priority.value)
    comments = [i.TextValue for i in items if i.ValueType == "TEXT"]
    assert comments == [result.priority_reason]
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == PRIORITY_SCHEME
    # Every measurement group has a region: presence and priority are not among them.
    assert len(_groups(sr)) == len(result.findings)


def test_sr_device_observer_and_evidence(
    sr_pair: tuple[Dataset, hd.sr.Comprehensive3DSR], result: AnalysisResult, card: ModelCard
) -> None:
    seg, sr = sr_pair
    observers = _report(sr).get_observer_contexts(observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"))
    attributes = observers[0].observer_identifying_attributes
    assert isinstance(attributes, hd.sr.DeviceObserverIdentifyingAttributes)
    assert attributes.uid == device_uid(card)
    assert attributes.name == card.model.name
    assert sr.StudyInstanceUID == result.volume.study_instance_uid
    assert sr.SeriesInstanceUID not in (result.volume.series_instance_uid, seg.SeriesInstanceUID)
    evidence = {
        s.SeriesInstanceUID: s for s in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    }
    assert set(evidence) == {result.volume.series_instance_uid, seg.SeriesInstanceUID}
    assert len(evidence[result.volume.series_instance_uid].ReferencedSOPSequence) == result.volume.shape[0]


def test_sr_without_seg_and_without_findings_reports_absence(result: AnalysisResult, card: ModelCard) -> None:
    empty = AnalysisResult(result.volume, np.zeros_like(result.labels), (), Priority.ROUTINE, "no finding")
    sr = _read_sr(build_sr(empty, card, None))
    values = {
        _code(i.ConceptCodeSequence[0])
        for i in _evaluations(sr)
        if _code(i.ConceptNameCodeSequence[0]) in {(label.type.scheme, label.type.value) for label in card.labels}
    }
    assert values == {("SCT", ABSENT.value)}
    # No measurement group at all: TID 1500 then has only its Qualitative Evaluations container.
    assert [i.ConceptNameCodeSequence[0].CodeValue for i in sr.ContentSequence if i.ValueType == "CONTAINER"] == [
        "C0034375"
    ]


def test_sr_without_seg_keeps_findings_with_source_images(result: AnalysisResult, card: ModelCard) -> None:
    sr = _read_sr(build_sr(result, card, None))
    groups = [g for g in _groups(sr) if _items(g, "SCT", "118565006")]
    assert len(groups) == len(result.findings)
    assert all(_items(g, "DCM", "121112") or _items(g, "SCT", "260753009") for g in groups)


def test_sr_refuses_a_seg_of_another_card(result: AnalysisResult, card: ModelCard) -> None:
    seg = build_seg(result, card)
    seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue = "108369006"
    with pytest.raises(EncodeError, match="Nodule"):
        build_sr(result, card, seg)


# Provenance ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["SEG", "SR"])
def test_contributing_equipment_names_the_algorithm(
    modality: str, sr_pair: tuple[Dataset, hd.sr.Comprehensive3DSR], card: ModelCard
) -> None:
    seg, sr = sr_pair
    ds = _roundtrip(seg if modality == "SEG" else sr)
    items = [
        item
        for item in ds.ContributingEquipmentSequence
        if _code(item.PurposeOfReferenceCodeSequence[0]) == ("99IHE", PROCESSING_ALGORITHM.value)
    ]
    assert len(items) == 1
    item = items[0]
    assert item.DeviceUID == device_uid(card)
    assert item.ManufacturerModelName == card.model.name
    assert item.SoftwareVersions == card.model.version
    assert item.Manufacturer == card.model.manufacturer
    assert "ContributionDateTime" in item and item.ContributionDescription


def test_device_uid_is_stable_and_changes_with_the_model(card: ModelCard) -> None:
    assert device_uid(card) == device_uid(lung_card())
    changed = card.model_copy(update={"model": card.model.model_copy(update={"sha256": "1" * 64})})
    assert device_uid(changed) != device_uid(card)
    assert device_uid(card).startswith("2.25.") and len(device_uid(card)) <= 64


# SC and the stage API -----------------------------------------------------------------------------


def test_sc_overlay_per_key_slice(result: AnalysisResult, card: ModelCard) -> None:
    images = [_roundtrip(ds) for ds in build_sc(result, card)]
    assert len(images) == len(key_slices(result)) == 2
    for image, k in zip(images, key_slices(result), strict=True):
        assert image.PhotometricInterpretation == "RGB" and image.SamplesPerPixel == 3
        assert image.SourceImageSequence[0].ReferencedSOPInstanceUID == result.volume.headers[k].SOPInstanceUID
        pixels = image.pixel_array
        # The nodule's colour dominates somewhere on its slice.
        assert pixels.shape == (*result.volume.shape[1:], 3)
        assert (pixels[..., 0].astype(int) - pixels[..., 1] > 60).any()


def test_encode_results_honours_outputs_and_writes_whole_files(
    result: AnalysisResult, card: ModelCard, tmp_path: Path
) -> None:
    assert [d.Modality for d in encode_results(result, card)] == ["SEG", "SR"]
    only_sr = card.model_copy(update={"outputs": Outputs(seg=False, sr=True, sc=False)})
    assert [d.Modality for d in encode_results(result, only_sr)] == ["SR"]
    everything = card.model_copy(update={"outputs": Outputs(seg=True, sr=True, sc=True)})
    datasets = encode_results(result, everything)
    assert [d.Modality for d in datasets] == ["SEG", "SR", "OT", "OT"]
    paths = write_datasets(datasets, tmp_path / "out")
    assert [p.name for p in paths] == [f"{d.Modality}_{d.SOPInstanceUID}.dcm" for d in datasets]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)
    assert dcmread(paths[1]).SOPInstanceUID == datasets[1].SOPInstanceUID


def test_encode_results_skips_the_seg_when_nothing_is_present(result: AnalysisResult, card: ModelCard) -> None:
    empty = AnalysisResult(result.volume, np.zeros_like(result.labels), (), Priority.ROUTINE, "")
    assert [d.Modality for d in encode_results(empty, card)] == ["SR"]


def test_results_from_a_source_without_type2_attributes_are_valid(tmp_path: Path, card: ModelCard) -> None:
    """Omitted Type 2 attributes (birth date, accession number, slice thickness...) cannot stop the results."""
    source = tmp_path / "ct"
    write_phantom(source)
    for path in source.iterdir():
        ds = dcmread(path)
        for keyword in (*TYPE2_COPIED, "SliceThickness"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(path)
    volume = load_series(source)
    assert "PatientBirthDate" not in volume.headers[0] and "SliceThickness" not in volume.headers[0]
    datasets = encode_results(make_result(volume), card)
    assert [d.Modality for d in datasets] == ["SEG", "SR"]
    for ds in datasets:
        assert ds.PatientBirthDate == "" and ds.AccessionNumber == ""  # present and empty, as Type 2 allows
    seg = datasets[0]
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(volume.spacing[0])
    for path in write_datasets(datasets, tmp_path / "out"):
        assert validator_errors(path) == []


def test_four_nodules_give_four_segments_and_four_groups_each_on_its_own_segment(
    tmp_path: Path, card: ModelCard
) -> None:
    four = make_result(write_phantom(tmp_path, count=4), count=4)
    assert len(four.findings) == 4
    seg_ds = build_seg(four, card)
    seg = hd.seg.Segmentation.from_dataset(_roundtrip(seg_ds))
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    nodule_type = (card.label(NODULE).type.scheme, card.label(NODULE).type.value)
    nodules = {
        number for number in labels if _code(seg.get_segment_description(number).segmented_property_type) == nodule_type
    }
    assert len(nodules) == 4 and len(labels) == 5
    assert labels[1] == "Lung"
    sr = _read_sr(build_sr(four, card, seg_ds))
    groups = _report(sr).get_volumetric_roi_measurement_groups()
    assert len(groups) == 4
    referenced = []
    for group in groups:
        assert group.referenced_segment is not None
        assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        (number,) = group.referenced_segment.referenced_segment_numbers
        assert number in nodules
        assert group.tracking_uid == seg.get_segment_description(number).tracking_uid
        referenced.append(number)
    assert sorted(referenced) == sorted(nodules)
