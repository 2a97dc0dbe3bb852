"""A float32 block that a worker reuses for the volumes it loads one after another.

A 300-slice CT is 315 MB of float32. Fresh memory of that size costs the kernel a page fault per page
(or, with numpy's transparent-huge-page advice and the usual ``defrag = madvise``, a compaction): 0.15 to
0.25 s of a 0.75 s load on the 2-core test machine (bench/analyse.py), paid again for every study. A
worker analyses one series at a time, so the next volume can go where the last one was.

The contract is the caller's: a volume loaded into the buffer is valid until the next load into it.
The worker's study loop uses a volume only until its results are written, then loads the next series.
Volumes above ``max_bytes`` get memory of their own (freed with them), so the buffer never pins more than
that in an idle worker.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: about a 1000-slice 512 x 512 series


class VoxelBuffer:
    """Hands out float32 arrays of a requested shape from one block that grows as needed."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._block: NDArray[np.float32] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held between loads."""
        return 0 if self._block is None else int(self._block.nbytes)

    def take(self, shape: tuple[int, ...]) -> NDArray[np.float32]:
        """An uninitialised array of ``shape``; it overwrites what the previous ``take`` returned."""
        count = math.prod(shape)
        if count * 4 > self.max_bytes:
            return np.empty(shape, np.float32)
        if self._block is None or self._block.size < count:
            self._block = None  # let the old block go before the larger one is allocated
            self._block = np.empty(count, np.float32)
        return self._block[:count].reshape(shape)
