"""Tests for mrijax.masks: rates, exact counts, centres, determinism, nesting, errors."""

import math

import numpy as np
import pytest

from mrijax import masks

RANDOM_KINDS = {
    "random_lines": dict(acceleration=4),
    "equispaced_lines": dict(acceleration=4),
    "exact_count_lines": dict(acceleration=4),
    "gaussian_lines": dict(acceleration=4, sample_n=6),
    "poisson_disc": dict(acceleration=4, calib=(6, 6)),
    "variable_density_2d": dict(rate=0.25),
}
ALL_KINDS = dict(RANDOM_KINDS, radial=dict(n_spokes=6))


def columns(mask):
    """The sampled column indices of a line mask (checking it is constant along H)."""
    assert np.array_equal(mask, np.broadcast_to(mask[:1], mask.shape)), "line mask varies along H"
    return np.flatnonzero(mask[0])


def fastmri_center(width, center_fraction):
    """fastMRI's centre block, written out: round(W * cf) columns from (W - n + 1) // 2."""
    num_low = round(width * center_fraction)
    pad = (width - num_low + 1) // 2
    return np.arange(pad, pad + num_low)


# ----------------------------------------------------------------------------- shapes, dispatch


@pytest.mark.parametrize("kind", sorted(ALL_KINDS))
@pytest.mark.parametrize("shape", [(32, 32), (24, 40)])
def test_make_returns_bool_mask_of_image_shape(kind, shape):
    mask = masks.make(kind, shape, **ALL_KINDS[kind])
    assert mask.dtype == np.bool_
    assert mask.shape == shape
    assert mask[shape[0] // 2, shape[1] // 2], "DC must be sampled"


def test_make_dispatches_to_the_named_function():
    direct = masks.gaussian_lines((16, 64), 4, sample_n=6, seed=3)
    assert np.array_equal(masks.make("gaussian_lines", (16, 64), acceleration=4, sample_n=6, seed=3), direct)
    assert set(masks.KINDS) == set(ALL_KINDS)


def test_make_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match="unknown mask kind 'spiral'") as info:
        masks.make("spiral", (32, 32))
    for kind in masks.KINDS:
        assert kind in str(info.value)


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("kind", sorted(RANDOM_KINDS))
def test_same_seed_same_mask_different_seeds_differ(kind):
    shape = (48, 48)
    first = masks.make(kind, shape, seed=5, **RANDOM_KINDS[kind])
    again = masks.make(kind, shape, seed=5, **RANDOM_KINDS[kind])
    assert np.array_equal(first, again)
    others = [masks.make(kind, shape, seed=seed, **RANDOM_KINDS[kind]) for seed in (6, 7, 8)]
    assert any(not np.array_equal(first, other) for other in others)


def test_pinned_masks_for_a_seed():
    # Regression pins: the same seed must give these masks on every platform.  They only
    # depend on default_rng(7).random(), whose first values are pinned too.
    assert np.allclose(np.random.default_rng(7).random(2), [0.625095466604667, 0.8972138009695755])
    assert columns(masks.random_lines((1, 32), 4, 0.125, seed=7)).tolist() == [6, 14, 15, 16, 17, 23, 24]
    assert columns(masks.exact_count_lines((1, 32), 4, 0.125, seed=7)).tolist() == [
        6, 14, 15, 16, 17, 21, 23, 24]
    assert columns(masks.gaussian_lines((1, 32), 4, 4, seed=7)).tolist() == [1, 14, 15, 16, 17, 18, 19, 27]
    # offset floor(0.625 * 4) = 2, then every 4th column, plus the centre 14..17
    assert columns(masks.equispaced_lines((1, 32), 4, 0.125, seed=7)).tolist() == [
        2, 6, 10, 14, 15, 16, 17, 18, 22, 26, 30]
    assert np.flatnonzero(masks.variable_density_2d((8, 8), 0.25, seed=7)).tolist() == [
        19, 27, 28, 29, 30, 34, 35, 36, 38, 41, 42, 43, 44, 45, 51, 58]


def test_radial_is_deterministic():
    assert np.array_equal(masks.radial((40, 40), 9), masks.radial((40, 40), 9))


# ----------------------------------------------------------------------------- centre blocks


