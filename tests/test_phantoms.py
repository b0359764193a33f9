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
