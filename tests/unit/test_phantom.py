import numpy as np

from node.synth.phantom import LUNG, NODULE, make_phantom


def test_same_seed_same_series() -> None:
    a = make_phantom(5, slices=6, rows=128, columns=128)
    b = make_phantom(5, slices=6, rows=128, columns=128)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.labels, b.labels)
    c = make_phantom(6, slices=6, rows=128, columns=128)
    assert not np.array_equal(a.hu, c.hu)


def test_realistic_attenuation_and_labels() -> None:
    p = make_phantom(11, slices=20, nodules=3)
    assert p.hu.dtype == np.int16 and p.hu.shape == (20, 512, 512)
    lung_hu = p.hu[p.labels == LUNG]
    assert -900 < np.median(lung_hu) < -780
    assert p.hu.min() >= -1024 and p.hu.max() > 600  # air and bone
    assert 0.68 <= p.pixel_spacing <= 0.86 and 0.8 <= p.slice_spacing <= 2.0


def test_nodule_truth_matches_label_volume() -> None:
    p = make_phantom(21, slices=200, nodules=6)
    assert p.nodules, "seed 21 must place nodules"
    x0, y0, z0 = p.first_position
    for nodule in p.nodules:
        x, y, z = nodule.centre_mm
        k = round((z - z0) / p.slice_spacing)
        j = round((y - y0) / p.pixel_spacing)
        i = round((x - x0) / p.pixel_spacing)
        assert p.labels[k, j, i] == NODULE
        assert 3.0 <= nodule.diameter_mm <= 30.0
        if nodule.diameter_mm >= 8:
            r = int(nodule.diameter_mm / p.pixel_spacing) + 2
            rz = int(nodule.diameter_mm / p.slice_spacing) + 2
            box = p.labels[max(0, k - rz) : k + rz + 1, j - r : j + r + 1, i - r : i + r + 1]
            voxels = (box == NODULE).sum() * p.pixel_spacing**2 * p.slice_spacing
            assert abs(voxels - nodule.volume_mm3) / nodule.volume_mm3 < 0.15


def test_vessel_attached_nodules_touch_but_do_not_swallow_a_vessel() -> None:
    from node.synth.phantom import make_anatomy

    checked = 0
    for seed in range(40, 46):
        anatomy, _, _ = make_anatomy(seed, slices=200, nodules=8, vessel_attached=1.0)
        for nodule in anatomy.nodules:
            if nodule.attached != "vessel":
                continue
            gap = np.linalg.norm(anatomy.vessels[:, :3] - np.array(nodule.centre_mm), axis=1) - anatomy.vessels[:, 3]
            radius = max(nodule.semi_axes_mm)
            # touching: in-plane tangent to a vessel point at most 2 mm away along z
            assert 0.8 * radius <= gap.min() <= radius + 2.0
            checked += 1
    assert checked >= 5