@pytest.mark.parametrize("width,center_fraction,expected", [
    (64, 0.08, [30, 31, 32, 33, 34]),     # 5 columns, symmetric about 32
    (64, 0.0625, [30, 31, 32, 33]),       # 4 columns
    (63, 0.1, [29, 30, 31, 32, 33, 34]),  # odd W: DC at 31
    (33, 0.09, [15, 16, 17]),             # 2.97 -> 3, symmetric about 16
])
def test_center_block_matches_fastmri_layout(width, center_fraction, expected):
    assert fastmri_center(width, center_fraction).tolist() == expected
    for kind in ("random_lines", "equispaced_lines", "exact_count_lines"):
        mask = masks.make(kind, (4, width), acceleration=2, center_fraction=center_fraction, seed=1)
        assert set(expected) <= set(columns(mask).tolist()), kind
        assert width // 2 in expected


# ----------------------------------------------------------------------------- line masks


@pytest.mark.parametrize("acceleration", [4, 8, 3.5])
def test_random_lines_mean_rate_is_one_over_acceleration(acceleration):
    rates = [masks.sampling_rate(masks.random_lines((2, 256), acceleration, 0.04, seed=s)) for s in range(200)]
    assert abs(np.mean(rates) * acceleration - 1.0) < 0.02
    assert np.std(rates) > 0, "random_lines must have a random count"


def test_random_lines_keeps_other_columns_with_fastmri_probability():
    width, acceleration, center_fraction = 128, 4, 0.08
    center = fastmri_center(width, center_fraction)
    outside = np.setdiff1d(np.arange(width), center)
    probability = (width / acceleration - len(center)) / (width - len(center))
    hits = np.zeros(width)
    for seed in range(300):
        mask = masks.random_lines((1, width), acceleration, center_fraction, seed=seed)
        assert mask[0, center].all()
        hits += mask[0]
    frequency = hits[outside] / 300
    assert abs(frequency.mean() - probability) < 0.01
    # one column's frequency: binomial(300, p) has sd < 0.03
    assert np.all(np.abs(frequency - probability) < 0.12)


def test_equispaced_lines_exact_spacing_from_random_offset():
    width, acceleration = 96, 4
    center = set(fastmri_center(width, 0.08).tolist())
    offsets = set()
    for seed in range(20):
        picked = set(columns(masks.equispaced_lines((2, width), acceleration, 0.08, seed=seed)).tolist())
        assert center <= picked
        others = sorted(picked - center)
        offset = others[0] % acceleration
        offsets.add(offset)
        grid = set(range(offset, width, acceleration))
        assert picked == grid | center
    assert offsets == {0, 1, 2, 3}, "the offset must range over [0, acceleration)"


def test_equispaced_fraction_reaches_target_count():
    width, acceleration = 256, 4
    for seed in range(10):
        mask = masks.equispaced_lines((1, width), acceleration, 0.08, seed=seed, fraction=True)
        # fastMRI's adjusted spacing aims at W / R lines in total; collisions with the centre
        # and the rounding cost at most a couple of lines
        assert abs(columns(mask).size - width / acceleration) <= 3
        assert set(fastmri_center(width, 0.08)) <= set(columns(mask).tolist())


def test_equispaced_needs_integer_acceleration_without_fraction():
    with pytest.raises(ValueError, match="acceleration must be an integer"):
        masks.equispaced_lines((8, 64), 2.5)
    assert masks.equispaced_lines((8, 64), 2.5, fraction=True).shape == (8, 64)
    assert np.array_equal(masks.equispaced_lines((8, 64), 4.0), masks.equispaced_lines((8, 64), 4))


