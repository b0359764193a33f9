"""Training from a folder of fastMRI volumes: ``fastmri:FOLDER`` in mrijax.data.pipeline, load_images and a run.

Tiny volumes in the fastMRI layout are written here (two single-coil volumes of 3 and 2
slices, 32x32 k-space, 16x16 stored ``reconstruction_esc``).  Every expected image is
computed directly from the k-space written, with NumPy's FFT.
"""

import json

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="h5py is an optional dependency (pip install mrijax[data])")

from experiments import training
from mrijax.data import fastmri, images, pipeline
from mrijax.data.fastmri import FastMRIFileError

K = 32        # k-space side
R = 16        # reconstructed field of view (stored target side)
SLICES = {"file_a.h5": 3, "file_b.h5": 2}


def fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def crop(x, n):
    top, left = (x.shape[-2] - n) // 2, (x.shape[-1] - n) // 2
    return x[..., top:top + n, left:left + n]


def write_volume(path, slices, *, coils=None, seed=0, test_file=False):
    """A fastMRI volume; returns its k-space (complex64 [slices, (coils,) K, K])."""
    rng = np.random.default_rng(seed)
    shape = (slices, K, K) if coils is None else (slices, coils, K, K)
    # smooth magnitude with a varying phase, so complex and magnitude images differ
    yy, xx = np.mgrid[-1:1:K * 1j, -1:1:K * 1j]
    body = np.exp(-(xx ** 2 + yy ** 2) * 3)
    x = body * (1 + 0.3 * rng.standard_normal(shape)) * np.exp(1j * rng.uniform(-2, 2, shape[:-2] + (1, 1)) * xx)
    kspace = fft2c(x).astype(np.complex64)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace, chunks=(1,) + shape[1:])
        image = np.abs(crop(ifft2c(kspace.astype(np.complex128)), R))
        if coils is None:
            f.create_dataset("reconstruction_esc", data=image.astype(np.float32))
        else:
            f.create_dataset("reconstruction_rss", data=np.sqrt((image ** 2).sum(1)).astype(np.float32))
        if test_file:
            f.create_dataset("mask", data=(np.arange(K) % 4 == 0))
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["max"] = float(image.max())
    return kspace


def direct_image(kspace_slice, size=R):
    """What training should see for one single-coil slice: the complex image over the recon FOV, max 1."""
    x = crop(ifft2c(kspace_slice.astype(np.complex128)), R)
    assert size == R
    return x / np.abs(x).max()


