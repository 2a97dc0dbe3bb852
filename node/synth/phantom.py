"""A synthetic chest CT phantom with known ground truth.

The phantom serves the tests, the benchmarks, the model's training and the demo; it holds no patient
data. Anatomy is drawn in patient coordinates (LPS, mm): an elliptical body with a fat layer, two lungs
whose cross-section swells and tapers along z with an irregular outline, a heart, a trachea, a spine,
ribs, a table under the patient, branching vessels in the lungs, and spherical or ellipsoidal nodules
(3-30 mm), some touching a vessel or the pleura. Correlated noise is added last.

Everything random is drawn from one ``numpy.random.Generator`` seeded by the caller, so a seed always
gives the same series. Labels: 0 background, 1 lung (vessels inside the lung included), 2 nodule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from node.synth.dicom_writer import write_ct_series
from node.synth.nodules import Nodule, ellipsoid_slice, place_nodules

LUNG = 1
NODULE = 2

# Typical attenuation in HU.
AIR, LUNG_HU, FAT, SOFT, BLOOD, CANCELLOUS, CORTICAL, TABLE = -1000, -860, -100, 45, 40, 260, 750, 150


@dataclass(frozen=True)
class _Lung:
    side: str
    centre: tuple[float, float]
    semi_axes: tuple[float, float]
    harmonics: tuple[tuple[float, float, int], ...]  # (amplitude, phase, order)


@dataclass
class Anatomy:
    """The drawn patient: geometry of every structure; :meth:`render` makes one axial slice."""

    rows: int
    columns: int
    pixel_spacing: float
    z_base: float  # lung base (diaphragm) z, mm
    z_apex: float  # lung apex z, mm
    body_axes: tuple[float, float]
    fat_mm: float
    lungs: tuple[_Lung, _Lung]
    heart: tuple[float, float, float, float]  # cx, cy, ax, ay
    spine: tuple[float, float, float]  # cx, cy, radius
    table_y: float
    rib_phase: float
    vessels: NDArray[np.float64]  # (n, 4): x, y, z, radius of points along the vessel tree
    nodules: list[Nodule] = field(default_factory=list)
    noise_sd: float = 20.0
    seed: int = 0
    _cache: dict[str, object] = field(default_factory=dict, repr=False)

    @property
    def x0(self) -> float:
        """Patient x of the first column's centre (the field of view is centred on x = y = 0)."""
        return -self.columns * self.pixel_spacing / 2 + self.pixel_spacing / 2

    @property
    def y0(self) -> float:
        return -self.rows * self.pixel_spacing / 2 + self.pixel_spacing / 2

    def _grid(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        if "grid" not in self._cache:
            x = (self.x0 + np.arange(self.columns) * self.pixel_spacing).astype(np.float32)
            y = (self.y0 + np.arange(self.rows) * self.pixel_spacing).astype(np.float32)
            self._cache["grid"] = tuple(np.meshgrid(x, y))
        return self._cache["grid"]  # type: ignore[return-value]

    def _lung_radius(self, lung: _Lung) -> NDArray[np.float32]:
        """Normalised radius divided by the outline's wobble: the lung is where this is <= its scale."""
        key = "radius-" + lung.side
        if key not in self._cache:
            x, y = self._grid()
            dx = (x - lung.centre[0]) / lung.semi_axes[0]
            dy = (y - lung.centre[1]) / lung.semi_axes[1]
            theta = np.arctan2(dy, dx)
            wobble = np.ones_like(dx)
            for amp, phase, order in lung.harmonics:
                wobble += amp * np.cos(order * theta + phase)
            self._cache[key] = (np.hypot(dx, dy) / wobble).astype(np.float32)
        radius: NDArray[np.float32] = self._cache[key]  # type: ignore[assignment]
        return radius

    def lung_scale(self, z: float) -> float:
        """Cross-section scale of the lungs at z: 0 outside, swelling from the base, tapering to the apex."""
        t = (z - self.z_base) / (self.z_apex - self.z_base)
        if t <= 0.0 or t >= 1.0:
            return 0.0
        rise = min(1.0, (t / 0.10) ** 0.5)
        taper = math.sqrt(max(0.0, 1.0 - max(0.0, (t - 0.45) / 0.55) ** 2))
        return float(rise * taper)

    def lung_masks(self, z: float) -> list[tuple[str, NDArray[np.bool_]]]:
        """Each lung's mask at z (heart and trachea excluded)."""
        x, y = self._grid()
        s = self.lung_scale(z)
        out = []
        heart = self._heart_mask(x, y, z)
        for lung in self.lungs:
            if s == 0.0:
                out.append((lung.side, np.zeros(x.shape, bool)))
                continue
            out.append((lung.side, (self._lung_radius(lung) <= s) & ~heart))
        return out

    def _heart_mask(self, x: NDArray[np.float32], y: NDArray[np.float32], z: float) -> NDArray[np.bool_]:
        t = (z - self.z_base) / (self.z_apex - self.z_base)
        if not 0.05 < t < 0.55:
            return np.zeros(x.shape, bool)
        k = math.sin(math.pi * (t - 0.05) / 0.5)
        cx, cy, ax, ay = self.heart
        return ((x - cx) / (ax * k)) ** 2 + ((y - cy) / (ay * k)) ** 2 <= 1.0

    def render(self, z: float, rng: np.random.Generator | None = None) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
        """HU (float32) and labels (uint8) of the axial slice at z; noise only if ``rng`` is given."""
        x, y = self._grid()
        hu = np.full(x.shape, AIR, np.float32)
        labels = np.zeros(x.shape, np.uint8)
        ps = self.pixel_spacing

        # Table: a curved slab under the patient.
        table = (np.abs(y - self.table_y - 0.0006 * x**2) < 5.0) & (np.abs(x) < 0.42 * self.columns * ps)
        hu[table] = TABLE

        ax, ay = self.body_axes
        body_r = np.hypot(x / ax, y / ay)
        hu[body_r <= 1.0] = FAT
        inner = np.hypot(x / (ax - self.fat_mm), y / (ay - self.fat_mm)) <= 1.0
        hu[inner] = SOFT

        # Ribs: small bony ellipses on the inner body wall, their angles drifting with z.
        for n in range(18):
            angle = 2 * math.pi * n / 18 + self.rib_phase + 0.012 * z
            if math.sin(angle) > 0.75:  # none over the spine and table side
                continue
            rx = (ax - self.fat_mm - 7) * math.cos(angle)
            ry = (ay - self.fat_mm - 7) * math.sin(angle)
            cv2.ellipse(
                hu,
                (round((rx - self.x0) / ps * 16), round((ry - self.y0) / ps * 16)),
                (round(7 / ps * 16), round(3.5 / ps * 16)),
                math.degrees(angle) + 90,
                0,
                360,
                float(CORTICAL),
                -1,
                cv2.LINE_AA,
                4,
            )

        sx, sy, sr = self.spine
        spine_d = np.hypot(x - sx, y - sy)
        hu[spine_d <= sr] = CORTICAL
        hu[spine_d <= sr - 3] = CANCELLOUS
        hu[np.hypot(x - sx, y - sy - sr - 9) <= 7] = BLOOD - 20  # spinal canal

        heart = self._heart_mask(x, y, z)
        hu[heart] = BLOOD

        lung_any = np.zeros(x.shape, bool)
        for _side, mask in self.lung_masks(z):
            lung_any |= mask
        # Parenchyma texture: smooth, small, fixed by position so neighbouring slices agree.
        texture = 25.0 * np.sin(x / 23.0 + 0.05 * z) * np.cos(y / 31.0 - 0.04 * z)
        hu[lung_any] = LUNG_HU + texture[lung_any]
        labels[lung_any] = LUNG

        t = (z - self.z_base) / (self.z_apex - self.z_base)
        if t > 0.55:  # trachea above the carina: air with a soft-tissue wall, not lung
            trachea = np.hypot(x, y + 15.0)
            hu[trachea <= 11.0] = SOFT
            hu[trachea <= 9.0] = AIR
            labels[trachea <= 11.0] = 0

        # Vessels: a tube is a chain of spheres; each cuts this slice as a disc.
        vessel_mask = np.zeros(x.shape, np.uint8)
        pts = self.vessels
        near = pts[np.abs(pts[:, 2] - z) < pts[:, 3]]
        for px, py, pz, pr in near:
            r = math.sqrt(max(pr * pr - (pz - z) ** 2, 0.0))
            centre = (round((px - self.x0) / ps * 16), round((py - self.y0) / ps * 16))
            cv2.circle(vessel_mask, centre, max(1, round(r / ps * 16)), 1, -1, cv2.LINE_8, 4)
        vessels = (vessel_mask > 0) & lung_any
        hu[vessels] = BLOOD

        for nodule in self.nodules:
            # Work in the nodule's bounding box only: most of the slice is far from it.
            reach = max(nodule.semi_axes_mm) + 2 * ps
            j0 = max(0, int((nodule.centre_mm[1] - reach - self.y0) / ps))
            j1 = min(self.rows, int((nodule.centre_mm[1] + reach - self.y0) / ps) + 2)
            i0 = max(0, int((nodule.centre_mm[0] - reach - self.x0) / ps))
            i1 = min(self.columns, int((nodule.centre_mm[0] + reach - self.x0) / ps) + 2)
            box = (slice(j0, j1), slice(i0, i1))
            inside, soft = ellipsoid_slice(nodule, x[box], y[box], z, ps)
            if soft is None:
                continue
            hu[box] = hu[box] * (1 - soft) + nodule.hu * soft
            labels[box][inside] = NODULE

        if rng is not None:
            noise = rng.standard_normal(x.shape).astype(np.float32)
            hu += cv2.GaussianBlur(noise, (0, 0), 0.7) * (
                self.noise_sd / 0.4
            )  # blur at sigma 0.7 leaves about 0.4 of the SD
        return hu, labels


def _vessel_tree(rng: np.random.Generator, root: NDArray[np.float64], side: float) -> list[NDArray[np.float64]]:
    """Points (x, y, z, r) along a branching tree that starts at the hilum and spreads outwards."""
    points: list[NDArray[np.float64]] = []
    stack = [(root, np.array([side * 0.8, 0.1, 0.0]), 4.5, 38.0, 0)]
    while stack:
        start, direction, radius, length, depth = stack.pop()
        direction = direction / np.linalg.norm(direction)
        steps = max(2, int(length / max(0.4, radius * 0.5)))
        ts = np.linspace(0.0, length, steps)
        seg = start[None, :] + ts[:, None] * direction[None, :]
        points.append(np.column_stack([seg, np.full(steps, radius)]))
        if depth >= 5 or radius < 0.9:
            continue
        end = seg[-1]
        for _ in range(2):
            turn = rng.normal(0.0, 0.6, 3)
            turn[2] *= 1.6  # branches spread up and down the lung
            stack.append((end, direction + turn, radius * 0.72, length * 0.8, depth + 1))
    return points


def make_anatomy(
    seed: int,
    slices: int,
    slice_spacing: float | None = None,
    rows: int = 512,
    columns: int = 512,
    nodules: int | None = None,
    vessel_attached: float = 0.3,
) -> tuple[Anatomy, float, float]:
    """Draw a patient from ``seed``; return it with the slice spacing and the first slice's z.

    Pixel spacing (0.68-0.86 mm) and slice spacing (0.8-2.0 mm, unless given) vary with the seed. The
    scan range is centred on the lungs, so a short series covers the mid chest. ``vessel_attached`` is
    the chance that a nodule is placed touching a vessel (training asks for more of these hard cases).
    """
    rng = np.random.default_rng(seed)
    ps = float(rng.uniform(0.68, 0.86)) * 512 / max(rows, columns)
    spacing = slice_spacing if slice_spacing is not None else float(rng.choice([0.8, 1.0, 1.25, 1.5, 2.0]))
    fov = min(rows, columns) * ps
    ax = float(min(rng.uniform(140, 175), 0.45 * fov))
    ay = float(min(rng.uniform(100, 125), 0.36 * fov))
    fat = float(rng.uniform(8, 20))
    lung_len = float(rng.uniform(210, 260))
    z_centre = float(rng.uniform(-40, 40))
    z_base, z_apex = z_centre - lung_len / 2, z_centre + lung_len / 2
    inner_x, inner_y = ax - fat - 14, ay - fat - 12
    lungs = []
    for side, sign in (("right", -1.0), ("left", 1.0)):
        cx = sign * inner_x * rng.uniform(0.48, 0.55)
        semi = (inner_x * rng.uniform(0.40, 0.46), inner_y * rng.uniform(0.80, 0.88))
        harmonics = tuple(
            (float(rng.uniform(0.01, 0.05)), float(rng.uniform(0, 2 * math.pi)), int(k)) for k in (2, 3, 5)
        )
        lungs.append(_Lung(side, (float(cx), float(rng.uniform(-5, 8))), semi, harmonics))
    heart = (
        float(rng.uniform(10, 30)),
        float(-ay * 0.35),
        float(rng.uniform(45, 60)),
        float(rng.uniform(38, 48)),
    )
    spine = (0.0, float(ay - fat - 35), float(rng.uniform(15, 19)))
    vessel_parts: list[NDArray[np.float64]] = []
    for lung, sign in zip(lungs, (-1.0, 1.0), strict=True):
        hilum_x = lung.centre[0] - sign * lung.semi_axes[0] * 0.55
        for dz in (-0.1, 0.05, 0.2):
            root = np.array([hilum_x, lung.centre[1], z_base + (0.45 + dz) * lung_len])
            vessel_parts += _vessel_tree(rng, root, sign)
    vessels = np.concatenate(vessel_parts)
    anatomy = Anatomy(
        rows=rows,
        columns=columns,
        pixel_spacing=ps,
        z_base=z_base,
        z_apex=z_apex,
        body_axes=(ax, ay),
        fat_mm=fat,
        lungs=(lungs[0], lungs[1]),
        heart=heart,
        spine=spine,
        table_y=ay + 12.0,
        rib_phase=float(rng.uniform(0, 2 * math.pi)),
        vessels=vessels,
        noise_sd=float(rng.uniform(12, 28)),
        seed=seed,
    )
    first_z = z_centre - (slices - 1) * spacing / 2
    z_range = (first_z, first_z + (slices - 1) * spacing)
    count = int(rng.integers(0, 7)) if nodules is None else nodules
    anatomy.nodules = place_nodules(rng, anatomy, count, z_range, vessel_attached)
    return anatomy, spacing, first_z


@dataclass(frozen=True, eq=False)
class Phantom:
    """A rendered series: HU (int16) and labels (uint8), both (slices, rows, columns), and its truth."""

    hu: NDArray[np.int16]
    labels: NDArray[np.uint8]
    pixel_spacing: float
    slice_spacing: float
    first_position: tuple[float, float, float]
    nodules: tuple[Nodule, ...]
    seed: int

    def write_dicom(self, out_dir: Path, progress: Callable[[int, int], None] | None = None) -> list[Path]:
        """Write the series as CT Image Storage files (one per slice) into ``out_dir``."""
        return write_ct_series(
            self.hu,
            out_dir,
            pixel_spacing=(self.pixel_spacing, self.pixel_spacing),
            slice_thickness=self.slice_spacing,
            first_position=self.first_position,
            seed=self.seed,
            progress=progress,
        )

    def truth_json(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "shape": list(self.hu.shape),
            "pixel_spacing_mm": round(self.pixel_spacing, 6),
            "slice_spacing_mm": self.slice_spacing,
            "first_position_mm": [round(v, 4) for v in self.first_position],
            "labels": {"0": "background", "1": "lung", "2": "nodule"},
            "nodules": [n.as_json() for n in self.nodules],
        }


def make_phantom(
    seed: int,
    slices: int = 120,
    rows: int = 512,
    columns: int = 512,
    slice_spacing: float | None = None,
    nodules: int | None = None,
) -> Phantom:
    """Render a whole series from ``seed`` (slice 0 is the most inferior)."""
    anatomy, spacing, first_z = make_anatomy(seed, slices, slice_spacing, rows, columns, nodules)
    noise_rng = np.random.default_rng([seed, 7])
    hu = np.empty((slices, rows, columns), np.int16)
    labels = np.empty((slices, rows, columns), np.uint8)
    for k in range(slices):
        slice_hu, slice_labels = anatomy.render(first_z + k * spacing, noise_rng)
        np.clip(np.rint(slice_hu), -1024, 3071, out=slice_hu)
        hu[k] = slice_hu
        labels[k] = slice_labels
    in_range = tuple(n for n in anatomy.nodules if first_z <= n.centre_mm[2] <= first_z + (slices - 1) * spacing)
    return Phantom(hu, labels, anatomy.pixel_spacing, spacing, (anatomy.x0, anatomy.y0, first_z), in_range, seed)
