"""Small builders shared by tests: volumes straight from arrays, tiny ONNX models made with onnx.helper."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from node.analyse.types import Volume


def volume_from_array(
    values: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), modality: str = "CT"
) -> Volume:
    """An axial volume (slice 0 at z = 0) with no headers: enough for analysis, not for encoding."""
    z = np.arange(values.shape[0]) * spacing[0]
    positions = np.column_stack([np.zeros_like(z), np.zeros_like(z), z]).astype(np.float64)
    return Volume(
        voxels=values.astype(np.float32),
        spacing=spacing,
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        positions=positions,
        headers=(),
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        frame_of_reference_uid="1.2.3.5",
        modality=modality,
        slice_thickness=spacing[0],
    )


def threshold_model(path: Path, dims: int = 2, activation: str = "softmax", channels_in: int = 1) -> str:
    """A 1x1 convolution that calls dark pixels label 1 and bright pixels label 2; returns its sha256.

    On a [0, 1] windowed input: label 1 where x < 0.3, label 2 where x > 0.7 (softmax: three channels,
    background first; sigmoid: two channels, one per label).
    """
    if activation == "softmax":
        weights = np.array([0.0, -40.0, 40.0], np.float32)
        bias = np.array([0.0, 12.0, -28.0], np.float32)
    else:
        weights = np.array([-40.0, 40.0], np.float32)
        bias = np.array([12.0, -28.0], np.float32)
    channels = len(weights)
    # Only the centre input channel counts: context channels (2.5-D) are read but weigh nothing.
    kernel = np.zeros((channels, channels_in) + (1,) * dims, np.float32)
    kernel[:, channels_in // 2] = weights.reshape((channels,) + (1,) * dims)
    spatial = ["d", "h", "w"][-dims:] if dims == 3 else ["h", "w"]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "W", "B"], ["logits"])],
        "threshold",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", channels_in, *spatial])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", channels, *spatial])],
        [numpy_helper.from_array(kernel, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def card_text(
    sha256: str,
    *,
    kind: str = "2d",
    activation: str = "softmax",
    size: str = "[64, 64]",
    spacing: str = "[1.0, 1.0]",
    extra: str = "",
    context: str = "0",
) -> str:
    """A complete card for :func:`threshold_model`: labels Dark (1) and Bright (2, reported as findings)."""
    return f"""
[model]
name = "threshold-test"
version = "1.0"
description = "test model"
manufacturer = "tests"
intended_use = "tests only"
sha256 = "{sha256}"

[accepts]
modality = ["CT"]
min_slices = 1

[input]
kind = "{kind}"
size = {size}
spacing_mm = {spacing}
window = {{ center = 0.0, width = 1000.0 }}
overlap = 0.5
context_slices = {context}

[output]
activation = "{activation}"

[[labels]]
index = 1
name = "Dark"
category = {{ scheme = "SCT", value = "123037004", meaning = "Anatomical Structure" }}
type = {{ scheme = "SCT", value = "39607008", meaning = "Lung" }}

[[labels]]
index = 2
name = "Bright"
category = {{ scheme = "SCT", value = "49755003", meaning = "Morphologically Abnormal Structure" }}
type = {{ scheme = "SCT", value = "27925004", meaning = "Nodule" }}
findings = true

[anatomy]
region = {{ scheme = "SCT", value = "51185008", meaning = "Thorax" }}

[triage]
rules = [{{ label = "Bright", min_diameter_mm = 6.0, priority = "HIGH" }}]
{extra}
"""


def tiny_ct(study: str, series: str, sop: str, *, index: int = 0, size: int = 16) -> Dataset:
    """A small valid CT Image Storage dataset (no patient data) with its file meta, for network tests."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = study + ".9"
    ds.PatientName = "Phantom^Tiny"
    ds.PatientID = "PHANTOM"
    ds.Modality = "CT"
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(index)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 1.0
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.PixelData = (np.arange(size * size, dtype=np.int16) + index).tobytes()
    return ds


def node_toml(data_dir: Path, port: int, *, peers: str = "", extra: str = "", ae_title: str = "PACSNODE") -> str:
    """A node config for tests: 127.0.0.1:port, no disk floor, a scanner peer STORESCU unless ``peers``."""
    peers = peers or '[[peers]]\nname = "scanner"\nae_title = "STORESCU"\nallow_store = true\n'
    return (
        f'[node]\nae_title = "{ae_title}"\nbind = "127.0.0.1"\nport = {port}\ndata_dir = "{data_dir}"\n'
        f"[limits]\nmin_free_disk_mb = 0\nacse_timeout_s = 5\ndimse_timeout_s = 10\nnetwork_timeout_s = 10\n"
        f"{extra}\n{peers}"
    )


def encode_dataset(ds: Dataset, syntax: str) -> bytes:
    """``ds`` encoded as a C-STORE carries it in transfer syntax ``syntax`` (deflated for Deflated)."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = syntax != ExplicitVRBigEndian
    buffer.is_implicit_VR = syntax == ImplicitVRLittleEndian
    write_dataset(buffer, ds)
    data = buffer.getvalue()
    if syntax == DeflatedExplicitVRLittleEndian:
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = packer.compress(data) + packer.flush()
    return data
