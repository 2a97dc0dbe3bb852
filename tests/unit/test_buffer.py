"""The worker's reused voxel block: same volumes as fresh memory, one block, bounded."""

from pathlib import Path

import numpy as np

from node.analyse.buffer import VoxelBuffer
from node.analyse.volume import load_series
from node.synth.dicom_writer import write_ct_series


def _series(out: Path, slices: int, seed: int) -> np.ndarray:
    hu = np.random.default_rng(seed).integers(-1024, 3000, (slices, 16, 20)).astype(np.int16)
    write_ct_series(hu, out, pixel_spacing=(0.7, 0.8), slice_thickness=2.0, first_position=(0.0, 0.0, -50.0))
    return hu


def test_series_loaded_one_after_another_into_one_buffer_are_exact(tmp_path: Path) -> None:
    buffer = VoxelBuffer()
    big = _series(tmp_path / "big", 6, seed=1)
    small = _series(tmp_path / "small", 4, seed=2)
    first = load_series(tmp_path / "big", buffer=buffer)
    np.testing.assert_array_equal(first.voxels, big.astype(np.float32))
    held = buffer.nbytes
    second = load_series(tmp_path / "small", buffer=buffer)
    np.testing.assert_array_equal(second.voxels, small.astype(np.float32))
    # The second volume went where the first was: no new memory, and the first is overwritten (the
    # contract: a volume is valid until the next load into the same buffer).
    assert buffer.nbytes == held and np.shares_memory(first.voxels, second.voxels)
    np.testing.assert_array_equal(load_series(tmp_path / "big").voxels, big.astype(np.float32))


def test_the_block_grows_for_a_larger_volume_and_never_holds_more_than_its_limit() -> None:
    buffer = VoxelBuffer(max_bytes=4 * 1000)
    a = buffer.take((2, 10, 10))
    assert a.shape == (2, 10, 10) and a.dtype == np.float32 and buffer.nbytes == 800
    b = buffer.take((5, 10, 10))
    assert buffer.nbytes == 2000 and not np.shares_memory(a, b)
    c = buffer.take((3, 10, 10))
    assert np.shares_memory(b, c) and buffer.nbytes == 2000
    d = buffer.take((20, 10, 10))  # 8000 bytes: above the limit, memory of its own
    assert d.shape == (20, 10, 10) and not np.shares_memory(c, d) and buffer.nbytes == 2000
