"""load_images on k-space files: ``kspace:PATH[:KEY]`` and ``kspace_uncentred:PATH[:KEY]``.

Every expected image is computed here directly with NumPy's FFT (centred orthonormal
``ifft2c``, root-sum-of-squares over coils), independently of mrijax.fourier.
"""

import numpy as np
import pytest
import scipy.io

from mrijax.data import images

H = W = 16


def fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def complex_images(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def max_one(x):
    """Complex images divided by their largest modulus (load_images' scaling of complex images)."""
    return x / np.abs(x).max(axis=(-2, -1), keepdims=True)


def unit_range(x):
    """Real images to [0, 1] by their own min and max (load_images' scaling of real images)."""
    lo, hi = x.min(axis=(-2, -1), keepdims=True), x.max(axis=(-2, -1), keepdims=True)
    return (x - lo) / (hi - lo)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """Three complex images and their centred k-space in a .npy file."""
    d = tmp_path_factory.mktemp("kspace")
    x = complex_images((3, H, W), seed=1)
    np.save(d / "k.npy", fft2c(x).astype(np.complex64))
    return x, d


def test_single_coil_centred_kspace_gives_the_complex_images(single):
    x, d = single
    out = images.load_images(f"kspace:{d / 'k.npy'}", H, count=None)
    assert out.dtype == np.complex64 and out.shape == (3, H, W)
    np.testing.assert_allclose(out, max_one(x), atol=2e-6)
    # the phase is kept, not just the magnitude
    assert np.abs(np.angle(out)).max() > 3.0
    middle = images.load_images(f"kspace:{d / 'k.npy'}", H)  # count=1: the middle slice
    np.testing.assert_allclose(middle[0], max_one(x[1]), atol=2e-6)
    # prefixes are case-insensitive
    np.testing.assert_array_equal(images.load_images(f"KSpace:{d / 'k.npy'}", H, count=None), out)


def test_uncentred_layout_is_converted(single, tmp_path):
    x, _ = single
    np.save(tmp_path / "u.npy", np.fft.fft2(x, norm="ortho").astype(np.complex64))
    out = images.load_images(f"kspace_uncentred:{tmp_path / 'u.npy'}", H, count=None)
    np.testing.assert_allclose(out, max_one(x), atol=2e-6)
    # read as centred, the same file gives other images: the flag matters
    wrong = images.load_images(f"kspace:{tmp_path / 'u.npy'}", H, count=None)
    assert not np.allclose(wrong, out, atol=1e-2)


def test_multi_coil_kspace_gives_root_sum_of_squares(tmp_path):
    coils = complex_images((2, 3, H, W), seed=2)           # (N, C, H, W)
    np.save(tmp_path / "mc.npy", fft2c(coils).astype(np.complex64))
    out = images.load_images(f"kspace:{tmp_path / 'mc.npy'}", H, count=None)
    rss = np.sqrt(np.sum(np.abs(coils) ** 2, axis=1))
    assert out.dtype == np.float32 and out.shape == (2, H, W)
    np.testing.assert_allclose(out, unit_range(rss), atol=2e-6)


def test_npz_and_mat_keys(single, tmp_path):
    x, d = single
    k = fft2c(x).astype(np.complex64)
    np.savez(tmp_path / "k.npz", kspace=k, other=np.zeros(3))
    scipy.io.savemat(tmp_path / "k.mat", {"ks": k, "note": np.ones(2)})
    reference = images.load_images(f"kspace:{d / 'k.npy'}", H, count=None)
    for spec in (f"kspace:{tmp_path / 'k.npz'}:kspace", f"kspace:{tmp_path / 'k.mat'}:ks"):
        np.testing.assert_allclose(images.load_images(spec, H, count=None), reference, atol=1e-7)
    with pytest.raises(ValueError, match="pass key"):  # two arrays, no key
        images.load_images(f"kspace:{tmp_path / 'k.npz'}", H, count=None)


def test_crop_and_resize_as_for_images(single, tmp_path):
    # a non-square k-space goes through the same centre crop and Lanczos resize as images do
    x = complex_images((2, H, W + 4), seed=3)
    np.save(tmp_path / "wide.npy", fft2c(x).astype(np.complex64))
    np.save(tmp_path / "images.npy", ifft2c(fft2c(x)).astype(np.complex64))
    for size in (H, 8):
        from_k = images.load_images(f"kspace:{tmp_path / 'wide.npy'}", size, count=None)
        from_x = images.load_images(str(tmp_path / "images.npy"), size, count=None)
        assert from_k.shape == (2, size, size)
        np.testing.assert_allclose(from_k, from_x, atol=2e-6)
    np.testing.assert_allclose(images.load_images(f"kspace:{tmp_path / 'wide.npy'}", H, count=None),
                               max_one(x[..., 2:2 + W]), atol=2e-6)


def test_images_from_kspace_in_float64(x64):
    x = complex_images((H, W), seed=4)                     # one (H, W) slice
    out = images.images_from_kspace(fft2c(x))
    assert out.shape == (1, H, W) and out.dtype == np.complex128
    np.testing.assert_allclose(out[0], x, atol=1e-12)
    u = images.images_from_kspace(np.fft.fft2(x, norm="ortho"), uncentred=True)
    np.testing.assert_allclose(u[0], x, atol=1e-12)
    coils = complex_images((1, 4, H, W), seed=5)
    rss = images.images_from_kspace(fft2c(coils))
    np.testing.assert_allclose(rss[0], np.sqrt(np.sum(np.abs(coils[0]) ** 2, axis=0)), atol=1e-12)


@pytest.mark.parametrize("array, match", [
    (np.zeros(8, np.complex64), "rank 1"),
    (np.zeros((1, 1, 1, 4, 4), np.complex64), "rank 5"),
    (np.zeros((2, 4, 4), np.float32), "must be complex"),
    (np.zeros((0, 4, 4), np.complex64), "empty"),
])
def test_bad_kspace_arrays_are_refused_naming_the_file(tmp_path, array, match):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=match) as info:
        images.load_images(f"kspace:{path}", 4, count=None)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match=match):
        images.images_from_kspace(array)


