"""Tests of mrijax.data.phantoms: known values, orientation, seeding and ranges."""

import numpy as np
import pytest

from mrijax.data import phantoms


def _pixel(n, x, y):
    """Row and column of the pixel whose centre is nearest to (x, y) (y up, [-1, 1]^2)."""
    return int(round(n // 2 - y * n / 2)), int(round(n // 2 + x * n / 2))


# --------------------------------------------------------------------------- Shepp-Logan

@pytest.mark.parametrize("point, modified_value, original_value", [
    ((0.0, 0.0), 0.2, 0.51),         # brain: 1 - 0.8 (original (2 - 0.98) / 2)
    ((0.0, 0.89), 1.0, 1.0),         # skull: inside ellipse 1 only
    ((0.22, 0.0), 0.0, 0.5),         # right dark ellipse: 1 - 0.8 - 0.2
    ((-0.22, 0.15), 0.0, 0.5),       # left dark ellipse
    ((0.0, 0.45), 0.3, 0.515),       # the large ellipse near the top
    ((0.0, 0.1), 0.3, 0.515),        # the small disc above the centre (outside ellipse 5)
    ((0.0, -0.606), 0.3, 0.515),     # the middle one of the three small ellipses at the bottom
    ((0.9, 0.9), 0.0, 0.0),          # outside the head
])
def test_shepp_logan_known_values(point, modified_value, original_value):
    n = 128
    i, j = _pixel(n, *point)
    assert phantoms.shepp_logan(n)[i, j] == pytest.approx(modified_value, abs=1e-6)
    assert phantoms.shepp_logan(n, modified=False)[i, j] == pytest.approx(original_value, abs=1e-6)


def test_shepp_logan_matches_skimage_orientation_and_values():
    from skimage.data import shepp_logan_phantom
    reference = shepp_logan_phantom()  # 400 x 400, Toft's modified phantom in [0, 1]
    ours = phantoms.shepp_logan(reference.shape[0])
    agree = lambda a: np.mean(np.abs(a - reference) < 0.02)
    # Only a thin ring of edge pixels differs (the two grids differ by a fraction of a pixel).
    assert agree(ours) > 0.98
    # Orientation matters: either flip is clearly worse.
    assert agree(ours[::-1]) < 0.95 and agree(ours[:, ::-1]) < 0.95
    # The same grey levels (0.1 where a small ellipse overlaps a dark one).
    np.testing.assert_allclose(np.unique(ours), [0.0, 0.1, 0.2, 0.3, 0.4, 1.0], atol=1e-6)


@pytest.mark.parametrize("n", [1, 7, 32, 33, (24, 40)])
def test_shepp_logan_any_size_dtype_and_range(n):
    image = phantoms.shepp_logan(n)
    shape = (n, n) if isinstance(n, int) else n
    assert image.shape == shape and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_shepp_logan_supersampling_gives_partial_volume_and_keeps_the_mean():
    sharp = phantoms.shepp_logan(64)
    smooth = phantoms.shepp_logan(64, supersample=4)
    assert smooth.min() >= 0 and smooth.max() <= 1
    # Edge pixels get intermediate values that the point-sampled image cannot have.
    assert np.unique(smooth).size > 3 * np.unique(sharp).size
    # Away from edges nothing changes.
    assert np.mean(smooth == sharp) > 0.8
    # The image mean approximates the exact mean intensity over [-1, 1]^2,
    # sum(value * pi a b) / 4, and supersampling brings it much closer.
    exact = sum(v * np.pi * a * b for v, a, b, *_ in phantoms._MODIFIED_SHEPP_LOGAN) / 4
    assert abs(smooth.mean(dtype=np.float64) - exact) < 3e-4
    assert abs(sharp.mean(dtype=np.float64) - exact) > 3 * abs(smooth.mean(dtype=np.float64) - exact)


def test_shepp_logan_bad_sizes():
    for bad in (0, -3, (4, 0)):
        with pytest.raises(ValueError, match="n must be positive"):
            phantoms.shepp_logan(bad)
    for bad in (3.5, "64", (4, 4, 4), True):
        with pytest.raises(TypeError, match="n must be"):
            phantoms.shepp_logan(bad)
    with pytest.raises(ValueError, match="supersample"):
        phantoms.shepp_logan(8, supersample=0)


# --------------------------------------------------------------------------- ellipse

def test_ellipse_area_position_and_rotation():
    n = 64
    e = phantoms.ellipse(n, (0.0, 0.0), (0.5, 0.25), value=0.7)
    assert e.dtype == np.float32 and set(np.unique(e)) == {0.0, np.float32(0.7)}
    area_pixels = np.pi * 0.5 * 0.25 * (n / 2) ** 2
    assert abs(np.count_nonzero(e) - area_pixels) < 0.03 * area_pixels
    # Wider than tall; rotating by 90 degrees swaps the two.
    rows, cols = np.nonzero(e)
    assert np.ptp(cols) > 1.8 * np.ptp(rows)
    rotated = phantoms.ellipse(n, (0.0, 0.0), (0.5, 0.25), angle=90.0)
    swapped = phantoms.ellipse(n, (0.0, 0.0), (0.25, 0.5))
    assert np.count_nonzero(rotated != swapped) <= 4  # boundary points at exact rounding ties
    # (x, y) = (0.5, 0.5) is the upper-right quadrant: small row, large column.
    rows, cols = np.nonzero(phantoms.ellipse(n, (0.5, 0.5), (0.1, 0.1)))
    assert rows.mean() == pytest.approx(n // 2 - 0.5 * n / 2, abs=0.6)
    assert cols.mean() == pytest.approx(n // 2 + 0.5 * n / 2, abs=0.6)
    # A 45 degree tilt puts a long thin ellipse on the rising diagonal (top right to bottom left).
    d = phantoms.ellipse(n, (0.0, 0.0), (0.8, 0.05), angle=45.0)
    i, j = _pixel(n, 0.4, 0.4)
    k, m = _pixel(n, -0.4, 0.4)
    assert d[i, j] == 1.0 and d[k, m] == 0.0


def test_ellipse_added_to_a_phantom_plants_a_detail():
    base = phantoms.shepp_logan(64)
    detail = phantoms.ellipse(64, (0.3, -0.3), (0.05, 0.05), value=0.25)
    combined = base + detail
    i, j = _pixel(64, 0.3, -0.3)
    assert combined[i, j] == pytest.approx(base[i, j] + 0.25)
    assert np.array_equal(combined[detail == 0], base[detail == 0])


def test_ellipse_errors():
    with pytest.raises(ValueError, match="axes"):
        phantoms.ellipse(16, (0, 0), (0.0, 0.3))
    with pytest.raises(TypeError, match="center and axes"):
        phantoms.ellipse(16, (0,), (0.2, 0.3))
    with pytest.raises(ValueError, match="finite"):
        phantoms.ellipse(16, (0, 0), (0.2, 0.3), value=np.nan)


# --------------------------------------------------------------------------- random ellipses

def test_random_ellipses_is_seeded_ranged_and_head_shaped():
    a = phantoms.random_ellipses(48, seed=3)
    b = phantoms.random_ellipses(48, seed=3)
    c = phantoms.random_ellipses(48, seed=4)
    assert a.dtype == np.float32 and a.shape == (48, 48)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for image in (a, c):
        assert image.min() >= 0.0 and image.max() <= 1.0
        # Zero outside the head: the corners and the border are empty.
        assert np.all(image[:3, :3] == 0) and np.all(image[-3:, -3:] == 0)
        assert 0.25 < np.mean(image > 0) < 0.75
        # Piecewise constant with several grey levels.
        assert 3 <= np.unique(image).size <= 60


def test_random_ellipses_count_and_options():
    # No inner ellipses: just the head, a single grey level inside it.
    head = phantoms.random_ellipses(32, seed=5, count=0)
    levels = np.unique(head)
    assert levels.size == 2 and levels[0] == 0 and 0.3 <= levels[1] <= 0.6
    # The head does not depend on the count (random numbers are drawn in a fixed order).
    # With positive intensities only, the zeros are exactly the outside of the head.
    many = phantoms.random_ellipses(32, seed=5, count=10, intensity_range=(0.05, 0.3))
    np.testing.assert_array_equal(many == 0, head == 0)
    assert np.unique(many).size > 4
    with pytest.raises(ValueError, match="count"):
        phantoms.random_ellipses(32, seed=0, count=-1)
    with pytest.raises(ValueError, match="axis_range"):
        phantoms.random_ellipses(32, seed=0, axis_range=(0.3, 0.1))
    with pytest.raises(ValueError, match="head_intensity_range"):
        phantoms.random_ellipses(32, seed=0, head_intensity_range=(0.5, 1.5))
    with pytest.raises(TypeError, match="seed"):
        phantoms.random_ellipses(32, seed=1.5)
    with pytest.raises(ValueError, match="seed"):
        phantoms.random_ellipses(32, seed=-1)


def test_random_ellipses_batch_equals_one_by_one():
    batch = phantoms.random_ellipses_batch(4, 24, seed=7, count=6)
    assert batch.shape == (4, 24, 24) and batch.dtype == np.float32
    for i in range(4):
        np.testing.assert_array_equal(batch[i], phantoms.random_ellipses(24, [7, i], count=6))
    # Independent images.
    assert len({batch[i].tobytes() for i in range(4)}) == 4
    assert phantoms.random_ellipses_batch(0, 8, seed=0).shape == (0, 8, 8)
    with pytest.raises(ValueError, match="batch"):
        phantoms.random_ellipses_batch(-1, 8, seed=0)


# --------------------------------------------------------------------------- Shepp-Logan variants

@pytest.mark.parametrize("n", [1, 7, 32, 33, (24, 40)])
@pytest.mark.parametrize("modified", [True, False])
def test_shepp_logan_variant_jitter_zero_is_the_phantom(n, modified):
    np.testing.assert_array_equal(phantoms.shepp_logan_variant(n, 3, jitter=0, modified=modified),
                                  phantoms.shepp_logan(n, modified))
    np.testing.assert_array_equal(
        phantoms.shepp_logan_variant(n, [5, 1], jitter=0.0, modified=modified, supersample=3),
        phantoms.shepp_logan(n, modified, supersample=3))


def test_shepp_logan_variant_is_seeded_ranged_and_different():
    a = phantoms.shepp_logan_variant(48, 3)
    assert a.shape == (48, 48) and a.dtype == np.float32
    np.testing.assert_array_equal(a, phantoms.shepp_logan_variant(48, 3))
    np.testing.assert_array_equal(phantoms.shepp_logan_variant(32, [3, 1]),
                                  phantoms.shepp_logan_variant(32, np.random.SeedSequence([3, 1])))
    images = [phantoms.shepp_logan_variant(48, s) for s in range(6)]
    images += [phantoms.shepp_logan_variant(48, s, modified=False, supersample=2) for s in range(3)]
    images += [phantoms.shepp_logan_variant(48, s, jitter=2.0) for s in range(3)]
    base = phantoms.shepp_logan(48)
    for image in images:
        assert image.dtype == np.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert not np.array_equal(image, base)
    assert len({image.tobytes() for image in images}) == len(images)


def test_shepp_logan_variant_keeps_the_anatomy():
    # The perturbed ellipse tables, checked as geometry: at jitter <= 1 the skull is the
    # largest ellipse, the brain ellipse moves with it (one ring), every inner ellipse lies
    # inside the brain, and the head stays off the image border.
    table = phantoms._MODIFIED_SHEPP_LOGAN

    def inside(row, x, y):  # (u/a)^2 + (v/b)^2 of points (x, y) in the frame of `row`
        _, a, b, cx, cy, angle = row
        t = np.deg2rad(angle)
        u = (x - cx) * np.cos(t) + (y - cy) * np.sin(t)
        v = -(x - cx) * np.sin(t) + (y - cy) * np.cos(t)
        return (u / a) ** 2 + (v / b) ** 2

    def boundary(row, m=72):
        _, a, b, cx, cy, angle = row
        s, t = np.linspace(0, 2 * np.pi, m, endpoint=False), np.deg2rad(angle)
        u, v = a * np.cos(s), b * np.sin(s)
        return cx + u * np.cos(t) - v * np.sin(t), cy + u * np.sin(t) + v * np.cos(t)

    changed = 0
    for seed in range(100):
        rows = phantoms._variant_table(table, np.random.default_rng([seed, 0]), 1.0, True)
        skull, brain, inner = rows[0], rows[1], rows[2:]
        assert skull[1] * skull[2] > max(r[1] * r[2] for r in rows[1:])
        # Same axis factors for skull and brain: the ring scales as a whole.
        assert skull[1] / table[0][1] == pytest.approx(brain[1] / table[1][1], rel=1e-12)
        assert skull[2] / table[0][2] == pytest.approx(brain[2] / table[1][2], rel=1e-12)
        assert np.all(inside(skull, *boundary(brain)) < 1)
        for r in inner:
            assert np.all(inside(brain, *boundary(r)) < 1)
        x, y = boundary(skull, 720)
        assert max(np.abs(x).max(), np.abs(y).max()) <= 0.95 + 1e-9
        # The brain level (skull + brain values) stays within 30% of the phantom's 0.2.
        assert 0.14 - 1e-12 <= skull[0] + brain[0] <= 0.26 + 1e-12
        assert 0.7 - 1e-12 <= skull[0] <= 1.3 + 1e-12
        changed += not np.allclose(rows, table)
    assert changed == 100
    # On the image: the border is empty and the brightest pixels are the skull ring,
    # found on all four sides of the centre along the central row and column.
    # (Large enough that the thinnest part of the ring, about 0.02 wide, holds pixels.)
    n = 256
    for seed in range(5):
        image = phantoms.shepp_logan_variant(n, seed)
        assert np.all(image[[0, -1], :] == 0) and np.all(image[:, [0, -1]] == 0)
        bright = image >= image.max() - 1e-6
        c = n // 2
        assert bright[:c, c].any() and bright[c:, c].any() and bright[c, :c].any() and bright[c, c:].any()
        r = int(0.3 * n / 2)  # the square [-0.3, 0.3]^2 lies inside every brain at jitter 1
        assert not bright[c - r:c + r, c - r:c + r].any()
        assert 0.2 < np.mean(image > 0) < 0.7  # the phantom: 0.42


def test_shepp_logan_variant_perturbation_grows_with_jitter():
    base = phantoms.shepp_logan(64).astype(np.float64)

    def distance(jitter, seed):
        return np.linalg.norm(phantoms.shepp_logan_variant(64, seed, jitter=jitter) - base)

    seeds = range(6)
    d = {j: np.mean([distance(j, s) for s in seeds]) for j in (0.0, 0.1, 0.5, 1.0)}
    assert d[0.0] == 0.0 < d[0.1] < d[0.5] < d[1.0]
    # Bounded.  (The L2 distance saturates: it is dominated by the thin bright skull ring,
    # which a few pixels' shift moves off itself.)  Per pixel the variants stay close:
    # mostly edges move, and much less than a random-ellipse image differs from the phantom.
    for seed in seeds:
        diff = np.abs(phantoms.shepp_logan_variant(64, seed) - base)
        assert diff.mean() < 0.15 and np.mean(diff > 0.5) < 0.15
    other = np.mean([np.abs(phantoms.random_ellipses(64, s) - base).mean() for s in seeds])
    assert np.mean([np.abs(phantoms.shepp_logan_variant(64, s) - base).mean() for s in seeds]) < 0.6 * other
    # rotate=False takes out the global rotation only: the same seed then moves the image less.
    still = np.mean([np.linalg.norm(phantoms.shepp_logan_variant(64, s, rotate=False) - base) for s in seeds])
    assert 0 < still < d[1.0]


def test_shepp_logan_variant_intensity_contrast_is_kept_when_the_skull_brightens():
    # Values are divided by the maximum when it exceeds 1, so the image always reaches 1
    # or keeps the skull's own (dimmer) level; nothing saturates at 1 except the peak.
    for seed in range(8):
        rows = phantoms._variant_table(phantoms._MODIFIED_SHEPP_LOGAN, np.random.default_rng([seed, 0]),
                                       1.0, True)
        image = phantoms.shepp_logan_variant(128, [seed, 0])
        assert image.max() == pytest.approx(min(rows[0][0], 1.0), abs=1e-6)
        # The brain level relative to the skull is that of the table.
        if rows[0][0] > 1:
            levels = np.unique(image)
            ratio = (rows[0][0] + rows[1][0]) / rows[0][0]
            assert np.min(np.abs(levels - ratio)) < 1e-6


def test_shepp_logan_variants_batch_equals_one_by_one():
    batch = phantoms.shepp_logan_variants(4, 24, seed=7, jitter=0.5, modified=False)
    assert batch.shape == (4, 24, 24) and batch.dtype == np.float32
    for i in range(4):
        np.testing.assert_array_equal(batch[i], phantoms.shepp_logan_variant(24, [7, i], jitter=0.5,
                                                                             modified=False))
    assert len({batch[i].tobytes() for i in range(4)}) == 4
    assert phantoms.shepp_logan_variants(0, (8, 6), seed=0).shape == (0, 8, 6)
    np.testing.assert_array_equal(phantoms.shepp_logan_variants(2, 16, 3, jitter=0),
                                  np.stack([phantoms.shepp_logan(16)] * 2))


def test_shepp_logan_variant_errors():
    for bad in (-0.1, 2.5, np.nan, np.inf):
        with pytest.raises(ValueError, match="jitter"):
            phantoms.shepp_logan_variant(16, 0, jitter=bad)
    for bad in ("1", True, None):
        with pytest.raises(ValueError, match="jitter"):
            phantoms.shepp_logan_variant(16, 0, jitter=bad)
    with pytest.raises(ValueError, match="n must be positive"):
        phantoms.shepp_logan_variant(0, 0)
    with pytest.raises(TypeError, match="n must be"):
        phantoms.shepp_logan_variant(3.5, 0)
    with pytest.raises(ValueError, match="supersample"):
        phantoms.shepp_logan_variant(16, 0, supersample=0)
    with pytest.raises(TypeError, match="seed"):
        phantoms.shepp_logan_variant(16, 1.5)
    with pytest.raises(ValueError, match="seed"):
        phantoms.shepp_logan_variant(16, -1)
    with pytest.raises(ValueError, match="batch"):
        phantoms.shepp_logan_variants(-1, 8, seed=0)
    with pytest.raises(ValueError, match="seed"):
        phantoms.shepp_logan_variants(2, 8, seed=[1, 2])
    with pytest.raises(ValueError, match="jitter"):
        phantoms.shepp_logan_variants(0, 8, seed=0, jitter=3)
    with pytest.raises(TypeError, match="unexpected keyword"):
        phantoms.shepp_logan_variants(1, 8, seed=0, count=3)


# --------------------------------------------------------------------------- smooth phase

def test_with_smooth_phase_keeps_magnitude_and_bounds_phase():
    image = phantoms.shepp_logan(48)
    z = phantoms.with_smooth_phase(image, seed=0, max_phase=1.0)
    assert z.dtype == np.complex64 and z.shape == image.shape
    np.testing.assert_allclose(np.abs(z), image, atol=1e-6)
    ones = phantoms.with_smooth_phase(np.ones((48, 48), np.float32), seed=0, max_phase=1.0)
    phase = np.angle(ones)
    assert np.max(np.abs(phase)) == pytest.approx(1.0, abs=1e-6)
    # Same seed, same phase on the phantom's support.
    np.testing.assert_allclose(np.angle(z)[image > 0], phase[image > 0], atol=1e-6)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_with_smooth_phase_is_smooth(degree):
    # Markov's inequality: a polynomial of degree d bounded by M on an interval of
    # half-length 1 has slope <= d^2 M, so neighbouring pixels (2/n apart) differ by at
    # most d^2 M 2/n.  A rough (e.g. per-pixel random) phase would violate this.
    n, max_phase = 64, 1.0
    phase = np.angle(phantoms.with_smooth_phase(np.ones((n, n)), seed=1, max_phase=max_phase, degree=degree))
    bound = degree ** 2 * max_phase * 2 / n + 1e-6
    assert np.max(np.abs(np.diff(phase, axis=0))) <= bound
    assert np.max(np.abs(np.diff(phase, axis=1))) <= bound
    # Not constant either.
    assert np.ptp(phase) > 0.5 * max_phase


def test_with_smooth_phase_batch_gets_independent_phases_and_validates():
    images = np.ones((3, 16, 16), np.float32)
    z = phantoms.with_smooth_phase(images, seed=2, max_phase=0.5)
    assert z.shape == (3, 16, 16)
    phases = np.angle(z)
    assert not np.allclose(phases[0], phases[1])
    np.testing.assert_array_equal(phantoms.with_smooth_phase(images, seed=2, max_phase=0.5), z)
    assert np.all(np.angle(phantoms.with_smooth_phase(images, seed=2, max_phase=0.0)) == 0)
    with pytest.raises(TypeError, match="real"):
        phantoms.with_smooth_phase(images.astype(np.complex64), seed=0)
    with pytest.raises(ValueError, match="max_phase"):
        phantoms.with_smooth_phase(images, seed=0, max_phase=-1.0)
    with pytest.raises(ValueError, match="image"):
        phantoms.with_smooth_phase(np.ones(5), seed=0)
