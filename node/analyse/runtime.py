"""ONNX Runtime inference over a volume, generic over 2-D and 3-D models described by a card.

One :class:`Model` holds one inference session (one per worker process, DESIGN §3). ``segment`` turns a
:class:`Volume` into a label volume on the source grid without ever holding full-resolution class
probabilities for the whole volume: 2-D models are run batch by batch and each slice is reduced to labels
at once; 3-D models accumulate blended probabilities on the (smaller) model grid only.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from node.analyse.card import InputSpec, ModelCard, verify_checksum
from node.analyse.preprocess import Plan2D, apply_window, enhance, labels_from_model, plan_2d, to_model
from node.analyse.types import Volume
from node.errors import ModelError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class Model:
    """A verified card and its ONNX Runtime session (CPU provider, thread counts from the caller)."""

    def __init__(self, card: ModelCard, threads: int = 0, verify: bool = True) -> None:
        if verify:
            verify_checksum(card)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0 = ONNX Runtime's choice (all cores)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Without this, ONNX Runtime's threads spin for a while after each run, on the cores that the
        # OpenCV work between batches needs: label decision 0.45 -> 0.3 s a 300-slice series, inference
        # itself no slower (bench/analyse.py, 2 cores). A server process should not spin anyway.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            # Name the CPU provider: the default list may include providers that need a network.
            self.session = ort.InferenceSession(
                str(card.onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for a bad file
            raise ModelError(f"{card.onnx_path}: ONNX Runtime cannot load the model: {exc}") from exc
        self.card = card
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelError(f"{card.onnx_path}: expected one input and at least one output")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        shape = inputs[0].shape
        expected = card.input.channels
        if len(shape) > 1 and isinstance(shape[1], int) and shape[1] != expected:
            raise ModelError(
                f"{card.onnx_path}: the network takes {shape[1]} input channels but the card's input spec gives "
                f"{expected} (context_slices = {card.input.context_slices}); fix input.context_slices in the card"
            )
        self.classes = 1 + len(card.labels)
        # Threads for the OpenCV work around inference, which runs while ONNX Runtime is idle.
        self.cores = threads if threads > 0 else (os.cpu_count() or 1)
        self._values = self._label_values()
        # Seconds spent per step, summed over calls: read by the CLI summary and bench/analyse.py.
        self.timings: defaultdict[str, float] = defaultdict(float)

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Raw network output for ``batch`` (N, 1, ...), turned into probabilities per the card."""
        return self.activate(self.infer(batch))

    def infer(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """The network's raw output for ``batch`` (timed as ``inference``)."""
        started = time.perf_counter()
        try:
            raw = self.session.run([self.output_name], {self.input_name: batch})[0]
        except Exception as exc:
            raise ModelError(f"model {self.card.model.name}: inference failed: {exc}") from exc
        self.timings["inference"] += time.perf_counter() - started
        return np.asarray(raw, dtype=np.float32)

    def activate(self, raw: NDArray[np.float32]) -> NDArray[np.float32]:
        """Raw output (N, channels, ...) -> class probabilities (N, labels + 1, ...), background first."""
        if self.card.output.activation == "softmax":
            if raw.shape[1] != self.classes:
                raise ModelError(
                    f"model {self.card.model.name}: {raw.shape[1]} output channels, but the card has "
                    f"{len(self.card.labels)} labels (softmax needs labels + 1 for background)"
                )
            return _softmax(raw)
        if raw.shape[1] != self.classes - 1:
            raise ModelError(f"model {self.card.model.name}: sigmoid output needs one channel per label")
        fg = 1.0 / (1.0 + np.exp(-raw))
        # Background as "no label above one half" so the same argmax serves both activations.
        background = np.full(fg.shape[:1] + (1,) + fg.shape[2:], 0.5, np.float32)
        return np.concatenate([background, fg], axis=1)

    def segment(self, volume: Volume, progress: Progress | None = None) -> NDArray[np.uint8]:
        """Label volume (uint8, source grid, values = card label indices) for ``volume``."""
        return self.segment_with_confidence(volume, progress)[0]

    def segment_with_confidence(
        self, volume: Volume, progress: Progress | None = None
    ) -> tuple[NDArray[np.uint8], dict[int, NDArray[np.uint8]]]:
        """The label volume and, per label that reports findings, its probability on the source grid.

        Probabilities are kept as uint8 (round(255 p), one byte a voxel): enough to state a finding's
        mean and maximum confidence to 0.4 %, a quarter of the memory of float32.
        """
        confidence = {label.index: np.zeros(volume.shape, np.uint8) for label in self.card.labels if label.findings}
        if self.card.input.kind == "2d":
            labels = self._segment_2d(volume, progress, confidence)
        else:
            labels = self._segment_3d(volume, progress, confidence)
        return labels, confidence

    def _label_values(self) -> NDArray[np.uint8]:
        return np.array([0] + [label.index for label in self.card.labels], dtype=np.uint8)

    def _labels(
        self,
        probabilities: NDArray[np.float32],
        plan: Plan2D,
        confidence: dict[int, NDArray[np.uint8]],
        k: int,
    ) -> NDArray[np.uint8]:
        """Labels of slice ``k`` on the source grid: argmax, then each label's threshold if it has one;
        the probabilities of the labels in ``confidence`` go to their slice ``k``."""
        thresholds = [label.threshold for label in self.card.labels]
        # Channel c is the card's label c - 1 (channel 0 is background).
        keep = {
            c: confidence[label.index][k] for c, label in enumerate(self.card.labels, 1) if label.index in confidence
        }
        return labels_from_model(probabilities, plan, self.card.output.resize_back, self._values, thresholds, keep)

    def _segment_2d(
        self, volume: Volume, progress: Progress | None, confidence: dict[int, NDArray[np.uint8]]
    ) -> NDArray[np.uint8]:
        spec = self.card.input
        plan = plan_2d(volume.shape[1:], (volume.spacing[1], volume.spacing[2]), spec)
        out = np.empty(volume.shape, np.uint8)
        total = volume.shape[0]
        # The OpenCV and numpy work around inference runs on a thread per core while ONNX Runtime is
        # idle: both release the GIL (slice preparation 0.35 -> 0.2 s, softmax and label decision 0.45 ->
        # 0.3 s on 300 slices and 2 cores, with ORT not spinning and OpenCV's own threads off, as in a
        # worker). Overlapping it with inference gained nothing: ONNX Runtime keeps every core busy.
        with ThreadPoolExecutor(self.cores) as pool:
            t0 = time.perf_counter()
            # Every slice once on the model grid; context channels interpolate between these.
            prepared = np.stack(list(pool.map(lambda k: to_model(volume.voxels[k], plan, spec), range(total))))
            self.timings["preprocess"] += time.perf_counter() - t0
            # One batch buffer for the whole series: a fresh 10 MB array per batch costs page faults.
            buffer = np.empty((spec.batch_size, spec.channels, *prepared.shape[1:]), np.float32)
            for start in range(0, total, spec.batch_size):
                stop = min(total, start + spec.batch_size)
                t0 = time.perf_counter()
                batch = buffer[: stop - start]

                def stack(n: int, start: int = start, batch: NDArray[np.float32] = batch) -> None:
                    context_stack(prepared, start + n, volume.spacing[0], spec, out=batch[n])

                list(pool.map(stack, range(stop - start)))
                self.timings["preprocess"] += time.perf_counter() - t0
                raw = self.infer(batch)
                t0 = time.perf_counter()

                def decide(n: int, start: int = start, raw: NDArray[np.float32] = raw) -> None:
                    out[start + n] = self._labels(self.activate(raw[n : n + 1])[0], plan, confidence, start + n)

                list(pool.map(decide, range(stop - start)))
                self.timings["resize_back"] += time.perf_counter() - t0
                if progress is not None:
                    progress(stop, total)
        return out

    def _segment_3d(
        self, volume: Volume, progress: Progress | None, confidence: dict[int, NDArray[np.uint8]]
    ) -> NDArray[np.uint8]:
        spec = self.card.input
        patch = tuple(int(s) for s in spec.size)
        plan = plan_2d(volume.shape[1:], (volume.spacing[1], volume.spacing[2]), spec)
        # Resample along z to the card's slice spacing, then each slice in-plane as for 2-D models.
        depth = max(1, round(volume.shape[0] * volume.spacing[0] / spec.spacing_mm[0]))
        src_z = np.linspace(0, volume.shape[0] - 1, depth)
        grid = np.empty((depth, *plan.scaled), np.float32)
        for d, z in enumerate(src_z):
            k0 = int(math.floor(z))
            k1 = min(k0 + 1, volume.shape[0] - 1)
            w = np.float32(z - k0)
            image = volume.voxels[k0] * (1 - w) + volume.voxels[k1] * w
            image = enhance(apply_window(image, spec.window), spec)
            grid[d] = cv2.resize(image, (plan.scaled[1], plan.scaled[0]), interpolation=cv2.INTER_AREA)
        probs = self._sliding_window(grid, patch, progress)
        out = np.empty(volume.shape, np.uint8)
        full = Plan2D(plan.source, plan.scaled, plan.scaled, (0, 0))
        for k in range(volume.shape[0]):
            # Linear interpolation between the two model slices around source slice k.
            z = k * (depth - 1) / max(1, volume.shape[0] - 1)
            d0 = int(math.floor(z))
            d1 = min(d0 + 1, depth - 1)
            w = np.float32(z - d0)
            p = probs[:, d0] * (1 - w) + probs[:, d1] * w
            out[k] = self._labels(p, full, confidence, k)
        return out

    def _sliding_window(
        self, grid: NDArray[np.float32], patch: tuple[int, ...], progress: Progress | None
    ) -> NDArray[np.float32]:
        """Blend overlapping patch predictions with a tent weight that favours patch centres."""
        shape = grid.shape
        padded_shape = tuple(max(s, p) for s, p in zip(shape, patch, strict=True))
        padded = np.zeros(padded_shape, np.float32)
        padded[: shape[0], : shape[1], : shape[2]] = grid
        starts = [_starts(n, p, self.card.input.overlap) for n, p in zip(padded_shape, patch, strict=True)]
        acc = np.zeros((self.classes, *padded_shape), np.float32)
        weight_sum = np.zeros(padded_shape, np.float32)
        tent = _tent(patch)
        positions = [(a, b, c) for a in starts[0] for b in starts[1] for c in starts[2]]
        for n, (a, b, c) in enumerate(positions):
            region = (slice(a, a + patch[0]), slice(b, b + patch[1]), slice(c, c + patch[2]))
            probs = self.run(padded[region][None, None])[0]
            acc[(slice(None), *region)] += probs * tent
            weight_sum[region] += tent
            if progress is not None:
                progress(n + 1, len(positions))
        acc /= np.maximum(weight_sum, 1e-6)
        return acc[:, : shape[0], : shape[1], : shape[2]]


def context_stack(
    slices: NDArray[np.float32],
    k: int,
    slice_spacing: float,
    spec: InputSpec,
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Channels for slice ``k``: the slices at offsets -c..c x context_spacing_mm along the normal.

    Offsets between slices are linearly interpolated; beyond the first or last slice the edge slice
    is repeated (the scan simply ends there). ``out`` (channels, rows, cols), when given, receives them.
    """
    c = spec.context_slices
    channels = np.empty((2 * c + 1, *slices.shape[1:]), np.float32) if out is None else out
    last = slices.shape[0] - 1
    for n in range(-c, c + 1):
        z = min(max(k + n * spec.context_spacing_mm / slice_spacing, 0.0), float(last))
        z0 = math.floor(z)
        z1 = min(z0 + 1, last)
        w = np.float32(z - z0)
        if w:  # one pass, no temporary, and the GIL released (callers run this on threads)
            cv2.addWeighted(slices[z0], float(1 - w), slices[z1], float(w), 0.0, dst=channels[n + c])
        else:
            channels[n + c] = slices[z0]
    return channels


def _softmax(raw: NDArray[np.float32]) -> NDArray[np.float32]:
    """Softmax over axis 1 (in place when ``raw`` is contiguous). Channel by channel: reductions over a
    short middle axis are slow."""
    raw = np.ascontiguousarray(raw)  # the in-place exp below needs a reshape that is a view
    top = raw[:, 0].copy()
    for c in range(1, raw.shape[1]):
        np.maximum(top, raw[:, c], out=top)
    raw -= top[:, None]
    # OpenCV's vectorised exp is about five times faster than NumPy's here; it takes 2-D arrays.
    flat = raw.reshape(-1, raw.shape[-1])
    cv2.exp(flat, dst=flat)
    total = raw[:, 0].copy()
    for c in range(1, raw.shape[1]):
        total += raw[:, c]
    np.reciprocal(total, out=total)
    raw *= total[:, None]
    return raw


def _starts(length: int, patch: int, overlap: float) -> list[int]:
    step = max(1, int(patch * (1 - overlap)))
    starts = list(range(0, max(1, length - patch + 1), step))
    if starts[-1] + patch < length:
        starts.append(length - patch)
    return starts


def _tent(patch: tuple[int, ...]) -> NDArray[np.float32]:
    axes = [1.0 - np.abs(np.linspace(-1, 1, p, dtype=np.float32)) * 0.9 for p in patch]
    return np.asarray(np.einsum("i,j,k->ijk", *axes), dtype=np.float32)
