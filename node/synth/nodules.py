"""Nodules of the phantom: their shape, where they may go, and how a slice cuts them.

Nodules are ellipsoids (spheres 60 % of the time), 3-30 mm across (log-uniform, so small ones are
common), placed wholly inside a lung at their centre slice; a quarter touch the pleura (centred one
radius in from the lung's edge) and some touch a vessel (centred one nodule plus one vessel radius from
a vessel point), the cases that trouble classical detectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from node.synth.phantom import Anatomy


@dataclass(frozen=True)
class Nodule:
    """A nodule as drawn: an ellipsoid with semi-axes (a, b) rotated by ``angle_deg`` in-plane, c along z."""

    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    angle_deg: float
    hu: float
    attached: str  # "none" | "vessel" | "pleura"
    lung: str  # "right" | "left"

    @property
    def volume_mm3(self) -> float:
        a, b, c = self.semi_axes_mm
        return 4.0 / 3.0 * math.pi * a * b * c

    @property
    def diameter_mm(self) -> float:
        """Longest axial (in-plane) diameter."""
        return 2.0 * max(self.semi_axes_mm[0], self.semi_axes_mm[1])

    def as_json(self) -> dict[str, object]:
        return {
            "centre_mm": [round(v, 3) for v in self.centre_mm],
            "semi_axes_mm": [round(v, 3) for v in self.semi_axes_mm],
            "angle_deg": round(self.angle_deg, 2),
            "diameter_mm": round(self.diameter_mm, 3),
            "volume_mm3": round(self.volume_mm3, 2),
            "hu": round(self.hu, 1),
            "attached": self.attached,
            "lung": self.lung,
        }


def ellipsoid_slice(
    nodule: Nodule, x: NDArray[np.float32], y: NDArray[np.float32], z: float, ps: float
) -> tuple[NDArray[np.bool_], NDArray[np.float32] | None]:
    """Voxel-centre membership and a partial-volume weight (edge blended over about one pixel)."""
    cx, cy, cz = nodule.centre_mm
    a, b, c = nodule.semi_axes_mm
    dz = (z - cz) / c
    if abs(dz) >= 1.0:
        return np.zeros(x.shape, bool), None
    cos_t, sin_t = math.cos(math.radians(nodule.angle_deg)), math.sin(math.radians(nodule.angle_deg))
    dx, dy = x - cx, y - cy
    u = (dx * cos_t + dy * sin_t) / a
    v = (-dx * sin_t + dy * cos_t) / b
    rho = np.sqrt(u * u + v * v + dz * dz)
    inside = rho <= 1.0
    # Distance to the surface in mm is about (1 - rho) * in-plane radius; blend over one pixel.
    soft = np.clip((1.0 - rho) * min(a, b) / ps + 0.5, 0.0, 1.0).astype(np.float32)
    return inside, soft


def place_nodules(
    rng: np.random.Generator,
    anatomy: Anatomy,
    count: int,
    z_range: tuple[float, float],
    vessel_attached: float = 0.3,
) -> list[Nodule]:
    """Nodules inside the lungs and inside the scanned range, not overlapping each other."""
    placed: list[Nodule] = []
    x, y = anatomy._grid()
    attempts = 0
    while len(placed) < count and attempts < 400:
        attempts += 1
        diameter = float(np.exp(rng.uniform(math.log(3.0), math.log(30.0))))
        r = diameter / 2
        if rng.random() < 0.6:
            axes = (r, r, r)
        else:
            axes = (r, r * float(rng.uniform(0.6, 0.95)), r * float(rng.uniform(0.6, 1.1)))
        low, high = z_range[0] + axes[2], z_range[1] - axes[2]
        if high < low:  # the scanned range is too short to hold this nodule whole
            continue
        z = float(rng.uniform(low, high))
        masks = anatomy.lung_masks(z)
        side, mask = masks[int(rng.integers(0, 2))]
        # Erode by the radius so the whole nodule lies inside the lung at its centre slice.
        k = max(1, int(math.ceil(max(axes) / anatomy.pixel_spacing)))
        core = cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2))
        edge = (mask.astype(np.uint8) - core) if rng.random() < 0.25 else None
        candidates = np.argwhere(core > 0)
        if len(candidates) == 0:
            continue
        attached = "none"
        if edge is not None:
            # Touching the pleura: centre one radius in from the lung's edge.
            ring = cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 3,) * 2))
            ring_pts = np.argwhere((ring > 0) & (cv2.erode(ring, np.ones((3, 3), np.uint8)) == 0))
            if len(ring_pts):
                candidates, attached = ring_pts, "pleura"
        j, i = candidates[int(rng.integers(0, len(candidates)))]
        cx, cy = float(x[j, i]), float(y[j, i])
        if attached == "none" and rng.random() < vessel_attached:
            near = anatomy.vessels[(np.abs(anatomy.vessels[:, 2] - z) < 2) & (anatomy.vessels[:, 3] > 1.5)]
            if len(near):
                vx, vy, _vz, vr = near[int(rng.integers(0, len(near)))]
                ang = rng.uniform(0, 2 * math.pi)
                tx, ty = vx + (vr + r) * math.cos(ang), vy + (vr + r) * math.sin(ang)
                jj = int(round((ty - anatomy.y0) / anatomy.pixel_spacing))
                ii = int(round((tx - anatomy.x0) / anatomy.pixel_spacing))
                # Touching, not swallowed: no other part of the tree may reach deep into the nodule
                # (a point further along the same vessel would otherwise put the nodule inside it).
                gap = np.linalg.norm(anatomy.vessels[:, :3] - np.array([tx, ty, z]), axis=1) - anatomy.vessels[:, 3]
                inside_lung = 0 <= jj < core.shape[0] and 0 <= ii < core.shape[1] and core[jj, ii]
                if inside_lung and gap.min() >= 0.8 * r:
                    cx, cy, attached = float(tx), float(ty), "vessel"
        if any(math.dist((cx, cy, z), n.centre_mm) < max(axes) + max(n.semi_axes_mm) + 4 for n in placed):
            continue
        placed.append(Nodule((cx, cy, z), axes, float(rng.uniform(0, 180)), float(rng.uniform(10, 60)), attached, side))
    return placed