def line_mask(shape, seed):
    cols = np.random.default_rng(seed).random(shape[1]) < 0.4
    cols[shape[1] // 2] = True
    return np.broadcast_to(cols, shape).copy()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("knee")
    kspace = {name: write_volume(d / name, n, seed=i) for i, (name, n) in enumerate(SLICES.items())}
    (d / "notes.txt").write_text("not a volume")  # other files are ignored
    return d, kspace


def expected(kspace, path, index):
    return direct_image(kspace[path.rsplit("/", 1)[-1]][index])


# ----------------------------------------------------------------------------- the lazy pool


def test_pool_lists_slices_in_order_and_items_equal_direct_reads(folder):
    d, kspace = folder
    pool = images.FastMRISlices(d, R)
    assert len(pool) == 5 and pool.shape == (5, R, R) and pool.dtype == np.complex64 and pool.keep_phase
    assert [(p.rsplit("/", 1)[-1], i) for p, i in map(pool.locate, range(5))] == [
        ("file_a.h5", 0), ("file_a.h5", 1), ("file_a.h5", 2), ("file_b.h5", 0), ("file_b.h5", 1)]
    for k in range(len(pool)):
        path, index = pool.locate(k)
        item = pool[k]
        np.testing.assert_allclose(item, expected(kspace, path, index), atol=2e-6)
        # its magnitude is the stored target, up to the max-1 scaling
        stored = fastmri.read_slice(path, index).target
        np.testing.assert_allclose(np.abs(item) * stored.max(), stored, atol=2e-6 * stored.max())
    assert np.abs(np.angle(pool[0][np.abs(pool[0]) > 0.2])).max() > 0.5  # a real phase, kept
    # count keeps slices evenly spread; a slice filter drops slices
    two = images.FastMRISlices(d, R, count=2)           # items int((k + 0.5) * 5 / 2) = 1, 3
    assert [two.locate(k) for k in range(2)] == [pool.locate(1), pool.locate(3)]
    np.testing.assert_array_equal(two[1], pool[3])
    inner = images.FastMRISlices(d, R, slice_filter=lambda f, i, n: 0 < i < n - 1)
    assert len(inner) == 1 and inner.locate(0)[1] == 1


def test_magnitude_source_and_resize(folder, tmp_path):
    d, kspace = folder
    mag = images.FastMRISlices(d, R, keep_phase=False)
    assert mag.dtype == np.float32
    path, index = mag.locate(3)
    stored = fastmri.read_slice(path, index).target
    np.testing.assert_allclose(mag[3], (stored - stored.min()) / (stored.max() - stored.min()), atol=2e-6)
    # resizing goes through the same Lanczos resize as any complex image file
    direct = np.stack([expected(kspace, *images.FastMRISlices(d, R).locate(k)) for k in range(5)])
    np.save(tmp_path / "direct.npy", direct.astype(np.complex64))
    small = images.FastMRISlices(d, 8)
    np.testing.assert_allclose(small.load(), images.load_images(str(tmp_path / "direct.npy"), 8, count=None),
                               atol=2e-6)


def test_load_images_and_validation_images_read_the_folder(folder):
    d, _ = folder
    pool = images.FastMRISlices(d, R)
    everything = images.load_images(f"fastmri:{d}", R, count=None)
    np.testing.assert_array_equal(everything, pool.load())
    np.testing.assert_array_equal(images.load_images(f"fastmri:{d}", R)[0], pool[2])  # count=1: the middle
    val = pipeline.validation_images(f"fastmri:{d}", R, 2, seed=0)
    assert val.dtype == np.complex64 and val.shape == (2, R, R)
    np.testing.assert_array_equal(val, images.load_images(f"fastmri:{d}", R, count=2))
    assert pipeline.validation_images(f"fastmri_magnitude:{d}", R, 2, seed=0).dtype == np.float32


# ----------------------------------------------------------------------------- batches


def test_batches_equal_direct_reads_and_are_pure_functions_of_seed_and_index(folder):
    d, kspace = folder
    kw = dict(images=f"fastmri:{d}", size=R, batch_size=4, seed=3, augment=False, mask_fn=line_mask,
              mask_mode="per_image")
    src, again = pipeline.BatchSource(**kw), pipeline.BatchSource(**kw)
    seen = set()
    for i in (0, 1, 2, 1):
        batch = src(i)
        assert batch["target"].dtype == np.complex64 and batch["target"].shape == (4, R, R)
        for j, (s, k) in enumerate(src.picks(i)):
            assert s == 0
            path, index = src.pool(s).locate(k)
            seen.add((path, index))
            np.testing.assert_allclose(batch["target"][j], expected(kspace, path, index), atol=2e-6)
            np.testing.assert_array_equal(batch["mask"][j], line_mask((R, R), pipeline._seed_int(3, i, 4, j)))
        other = again(i)
        np.testing.assert_array_equal(batch["target"], other["target"])
        np.testing.assert_array_equal(batch["mask"], other["mask"])
    assert len({p for p, _ in seen}) == 2  # both volumes are drawn from
    assert not np.array_equal(src(0)["target"], src(1)["target"])
    # a synthetic phase is never put on measured images
    np.testing.assert_array_equal(pipeline.BatchSource(max_phase=1.0, **kw)(0)["target"], src(0)["target"])


def test_augmented_and_mixed_batches(folder):
    d, kspace = folder
    src = pipeline.BatchSource(f"fastmri:{d}:1,ellipses:1", R, 8, seed=5, augment=True, max_phase=0.5,
                               mask_fn=line_mask)
    batch, sources = src(0), [s for s, _ in src.picks(0)]
    assert set(sources) == {0, 1}
    plain = pipeline.BatchSource(f"fastmri:{d}:1,ellipses:1", R, 8, seed=5, augment=False, max_phase=0.5,
                                 mask_fn=line_mask).images_for(0)
    for j, (s, k) in enumerate(src.picks(0)):
        target = batch["target"][j]
        if s == 0:  # a fastMRI slice, flipped/rotated, measured phase kept
            direct = expected(kspace, *src.pool(0).locate(k))
            assert any(np.allclose(target, pipeline.augment_dihedral(direct, c), atol=2e-6) for c in range(8))
        else:       # an ellipse image with a synthetic phase: its magnitude is the real image
            assert any(np.allclose(np.abs(target), pipeline.augment_dihedral(plain[j].real, c), atol=2e-6)
                       for c in range(8))
            assert np.abs(np.angle(target[np.abs(target) > 0.1])).max() > 0.05


def test_per_file_masks_are_shared_by_the_slices_of_a_volume(folder):
    d, _ = folder
    src = pipeline.BatchSource(f"fastmri:{d}:1,ellipses:1", R, 8, seed=2, augment=False, mask_fn=line_mask,
                               mask_mode="per_file", mask_seed=7)
    by_file = {}
    for i in range(4):
        batch = src(i)
        for j, (s, k) in enumerate(src.picks(i)):
            if s == 0:  # a fastMRI slice: the mask of its file, seeded as fastmri.mask_seed says
                path = src.pool(0).locate(k)[0]
                expected_mask = line_mask((R, R), fastmri.mask_seed(path, 7))
                np.testing.assert_array_equal(batch["mask"][j], expected_mask)
                by_file.setdefault(path, expected_mask)
            else:       # other sources: a new mask per image, as per_image
                np.testing.assert_array_equal(batch["mask"][j], line_mask((R, R), pipeline._seed_int(2, i, 4, j)))
    assert len(by_file) == 2
    a, b = by_file.values()
    assert not np.array_equal(a, b)  # different volumes, different masks


def test_slices_are_read_lazily(folder, tmp_path, monkeypatch):
    d, _ = folder
    work = tmp_path / "lazy"
    work.mkdir()
    for name, n in SLICES.items():
        write_volume(work / name, n, seed=10 + n)
    reads = []
    original = fastmri.read_slice
    monkeypatch.setattr(fastmri, "read_slice", lambda path, index: reads.append((str(path), index)) or
                        original(path, index))
    src = pipeline.BatchSource(f"fastmri:{work}", R, 2, seed=0, augment=False, mask_fn=line_mask)
    assert reads == []                                   # opening reads no slice
    # data written after the source was made is what the batches hold: nothing was preloaded
    new = {name: write_volume(work / name, n, seed=20 + n) for name, n in SLICES.items()}
    batch = src(0)
    assert 1 <= len(reads) <= 2
    for j, (_, k) in enumerate(src.picks(0)):
        np.testing.assert_allclose(batch["target"][j], expected(new, *src.pool(0).locate(k)), atol=2e-6)
    count = len(reads)
    src(0)
    assert len(reads) == count                           # the processed images are cached


# ----------------------------------------------------------------------------- errors


def test_bad_folders_are_refused_before_training(folder, tmp_path):
    d, _ = folder
    with pytest.raises(FileNotFoundError, match="no such folder"):
        pipeline.BatchSource(f"fastmri:{tmp_path / 'nowhere'}", R, 2, mask_fn=line_mask)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .h5 files"):
        images.load_images(f"fastmri:{tmp_path / 'empty'}", R)
    with pytest.raises(ValueError, match="needs a folder"):
        images.load_images("fastmri:", R)

    test_dir = tmp_path / "test"
    test_dir.mkdir()
    write_volume(test_dir / "file_t.h5", 2, test_file=True)
    with pytest.raises(FastMRIFileError, match=r"file_t\.h5.*'mask'.*undersampled"):
        pipeline.BatchSource(f"fastmri:{test_dir}", R, 2, mask_fn=line_mask)

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_volume(mixed / "a.h5", 2)
    write_volume(mixed / "b.h5", 2, coils=3)
    with pytest.raises(ValueError, match="mixes single-coil and multi-coil"):
        images.FastMRISlices(mixed, R)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(FastMRIFileError, match=r"x\.h5"):
        images.FastMRISlices(broken, R)
    with h5py.File(broken / "x.h5", "w") as f:
        f.create_dataset("kspace", data=np.zeros((2, K, K), np.float32))
    with pytest.raises(FastMRIFileError, match=r"x\.h5.*'kspace'.*dtype"):
        images.FastMRISlices(broken, R)


def test_multi_coil_folder_gives_rss_magnitudes(tmp_path):
    kspace = write_volume(tmp_path / "mc.h5", 2, coils=3, seed=7)
    pool = images.FastMRISlices(tmp_path, R)
    assert pool.multicoil and not pool.keep_phase and pool.dtype == np.float32
    rss = np.sqrt(np.sum(np.abs(crop(ifft2c(kspace[1].astype(np.complex128)), R)) ** 2, axis=0))
    np.testing.assert_allclose(pool[1], (rss - rss.min()) / (rss.max() - rss.min()), atol=2e-6)
    src = pipeline.BatchSource(f"fastmri:{tmp_path}", R, 2, seed=0, augment=False, mask_fn=line_mask)
    assert not np.any(src._keep_phase)


# ----------------------------------------------------------------------------- a whole run


def test_run_trains_on_a_fastmri_folder(folder, tmp_path):
    d, _ = folder
    config = {
        "model": {"class": "Cascade", "kwargs": dict(n_cascades=1, n_convs=2, features=4, small_conv_impl="conv")},
        "data": dict(images=f"fastmri:{d}", size=R, batch_size=2, seed=0, augment=True),
        "mask": dict(kind="random_lines", kwargs=dict(acceleration=2, center_fraction=0.25), mode="per_image"),
        "train": dict(steps=2, log_every=1, ckpt_every=0, validate_every=0),
        "validation": dict(images=f"fastmri:{d}", count=2, plot_count=0),
    }
    out = tmp_path / "run"
    result = training.run(config, str(out), log=None)
    assert int(result.state.step) == 2
    with open(out / "metrics.json") as f:
        record = json.load(f)
    assert record["config"]["data"]["images"] == f"fastmri:{d}"
    losses = [r["loss"] for r in record["history"] if "loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert np.isfinite(record["final_validation"]["psnr_net"])
