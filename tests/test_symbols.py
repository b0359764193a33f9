"""mrijax.data.symbols: glyph rendering (areas, holes, position, size), regions and per-region numbers."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from mrijax import metrics
from mrijax.data import symbols


def _signed_area(polygons):
    return sum(0.5 * np.sum(p[:-1, 0] * p[1:, 1] - p[1:, 0] * p[:-1, 1]) for p in polygons)


@pytest.mark.parametrize("name", sorted(symbols.SUITS))
def test_covered_area_equals_the_outline_area(name):
    # The supersampled coverage integrates the glyph: its sum is the outline's area in pixels.
    shape, height = (64, 64), 0.5
    polys, signs = symbols.glyph_polygons(name)
    pts = np.concatenate(polys)
    scale = height * shape[0] / (pts[:, 1].max() - pts[:, 1].min())
    area_px = abs(_signed_area(polys)) * scale ** 2
    cov = symbols.coverage(shape, name, (0.5, 0.5), height, supersample=8)
    assert 0 <= cov.min() and cov.max() <= 1
    assert cov.sum() == pytest.approx(area_px, rel=0.01)
    # The glyph spans `height` of the image: its rows run over height * H pixels (+- one edge pixel).
    rows = np.flatnonzero(cov.any(axis=1))
    assert abs((rows[-1] - rows[0] + 1) - height * shape[0]) <= 1.5


def test_letters_keep_their_holes():
    # Non-zero winding: the counter of "O" is empty (TextPath.contains_points would fill it).
    cov = symbols.coverage((40, 40), "O", (0.5, 0.5), 0.8, supersample=4)
    assert cov[20, 20] == 0.0
    assert cov[20, 6:10].max() == 1.0 or cov[20, 30:35].max() == 1.0  # the ring itself is ink
    polys, signs = symbols.glyph_polygons("O")
    assert sorted(signs) == [-1, 1]  # outer contour and hole turn opposite ways


def test_diamond_sits_where_it_is_asked():
    # The diamond is symmetric, so its ink centroid is its box centre: (row, col) * side.
    cov = symbols.coverage((80, 80), "diamond", (0.3, 0.7), 0.25, supersample=8)
    rr, cc = np.mgrid[:80, :80]
    centroid = (np.sum(rr * cov) / cov.sum(), np.sum(cc * cov) / cov.sum())
    np.testing.assert_allclose(centroid, (0.3 * 80, 0.7 * 80), atol=0.5)


def test_render_masks_intensities_and_determinism():
    layout = symbols.default_layout(intensity=0.7)
    image, masks = symbols.render((96, 96), layout)
    assert image.dtype == np.float32 and masks.dtype == bool and masks.shape == (5, 96, 96)
    assert all(m.any() for m in masks)
    # Each mask is where the image is non-zero for that symbol, and they do not overlap here.
    np.testing.assert_array_equal(masks.any(axis=0), image > 0)
    assert masks.sum(axis=0).max() == 1
    # Fully covered pixels hold the intensity exactly; edges hold partial values.
    assert image.max() == pytest.approx(0.7)
    assert 0 <= image.min() and np.any((image > 0) & (image < 0.7))
    # Nothing leaks outside a symbol's box (the box of the ink, from the requested height).
    for item, m in zip(layout, masks):
        rows = np.flatnonzero(m.any(axis=1))
        assert abs(rows.mean() - item.center[0] * 96) <= 1.0
        assert rows[-1] - rows[0] + 1 <= item.height * 96 + 2
    again, masks2 = symbols.render((96, 96), layout)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(masks, masks2)
    # Dark symbols: a negative intensity; a binary image without supersampling.
    dark, _ = symbols.render((96, 96), [symbols.Symbol("heart", (0.5, 0.5), 0.2, -0.5)], supersample=1)
    assert set(np.unique(dark)) == {-0.5, 0.0}


def test_render_paints_in_order():
    a = symbols.Symbol("spade", (0.5, 0.5), 0.4, 1.0)
    b = symbols.Symbol("diamond", (0.5, 0.5), 0.4, 0.25)
    image, masks = symbols.render((48, 48), [a, b], supersample=4)
    cb = symbols.coverage((48, 48), "diamond", (0.5, 0.5), 0.4, supersample=4)
    ca = symbols.coverage((48, 48), "spade", (0.5, 0.5), 0.4, supersample=4)
    np.testing.assert_allclose(image, (ca * (1 - cb) + 0.25 * cb).astype(np.float32), atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(text="heart", center=(0.02, 0.5), height=0.2), "does not fit"),
    (dict(text="CAN U SEE IT", center=(0.5, 0.5), height=0.3), "does not fit"),
    (dict(text="heart", center=(0.5, 0.5), height=0.0), "height"),
    (dict(text="\u4e00", center=(0.5, 0.5), height=0.2), "cannot draw"),
    (dict(text="  ", center=(0.5, 0.5), height=0.2), "text"),
])
def test_bad_items_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        symbols.coverage((32, 32), **kwargs)


def test_render_refuses_empty_and_invisible():
    with pytest.raises(ValueError, match="non-empty"):
        symbols.render((32, 32), [])
    with pytest.raises(ValueError, match="covers no pixel|fit"):
        symbols.render((32, 32), [symbols.Symbol("heart", (0.51, 0.51), 1e-4)], supersample=1)


def test_ellipse_region_known_pixels_and_area():
    z = symbols.ellipse_region((100, 100), (0.5, 0.4), (0.2, 0.1))
    assert z[50, 40] and z[50 + 20, 40] and z[50, 40 + 10]
    assert not z[50 + 21, 40] and not z[50, 40 + 11]
    assert z.sum() == pytest.approx(np.pi * 20 * 10, rel=0.03)
    assert symbols.ellipse_region((100, 100), (0.5, 0.4), (0.2, 0.1), supersample=4).sum() > z.sum()
    cov = symbols.ellipse_coverage((100, 100), (0.5, 0.4), (0.2, 0.1), supersample=8)
    assert cov.sum() == pytest.approx(np.pi * 20 * 10, rel=0.005)
    assert cov[50, 40] == 1.0 and 0 < cov[50, 50] < 1  # the edge pixel is partly covered
    np.testing.assert_array_equal(cov > 0, symbols.ellipse_region((100, 100), (0.5, 0.4), (0.2, 0.1),
                                                                  supersample=8))


def test_bounding_box_pad_and_min_size():
    m = np.zeros((20, 30), bool)
    m[5:8, 10:12] = True
    assert symbols.bounding_box(m) == (5, 8, 10, 12)
    assert symbols.bounding_box(m, pad=2) == (3, 10, 8, 14)
    assert symbols.bounding_box(m, min_size=7) == (3, 10, 8, 15)
    m2 = np.zeros((20, 30), bool)
    m2[0, 29] = True  # a corner pixel: the grown box slides back inside the image
    assert symbols.bounding_box(m2, min_size=7) == (0, 7, 23, 30)
    with pytest.raises(ValueError, match="empty"):
        symbols.bounding_box(np.zeros((5, 5), bool))


def test_region_psnr_known_answer_and_whole_image(x64):
    ref = np.zeros((8, 8))
    ref[0, 0] = 2.0                          # peak 2 (outside the region)
    x = ref.copy()
    region = np.zeros((8, 8), bool)
    region[2:4, 2:4] = True                  # 4 pixels, errors 1, 1, 0, 0 -> mse 0.5
    x[2, 2] = x[2, 3] = 1.0
    assert float(symbols.region_psnr(x, ref, region)) == pytest.approx(10 * np.log10(4 / 0.5), abs=1e-12)
    assert float(symbols.region_psnr(x, ref, region, peak=1.0)) == pytest.approx(10 * np.log10(2.0), abs=1e-12)
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 16, 16)), rng.random((3, 16, 16)) + 1j * rng.random((3, 16, 16))
    np.testing.assert_allclose(symbols.region_psnr(a, b, np.ones((16, 16), bool)), metrics.psnr(a, b), rtol=1e-12)
    jitted = jax.jit(symbols.region_psnr)(jnp.asarray(x), jnp.asarray(ref), jnp.asarray(region))
    assert float(jitted) == pytest.approx(10 * np.log10(8.0), abs=1e-12)
    with pytest.raises(ValueError, match="empty"):
        symbols.region_psnr(x, ref, np.zeros((8, 8), bool))


def test_region_ssim_is_ssim_of_the_crop_with_the_global_range(x64):
    rng = np.random.default_rng(1)
    ref = rng.random((20, 20))
    ref[0, 0] = 3.0
    x = ref + 0.05 * rng.standard_normal((20, 20))
    box = (5, 15, 4, 12)
    want = metrics.ssim(x[5:15, 4:12], ref[5:15, 4:12], data_range=3.0)
    assert float(symbols.region_ssim(x, ref, box)) == pytest.approx(float(want), abs=1e-12)
    with pytest.raises(ValueError, match="does not lie"):
        symbols.region_ssim(x, ref, (5, 25, 4, 12))


def test_region_norms_split_the_change():
    c = np.zeros((2, 6, 6), complex)
    c[0, 1, 1] = 3j
    c[0, 4, 4] = 4.0
    c[1, 0, 0] = 1.0
    region = np.zeros((6, 6), bool)
    region[:3, :3] = True
    out = symbols.region_norms(c, region)
    np.testing.assert_allclose(out["inside"], [3.0, 1.0])
    np.testing.assert_allclose(out["outside"], [4.0, 0.0])
    np.testing.assert_allclose(out["fraction_inside"], [9 / 25, 1.0])
    np.testing.assert_allclose(out["rms_inside"], [3 / 3, 1 / 3])
    np.testing.assert_allclose(out["rms_outside"], [4 / np.sqrt(27), 0.0])
    np.testing.assert_array_equal(out["pixels_inside"], [9, 9])