def test_bad_kspace_specs(single, tmp_path):
    _, d = single
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        images.load_images(f"kspace:{tmp_path / 'missing.npy'}", 4)
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        images.load_images(f"kspace:{tmp_path / 'missing.mat'}:ks", 4)
    (tmp_path / "k.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"\.npy"):
        images.load_images(f"kspace:{tmp_path / 'k.txt'}", 4)
    with pytest.raises(ValueError, match="needs a file"):
        images.load_images("kspace:", 4)
    with pytest.raises(ValueError, match="holds only 3"):
        images.load_images(f"kspace:{d / 'k.npy'}", 4, count=5)


def test_keeps_phase():
    assert images.keeps_phase("kspace:/a/b.npy") and images.keeps_phase("KSPACE_UNCENTRED:b.mat:k")
    assert images.keeps_phase("fastmri:/data/knee")
    for spec in ("fastmri_magnitude:/data/knee", "ellipses", "mni:axial", "/a/kspace.npy", "x.npz:kspace"):
        assert not images.keeps_phase(spec), spec


# ----------------------------------------------------------------------------- multi-coil k-space kept


def _multicoil_file(tmp_path, n=2, coils=4, side=48):
    """Smooth coil maps times random-ellipse phantoms, as centred k-space (N, C, side, side)."""
    from mrijax.data import phantoms
    from tests.test_sensitivity import smooth_coil_maps

    x = np.stack([np.asarray(phantoms.random_ellipses(side, s)) for s in range(n)])
    k = fft2c(smooth_coil_maps(side, coils)[None] * x[:, None]).astype(np.complex64)
    np.save(tmp_path / "mc.npy", k)
    return k


def test_load_multicoil_kspace_shape_scale_and_sense_combination(tmp_path):
    from mrijax import fourier
    from mrijax.data import sensitivity

    _multicoil_file(tmp_path)
    k = images.load_multicoil_kspace(f"kspace:{tmp_path / 'mc.npy'}", 32)
    assert k.dtype == np.complex64 and k.shape == (2, 4, 32, 32)
    coil_images = ifft2c(k.astype(np.complex128))
    rss = np.sqrt(np.sum(np.abs(coil_images) ** 2, axis=1))
    np.testing.assert_allclose(rss.max(axis=(-2, -1)), 1.0, atol=1e-5)
    # SENSE combination with maps estimated from the output approximates the RSS image.
    maps = np.asarray(sensitivity.estimate_coil_maps(k, calib_size=8))
    sense = np.asarray(fourier.adjoint(k, np.ones((32, 32), bool), maps))
    assert np.linalg.norm(np.abs(sense) - rss) / np.linalg.norm(rss) < 0.02
    # count picks slices as load_images does (count=1: the middle one, here index 1).
    np.testing.assert_allclose(images.load_multicoil_kspace(f"kspace:{tmp_path / 'mc.npy'}", 32, count=1)[0],
                               k[1], atol=1e-6)


def test_load_multicoil_kspace_at_its_own_size_only_rescales(tmp_path):
    coils = complex_images((1, 3, H, W), seed=4)
    np.save(tmp_path / "mc.npy", fft2c(coils).astype(np.complex64))
    np.save(tmp_path / "u.npy", np.fft.fft2(coils, norm="ortho").astype(np.complex64))
    peak = np.sqrt(np.sum(np.abs(coils) ** 2, axis=1)).max()
    expected = fft2c(coils / peak)
    for spec in (f"kspace:{tmp_path / 'mc.npy'}", f"kspace_uncentred:{tmp_path / 'u.npy'}"):
        np.testing.assert_allclose(images.load_multicoil_kspace(spec, H), expected, atol=2e-6, err_msg=spec)


def test_load_multicoil_kspace_from_fastmri(tmp_path):
    pytest.importorskip("h5py")
    from tests.test_fastmri import write_fastmri

    k = write_fastmri(tmp_path / "mc.h5", slices=3, coils=4, H=32, W=24, h=16, w=16)
    out = images.load_multicoil_kspace(f"fastmri:{tmp_path / 'mc.h5'}", 16, count=1)
    coil_images = ifft2c(k[1].astype(np.complex128))[:, 8:24, 4:20]       # the 16x16 target crop
    peak = np.sqrt(np.sum(np.abs(coil_images) ** 2, axis=0)).max()
    assert out.shape == (1, 4, 16, 16) and out.dtype == np.complex64
    np.testing.assert_allclose(out[0], fft2c(coil_images / peak), atol=1e-5)
    write_fastmri(tmp_path / "sc.h5", slices=2, H=32, W=24, h=16, w=16)
    with pytest.raises(ValueError, match=r"single-coil k-space of shape \(2, 32, 24\)"):
        images.load_multicoil_kspace(f"fastmri:{tmp_path / 'sc.h5'}", 16)


def test_load_multicoil_kspace_refuses_other_data(single):
    _, d = single
    with pytest.raises(ValueError, match=r"kspace:.*k.npy.*single-coil k-space of shape \(3, 16, 16\)"):
        images.load_multicoil_kspace(f"kspace:{d / 'k.npy'}", H)
    with pytest.raises(ValueError, match="not a multi-coil k-space source"):
        images.load_multicoil_kspace("shepp_logan", H)
    with pytest.raises(FileNotFoundError):
        images.load_multicoil_kspace(f"kspace:{d / 'missing.npy'}", H)