@pytest.mark.parametrize("width,acceleration", [(64, 4), (100, 3.3), (97, 8), (100, 1 / 0.3)])
def test_exact_count_lines_has_exactly_the_budget(width, acceleration):
    expected = {(100, 1 / 0.3): 30}.get((width, acceleration), int(width // acceleration))
    for seed in range(25):
        mask = masks.exact_count_lines((3, width), acceleration, 0.04, seed=seed)
        assert columns(mask).size == expected
        assert set(fastmri_center(width, 0.04)) <= set(columns(mask).tolist())


def test_exact_count_lines_draws_other_columns_uniformly():
    width, acceleration, center_fraction, draws = 64, 4, 0.0625, 600
    center = fastmri_center(width, center_fraction)
    outside = np.setdiff1d(np.arange(width), center)
    hits = sum(masks.exact_count_lines((1, width), acceleration, center_fraction, seed=s)[0].astype(int)
               for s in range(draws))
    expected = (width // acceleration - len(center)) / (width - len(center))
    assert np.all(np.abs(hits[outside] / draws - expected) < 0.08)  # sd ~0.016


def schlemper_density(width, acceleration, sample_n):
    """Deep-MRI-Reconstruction's cartesian_mask density over columns (centre zeroed)."""
    x = np.arange(width)
    density = np.exp(-0.5 / (width / 10.0) ** 2 * (x - width / 2) ** 2) + 1.0 / (2.0 * acceleration)
    density[width // 2 - sample_n // 2:width // 2 + sample_n // 2] = 0.0
    return density / density.sum()


def test_gaussian_lines_count_centre_and_law_match_schlemper():
    width, acceleration, sample_n, draws = 64, 4, 8, 3000
    n_lines = int(width / acceleration)
    center = np.arange(width // 2 - sample_n // 2, width // 2 + sample_n // 2)
    ours = np.zeros(width)
    for seed in range(draws):
        picked = columns(masks.gaussian_lines((1, width), acceleration, sample_n, seed=seed))
        assert picked.size == n_lines
        assert set(center.tolist()) <= set(picked.tolist())
        ours[picked] += 1
    # The original rule: np.random.choice(W, n_lines - sample_n, replace=False, p=density).
    rng = np.random.default_rng(12345)
    density = schlemper_density(width, acceleration, sample_n)
    reference = np.zeros(width)
    for _ in range(draws):
        reference[rng.choice(width, n_lines - sample_n, replace=False, p=density)] += 1
    reference[center] = draws
    # inclusion frequencies agree (each has sd <= 0.009)
    assert np.max(np.abs(ours - reference) / draws) < 0.045
    # and are genuinely variable density: central columns far more likely than the edges
    assert ours[width // 2 + sample_n] > 3 * ours[0]


def test_gaussian_lines_without_centre():
    mask = masks.gaussian_lines((4, 40), 5, sample_n=0, seed=2)
    assert columns(mask).size == 8


# ----------------------------------------------------------------------------- poisson disc


def poisson_profile(height, width, calib):
    """SigPy's normalised distance outside the calibration box."""
    y, x = np.mgrid[:height, :width]
    dx = np.maximum(np.abs(x - width // 2) - calib[1] / 2, 0)
    dy = np.maximum(np.abs(y - height // 2) - calib[0] / 2, 0)
    return np.sqrt((dx / dx.max()) ** 2 + (dy / dy.max()) ** 2)


@pytest.mark.parametrize("shape,acceleration,seed", [
    ((64, 64), 4, 0), ((64, 64), 8, 1), ((48, 64), 6, 2), ((64, 64), 2.5, 3)])
def test_poisson_disc_realised_acceleration_close_to_request(shape, acceleration, seed):
    calib = (8, 8)
    mask = masks.poisson_disc(shape, acceleration, seed=seed, calib=calib)
    realised = mask.size / mask.sum()
    assert abs(realised / acceleration - 1) <= 0.02
    box = tuple(slice((n - c + 1) // 2, (n - c + 1) // 2 + c) for n, c in zip(shape, calib))
    assert mask[box].all(), "calibration box must be fully sampled"
    profile = poisson_profile(*shape, calib)
    assert not mask[profile >= 1].any(), "corner crop: nothing outside r < 1"


def test_poisson_disc_is_a_variable_density_poisson_set():
    shape, calib = (64, 64), (8, 8)
    mask = masks.poisson_disc(shape, 6, seed=4, calib=calib)
    profile = poisson_profile(*shape, calib)
    # Outside a one-pixel ring around the box every exclusion radius exceeds one pixel,
    # so no two sampled pixels there are 4-neighbours.
    far = profile > 0.1
    outer = mask & far
    assert not (outer[1:, :] & outer[:-1, :]).any()
    assert not (outer[:, 1:] & outer[:, :-1]).any()
    # The density falls with the distance from the centre.
    inner_density = mask[(profile > 0) & (profile < 0.4)].mean()
    outer_density = mask[(profile >= 0.6) & (profile < 1)].mean()
    assert inner_density > 1.5 * outer_density


def test_poisson_disc_impossible_requests():
    with pytest.raises(ValueError, match="calibration box"):
        masks.poisson_disc((32, 32), 8, calib=(16, 16))
    with pytest.raises(ValueError, match="could not reach acceleration 1.05"):
        masks.poisson_disc((32, 32), 1.05, calib=(4, 4))  # the corner crop alone forbids ~21 %
    with pytest.raises(ValueError, match="calib"):
        masks.poisson_disc((32, 32), 4, calib=(40, 4))
    with pytest.raises(ValueError, match="tol"):
        masks.poisson_disc((32, 32), 4, tol=0.0)


# ----------------------------------------------------------------------------- 2-D variable density


@pytest.mark.parametrize("kind", ["gaussian", "multilevel"])
@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5, 1.0])
def test_variable_density_exact_count_and_centre(kind, rate):
    shape = (40, 48)
    for seed in range(3):
        mask = masks.variable_density_2d(shape, rate, seed=seed, kind=kind, center_radius=0.1)
        assert mask.sum() == round(rate * 40 * 48)
        y = (np.arange(40) - 20) / 20.0
        x = (np.arange(48) - 24) / 24.0
        radius = np.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
        assert mask[radius < 0.1].all()


def test_variable_density_gaussian_density_decreases():
    shape, rate = (48, 48), 0.2
    freq = np.mean([masks.variable_density_2d(shape, rate, seed=s) for s in range(30)], axis=0)
    y = (np.arange(48) - 24) / 24.0
    radius = np.sqrt(y[:, None] ** 2 + y[None, :] ** 2)
    bands = [freq[(radius >= a) & (radius < a + 0.2)].mean() for a in (0.1, 0.3, 0.5, 0.7)]
    assert all(b0 > b1 for b0, b1 in zip(bands, bands[1:])), bands


def test_variable_density_multilevel_level_densities():
    # Levels: centre rho < c, then dyadic annuli [c 2^(k-1), c 2^k); densities min(1, C 2^-(k-1)).
    shape, center_radius, rate = (64, 64), 0.08, 0.15
    mask = masks.variable_density_2d(shape, rate, seed=3, kind="multilevel", center_radius=center_radius)
    y = (np.arange(64) - 32) / 32.0
    radius = np.sqrt(y[:, None] ** 2 + y[None, :] ** 2)
    edges = [0.0] + [center_radius * 2 ** k for k in range(6)]
    densities, sizes = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        level = (radius >= lo) & (radius < hi)
        if level.any():
            densities.append(mask[level].mean())
            sizes.append(level.sum())
    assert densities[0] == 1.0
    assert all(d0 >= d1 for d0, d1 in zip(densities, densities[1:])), densities
    unsaturated = [k for k in range(1, len(densities)) if densities[k] < 1]
    assert len(unsaturated) >= 2
    for k0, k1 in zip(unsaturated, unsaturated[1:]):
        # Level k holds m_k = C w_k |B_k| rounded to the nearest integer, so the densities
        # satisfy p_k1 = p_k0 / 2 up to half a sample of rounding in each level.
        bound = 1 / (2 * sizes[k1]) + 1 / (4 * sizes[k0]) + 1e-9
        assert abs(densities[k1] - 0.5 * densities[k0]) <= bound, (densities, sizes)


# ----------------------------------------------------------------------------- radial


def test_radial_known_answers():
    shape = (16, 20)
    one = masks.radial(shape, 1)  # golden spoke 0 is along the columns: the centre row
    expected = np.zeros(shape, bool)
    expected[8, :] = True
    assert np.array_equal(one, expected)
    two = masks.radial(shape, 2, golden=False)  # 0 and 90 degrees
    expected[:, 10] = True
    assert np.array_equal(two, expected)


@pytest.mark.parametrize("shape", [(32, 32), (33, 33), (24, 40)])
@pytest.mark.parametrize("golden", [True, False])
def test_radial_symmetric_and_contains_centre(shape, golden):
    mask = masks.radial(shape, 7, golden=golden)
    cy, cx = shape[0] // 2, shape[1] // 2
    assert mask[cy, cx]
    # point symmetry about DC on the part of the grid whose mirror image lies on the grid
    ys, xs = np.nonzero(mask)
    my, mx = 2 * cy - ys, 2 * cx - xs
    inside = (my >= 0) & (my < shape[0]) & (mx >= 0) & (mx < shape[1])
    assert mask[my[inside], mx[inside]].all()
    assert 0.05 < masks.sampling_rate(mask) < 0.6


def test_radial_more_spokes_more_samples_golden_nested():
    shape = (48, 48)
    previous = masks.radial(shape, 1)
    for n in (2, 5, 13, 34):
        current = masks.radial(shape, n)
        assert np.all(current >= previous)
        assert current.sum() > previous.sum()
        previous = current


# ----------------------------------------------------------------------------- nesting


@pytest.mark.parametrize("kind,kw", [
    ("random_lines", dict(center_fraction=0.04)),
    ("exact_count_lines", dict(center_fraction=0.04)),
    ("gaussian_lines", dict(sample_n=4)),
    ("variable_density_2d", dict(kind="gaussian")),
    ("variable_density_2d", dict(kind="multilevel")),
    ("radial", dict()),
])
def test_nested_masks_are_subsets(kind, kw):
    shape = (40, 64)
    rates = [0.5, 0.1, 0.25, 0.35, 0.25]  # unsorted, with a repeat
    for seed in (0, 1):
        stack = masks.nested(kind, shape, rates, seed=seed, **kw)
        assert stack.shape == (len(rates), *shape) and stack.dtype == np.bool_
        achieved = masks.sampling_rate(stack)
        for i, j in [(a, b) for a in range(len(rates)) for b in range(len(rates))]:
            if rates[i] <= rates[j]:
                assert np.all(stack[i] <= stack[j]), (kind, rates[i], rates[j])
        assert np.array_equal(stack[2], stack[4])
        order = np.argsort(rates, kind="stable")
        assert np.all(np.diff(achieved[order]) >= 0)


@pytest.mark.parametrize("kind,single", [
    ("random_lines", lambda shape, rate, seed: masks.random_lines(shape, 1 / rate, 0.04, seed)),
    ("exact_count_lines", lambda shape, rate, seed: masks.exact_count_lines(shape, 1 / rate, 0.04, seed)),
])
def test_nested_line_masks_equal_the_single_masks(kind, single):
    shape, rates = (4, 100), [0.1, 0.2, 0.3, 0.5]
    stack = masks.nested(kind, shape, rates, seed=9, center_fraction=0.04)
    for mask, rate in zip(stack, rates):
        assert np.array_equal(mask, single(shape, rate, 9))
    if kind == "exact_count_lines":
        assert [columns(m).size for m in stack] == [10, 20, 30, 50]


@pytest.mark.parametrize("kind", ["gaussian", "multilevel"])
def test_nested_variable_density_equals_single_masks(kind):
    rates = [0.05, 0.15, 0.4]
    stack = masks.nested("variable_density_2d", (32, 32), rates, seed=4, kind=kind)
    for mask, rate in zip(stack, rates):
        assert np.array_equal(mask, masks.variable_density_2d((32, 32), rate, seed=4, kind=kind))
        assert mask.sum() == round(rate * 32 * 32)


def test_nested_gaussian_lines_counts_and_first_mask():
    width, rates = 128, [1 / 8, 1 / 4, 1 / 2]
    stack = masks.nested("gaussian_lines", (2, width), rates, seed=5, sample_n=8)
    assert [columns(m).size for m in stack] == [16, 32, 64]
    assert np.array_equal(stack[0], masks.gaussian_lines((2, width), 8, sample_n=8, seed=5))


def test_nested_radial_uses_fewest_spokes_reaching_each_rate():
    shape, rates = (32, 32), [0.1, 0.3, 0.6]
    stack = masks.nested("radial", shape, rates)
    for mask, rate in zip(stack, rates):
        assert masks.sampling_rate(mask) >= rate
        n = next(n for n in range(1, 500) if np.array_equal(masks.radial(shape, n), mask))
        assert masks.sampling_rate(masks.radial(shape, n - 1)) < rate if n > 1 else True


def test_nested_errors():
    with pytest.raises(ValueError, match="cannot be nested.*random_lines"):
        masks.nested("poisson_disc", (32, 32), [0.2])
    with pytest.raises(ValueError, match=r"rates\[1\] must lie in \(0, 1\]"):
        masks.nested("random_lines", (32, 32), [0.2, 1.5])
    with pytest.raises(ValueError, match="rates"):
        masks.nested("random_lines", (32, 32), [])
    with pytest.raises(TypeError, match="acceleration"):
        masks.nested("random_lines", (32, 32), [0.2], acceleration=4)
    with pytest.raises(ValueError, match="golden"):
        masks.nested("radial", (32, 32), [0.2], golden=False)
    with pytest.raises(ValueError, match=r"rates\[0\]=0.05.*centre"):
        masks.nested("exact_count_lines", (8, 64), [0.05, 0.5], center_fraction=0.2)


# ----------------------------------------------------------------------------- sampling_rate


def test_sampling_rate_known_answers():
    mask = np.zeros((4, 4), bool)
    mask[0, :3] = True
    assert masks.sampling_rate(mask) == 3 / 16
    assert isinstance(masks.sampling_rate(mask), float)
    stack = np.stack([mask, ~mask])
    assert np.allclose(masks.sampling_rate(stack), [3 / 16, 13 / 16])
    with pytest.raises(ValueError, match="at least 2 axes"):
        masks.sampling_rate(np.ones(4, bool))


# ----------------------------------------------------------------------------- errors


LINE_KINDS = ["random_lines", "equispaced_lines", "exact_count_lines"]


@pytest.mark.parametrize("kind", LINE_KINDS + ["gaussian_lines", "poisson_disc"])
def test_acceleration_below_one_is_rejected(kind):
    with pytest.raises(ValueError, match="acceleration must be >= 1"):
        masks.make(kind, (32, 32), acceleration=0.5)
    with pytest.raises(TypeError, match="acceleration must be a real number"):
        masks.make(kind, (32, 32), acceleration="4")


@pytest.mark.parametrize("kind", LINE_KINDS)
@pytest.mark.parametrize("center_fraction", [0.0, 1.0, -0.1, 1.5])
def test_center_fraction_outside_open_unit_interval_is_rejected(kind, center_fraction):
    with pytest.raises(ValueError, match=r"center_fraction must lie in \(0, 1\)"):
        masks.make(kind, (32, 32), acceleration=2, center_fraction=center_fraction)


@pytest.mark.parametrize("kind", LINE_KINDS)
def test_centre_larger_than_line_budget_is_rejected(kind):
    with pytest.raises(ValueError, match="centre has 16 lines but the line budget"):
        masks.make(kind, (32, 64), acceleration=8, center_fraction=0.25)


def test_gaussian_sample_n_larger_than_budget_is_rejected():
    with pytest.raises(ValueError, match=r"sample_n.*centre has 10 lines"):
        masks.gaussian_lines((32, 64), 8, sample_n=10)
    with pytest.raises(ValueError, match="sample_n must be >= 0"):
        masks.gaussian_lines((32, 64), 4, sample_n=-1)


@pytest.mark.parametrize("rate", [0.0, -0.2, 1.01])
def test_rate_outside_unit_interval_is_rejected(rate):
    with pytest.raises(ValueError, match=r"rate must lie in \(0, 1\]"):
        masks.variable_density_2d((32, 32), rate)


def test_variable_density_centre_larger_than_budget_and_bad_parameters():
    with pytest.raises(ValueError, match="centre has .* points"):
        masks.variable_density_2d((32, 32), 0.01, center_radius=0.5)
    with pytest.raises(ValueError, match="kind must be"):
        masks.variable_density_2d((32, 32), 0.2, kind="uniform")
    with pytest.raises(ValueError, match="center_radius must be > 0"):
        masks.variable_density_2d((32, 32), 0.2, kind="multilevel", center_radius=0.0)
    with pytest.raises(ValueError, match="sigma"):
        masks.variable_density_2d((32, 32), 0.2, sigma=0.0)


@pytest.mark.parametrize("kind", sorted(ALL_KINDS))
@pytest.mark.parametrize("shape", [(32,), (4, 32, 32), (0, 32)])
def test_non_2d_or_empty_shape_is_rejected(kind, shape):
    with pytest.raises(ValueError, match="shape must be"):
        masks.make(kind, shape, **ALL_KINDS[kind])


def test_n_spokes_below_one_is_rejected():
    with pytest.raises(ValueError, match="n_spokes must be >= 1"):
        masks.radial((32, 32), 0)
    with pytest.raises(TypeError, match="n_spokes must be an int"):
        masks.radial((32, 32), 2.5)


@pytest.mark.parametrize("seed,error", [(-1, ValueError), (1.5, TypeError), (None, TypeError), (True, TypeError)])
def test_bad_seed_is_rejected(seed, error):
    with pytest.raises(error, match="seed"):
        masks.random_lines((8, 32), 4, seed=seed)


def test_full_sampling_is_allowed():
    assert masks.exact_count_lines((4, 32), 1, 0.5).all()
    assert masks.variable_density_2d((16, 16), 1.0).all()
    assert math.isclose(masks.sampling_rate(masks.random_lines((4, 32), 1, 0.5)), 1.0)
