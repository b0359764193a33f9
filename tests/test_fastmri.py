"""fastMRI HDF5 reading, the target image, and the slice iterator, on tiny files written here.

The files follow the fastMRI layout exactly (fastmri/data/mri_data.py): ``kspace``
complex64 [slices, H, W] or [slices, coils, H, W], ``reconstruction_esc`` /
``reconstruction_rss`` float32 [slices, h, w], ``mask`` [W] in test files, the
``ismrmrd_header`` XML as a byte string, and the attributes.
"""

import functools

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="h5py is an optional dependency (pip install mrijax[data])")

import jax
from mrijax.data import fastmri
from mrijax.data.fastmri import FastMRIFileError

HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <acquisitionSystemInformation>
    <systemFieldStrength_T>2.89362</systemFieldStrength_T>
    <receiverChannels>{coils}</receiverChannels>
  </acquisitionSystemInformation>
  <encoding>
    <encodedSpace>
      <matrixSize><x>{H}</x><y>{W}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>280</x><y>140.5</y><z>4.5</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>140</x><y>140</y><z>3</z></fieldOfView_mm>
    </reconSpace>
    <trajectory>cartesian</trajectory>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>{max1}</maximum><center>{center1}</center></kspace_encoding_step_1>
      <kspace_encoding_step_2><minimum>0</minimum><maximum>0</maximum><center>0</center></kspace_encoding_step_2>
      <slice><minimum>0</minimum><maximum>{max_slice}</maximum><center>0</center></slice>
    </encodingLimits>
  </encoding>
</ismrmrdHeader>
"""

ATTRS = {"acquisition": "CORPDFS_FBK", "max": 0.75, "norm": 12.5, "patient_id": "abc123"}


def _ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _crop(x, h, w):
    H, W = x.shape[-2:]
    return x[..., (H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w]


def _reference_target(kspace64, h, w):
    """fastMRI's target in float64 NumPy: crop |ifft2c| (single-coil) or its RSS over coils."""
    image = np.abs(_crop(_ifft2c(kspace64.astype(np.complex128)), h, w))
    return np.sqrt((image ** 2).sum(axis=-3)) if kspace64.ndim == 4 else image


def write_fastmri(path, *, slices=5, coils=None, H=32, W=32, h=16, w=16, seed=0, kind="train",
                  acceleration=4, num_low=4):
    """Write a tiny fastMRI volume. kind: 'train' (with target) or 'test' (mask, no target)."""
    rng = np.random.default_rng(seed)
    shape = (slices, H, W) if coils is None else (slices, coils, H, W)
    images = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    kspace = _fft2c(images).astype(np.complex64)
    with h5py.File(path, "w") as f:
        attrs = dict(ATTRS)
        if kind == "test":
            cols = rng.random(W) < 1 / acceleration
            start = (W - num_low + 1) // 2
            cols[start:start + num_low] = True
            kspace = (kspace * cols).astype(np.complex64)
            f.create_dataset("mask", data=cols)
            attrs.update(acceleration=acceleration, num_low_frequency=num_low)
        f.create_dataset("kspace", data=kspace, chunks=(1,) + shape[1:])
        if kind == "train":
            key = "reconstruction_esc" if coils is None else "reconstruction_rss"
            f.create_dataset(key, data=_reference_target(kspace, h, w).astype(np.float32))
            if coils is None:
                # Real single-coil knee files also hold the RSS of the multi-coil data: not their target.
                f.create_dataset("reconstruction_rss", data=np.zeros((slices, h, w), np.float32))
        header = HEADER.format(coils=coils or 1, H=H, W=W, h=h, w=w, max1=W - 3, center1=W // 2 - 1,
                               max_slice=slices - 1)
        f.create_dataset("ismrmrd_header", data=np.bytes_(header.encode()))
        for k, v in attrs.items():
            f.attrs[k] = v
    return kspace


# ----------------------------------------------------------------------------- header


def test_parse_header_fields():
    xml = HEADER.format(coils=15, H=640, W=368, h=320, w=320, max1=366, center1=185, max_slice=34)
    hdr = fastmri.parse_ismrmrd_header(xml.encode())
    assert hdr["encoded_size"] == (640, 368, 1)
    assert hdr["recon_size"] == (320, 320, 1)
    assert hdr["encoded_fov_mm"] == (280.0, 140.5, 4.5)
    assert hdr["recon_fov_mm"] == (140.0, 140.0, 3.0)
    assert hdr["kspace_encoding_step_1"] == {"minimum": 0, "maximum": 366, "center": 185}
    assert hdr["slice"] == {"minimum": 0, "maximum": 34, "center": 0}
    # fastMRI: padding_left = enc_y // 2 - center, padding_right = padding_left + maximum + 1.
    assert hdr["padding_left"] == 368 // 2 - 185 == -1
    assert hdr["padding_right"] == -1 + 367
    assert hdr["receiver_channels"] == 15
    assert hdr["field_strength_T"] == pytest.approx(2.89362)


def test_parse_header_without_namespace_and_missing_parts():
    xml = ("<ismrmrdHeader><encoding><encodedSpace><matrixSize><x>8</x><y>6</y><z>1</z>"
           "</matrixSize></encodedSpace></encoding></ismrmrdHeader>")
    hdr = fastmri.parse_ismrmrd_header(xml)
    assert hdr == {"encoded_size": (8, 6, 1)}


def test_parse_header_errors():
    with pytest.raises(ValueError, match="well-formed"):
        fastmri.parse_ismrmrd_header(b"<ismrmrdHeader><encoding>")
    with pytest.raises(ValueError, match="not a number"):
        fastmri.parse_ismrmrd_header("<h><encoding><encodedSpace><matrixSize><x>a</x><y>1</y><z>1</z>"
                                     "</matrixSize></encodedSpace></encoding></h>")
    with pytest.raises(TypeError, match="xml"):
        fastmri.parse_ismrmrd_header(3)


# ----------------------------------------------------------------------------- reading


def test_read_slice_singlecoil_every_field(tmp_path):
    path = tmp_path / "file1000001.h5"
    kspace = write_fastmri(path, slices=5, H=32, W=30, h=16, w=16)
    s = fastmri.read_slice(path, 3)
    assert s.kspace.dtype == np.complex64 and s.kspace.shape == (32, 30)
    np.testing.assert_array_equal(s.kspace, kspace[3])
    with h5py.File(path) as f:
        np.testing.assert_array_equal(s.target, f["reconstruction_esc"][3])
    assert s.target.dtype == np.float32 and s.target.shape == (16, 16)
    assert s.mask is None
    assert s.attrs == ATTRS
    assert all(type(v) in (str, float, int) for v in s.attrs.values())
    assert s.header["encoded_size"] == (32, 30, 1) and s.header["recon_size"] == (16, 16, 1)
    assert s.header["kspace_encoding_step_1"] == {"minimum": 0, "maximum": 27, "center": 14}
    assert s.path == str(path) and s.index == 3
    assert not s.multicoil and s.recon_size == (16, 16)
    # Negative indices count from the end.
    np.testing.assert_array_equal(fastmri.read_slice(path, -1).kspace, kspace[4])


def test_read_slice_multicoil_uses_rss(tmp_path):
    path = tmp_path / "file_brain.h5"
    kspace = write_fastmri(path, slices=3, coils=4, H=32, W=32, h=16, w=16)
    s = fastmri.read_slice(path, 1)
    assert s.multicoil and s.kspace.shape == (4, 32, 32) and s.kspace.dtype == np.complex64
    np.testing.assert_array_equal(s.kspace, kspace[1])
    with h5py.File(path) as f:
        np.testing.assert_array_equal(s.target, f["reconstruction_rss"][1])
    assert s.header["receiver_channels"] == 4


def test_read_test_file_mask_and_attrs(tmp_path):
    path = tmp_path / "file_test.h5"
    kspace = write_fastmri(path, slices=2, H=32, W=32, h=16, w=16, kind="test", acceleration=4, num_low=4)
    s = fastmri.read_slice(path, 0)
    assert s.target is None
    assert s.mask.dtype == bool and s.mask.shape == (32, 32)
    with h5py.File(path) as f:
        cols = f["mask"][()]
    np.testing.assert_array_equal(s.mask, np.broadcast_to(cols, (32, 32)))
    assert s.mask[:, 14:18].all()  # the 4 centre columns, around DC at W // 2 = 16
    # The k-space of a test file is zero off its mask.
    assert np.all(kspace[0][:, ~cols] == 0)
    assert s.attrs["acceleration"] == 4 and s.attrs["num_low_frequency"] == 4
    assert s.recon_size == (16, 16)  # from the header: no stored target


def test_target_image_reproduces_stored_reconstructions(tmp_path):
    for coils, key in ((None, "reconstruction_esc"), (3, "reconstruction_rss")):
        path = tmp_path / f"f{coils}.h5"
        write_fastmri(path, slices=2, coils=coils, H=36, W=30, h=20, w=16, seed=1)
        with fastmri.read_volume(path) as vol:
            for s in vol:
                got = np.asarray(fastmri.target_image(s.kspace, s.recon_size))
                assert got.dtype == np.float32 and got.shape == (20, 16)
                np.testing.assert_allclose(got, s.target, rtol=0, atol=2e-6 * s.target.max())


def test_target_image_against_direct_numpy(x64):
    rng = np.random.default_rng(3)
    # Odd/even size mixtures exercise fastMRI's crop offset (n - m) // 2.
    for shape, recon in (((33, 30), (16, 15)), ((32, 31), (15, 16)), ((2, 20, 17), (9, 9))):
        k = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        want = _reference_target(k[None] if len(shape) == 3 else k, *recon)
        want = want[0] if len(shape) == 3 and want.ndim == 3 else want
        got = np.asarray(fastmri.target_image(k, recon))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_target_image_batched_and_jit():
    rng = np.random.default_rng(4)
    k = (rng.standard_normal((2, 3, 16, 16)) + 1j * rng.standard_normal((2, 3, 16, 16))).astype(np.complex64)
    batched = fastmri.target_image(k, (8, 8), multicoil=True)
    one_by_one = np.stack([fastmri.target_image(ki, (8, 8)) for ki in k])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-6)
    jitted = jax.jit(functools.partial(fastmri.target_image, recon_size=(8, 8), multicoil=True))(k)
    np.testing.assert_allclose(jitted, batched, rtol=1e-6)
    # Several single-coil slices at once.
    np.testing.assert_allclose(fastmri.target_image(k[:, 0], (8, 8), multicoil=False),
                               np.stack([fastmri.target_image(ki[0], (8, 8)) for ki in k]), rtol=1e-6)


def test_target_image_errors():
    k = np.zeros((2, 3, 16, 16), np.complex64)
    with pytest.raises(ValueError, match="ambiguous"):
        fastmri.target_image(k, (8, 8))
    with pytest.raises(ValueError, match="centre-crop"):
        fastmri.target_image(k[0, 0], (20, 8))
    with pytest.raises(TypeError, match="complex"):
        fastmri.target_image(np.zeros((16, 16), np.float32), (8, 8))
    with pytest.raises(ValueError, match="multicoil=True"):
        fastmri.target_image(k[0, 0], (8, 8), multicoil=True)


def test_read_slice_reads_only_that_slice(tmp_path, monkeypatch):
    path = tmp_path / "lazy.h5"
    write_fastmri(path, slices=6, coils=2)
    reads = []
    original = h5py.Dataset.__getitem__

    def recording(self, args, *rest, **kw):
        reads.append((self.name, args))
        return original(self, args, *rest, **kw)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", recording)
    s = fastmri.read_slice(path, 4)
    assert s.kspace.shape == (2, 32, 32)
    big = {"/kspace", "/reconstruction_rss"}
    big_reads = [(name, args) for name, args in reads if name in big]
    # Exactly one hyperslab read per big dataset, selecting slice 4 only.
    assert sorted(big_reads) == [("/kspace", 4), ("/reconstruction_rss", 4)]
    # Opening the volume reads only the small header.
    reads.clear()
    with fastmri.read_volume(path) as vol:
        assert len(vol) == 6
    assert [name for name, _ in reads] == ["/ismrmrd_header"]


def test_volume_view(tmp_path):
    path = tmp_path / "vol.h5"
    kspace = write_fastmri(path, slices=4)
    with fastmri.read_volume(path) as vol:
        assert len(vol) == 4 and vol.slice_shape == (32, 32) and not vol.multicoil
        assert vol.target_key == "reconstruction_esc" and vol.mask is None
        assert [s.index for s in vol] == [0, 1, 2, 3]
        np.testing.assert_array_equal(vol[2].kspace, kspace[2])
        assert "4 slices" in repr(vol)
        with pytest.raises(IndexError, match="out of range"):
            vol[4]
        with pytest.raises(TypeError, match="int"):
            vol[1.0]
    with pytest.raises(ValueError, match="closed"):
        vol[0]


# ----------------------------------------------------------------------------- bad files


def _write(path, **datasets):
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)


def _expect_file_error(path, key, match):
    with pytest.raises(FastMRIFileError, match=match) as info:
        fastmri.read_slice(path, 0)
    assert str(path) in str(info.value)
    assert info.value.key == key and info.value.path == str(path)
    if key is not None:
        assert repr(key) in str(info.value)


def test_errors_name_file_and_key(tmp_path):
    good = np.zeros((2, 8, 8), np.complex64)
    p = tmp_path / "missing.h5"
    _write(p, reconstruction_esc=np.zeros((2, 4, 4), np.float32))
    _expect_file_error(p, "kspace", "missing")

    p = tmp_path / "rank.h5"
    _write(p, kspace=np.zeros((8, 8), np.complex64))
    _expect_file_error(p, "kspace", "rank 2")

    p = tmp_path / "rank5.h5"
    _write(p, kspace=np.zeros((1, 1, 2, 8, 8), np.complex64))
    _expect_file_error(p, "kspace", "rank 5")

    p = tmp_path / "dtype.h5"
    _write(p, kspace=np.zeros((2, 8, 8), np.float32))
    _expect_file_error(p, "kspace", "dtype float32")

    p = tmp_path / "target_shape.h5"
    _write(p, kspace=good, reconstruction_esc=np.zeros((3, 4, 4), np.float32))
    _expect_file_error(p, "reconstruction_esc", "shape")

    p = tmp_path / "target_too_large.h5"
    _write(p, kspace=good, reconstruction_esc=np.zeros((2, 8, 10), np.float32))
    _expect_file_error(p, "reconstruction_esc", "larger than the 8x8 k-space")

    p = tmp_path / "target_dtype.h5"
    _write(p, kspace=good, reconstruction_esc=np.zeros((2, 4, 4), np.complex64))
    _expect_file_error(p, "reconstruction_esc", "dtype")

    p = tmp_path / "mask.h5"
    _write(p, kspace=good, mask=np.ones(7, bool))
    _expect_file_error(p, "mask", r"expected \[8\]")

    p = tmp_path / "header.h5"
    _write(p, kspace=good, ismrmrd_header=np.bytes_(b"<not xml"))
    _expect_file_error(p, "ismrmrd_header", "XML")

    p = tmp_path / "text.h5"
    p.write_text("this is not HDF5")
    _expect_file_error(p, None, "not a readable HDF5 file")

    with pytest.raises(FileNotFoundError, match="nope.h5"):
        fastmri.read_slice(tmp_path / "nope.h5", 0)


def test_missing_h5py_message(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` fail
    with pytest.raises(ImportError, match=r"pip install mrijax\[data\]"):
        fastmri.read_slice("whatever.h5", 0)


# ----------------------------------------------------------------------------- iterator


def random_columns(shape, seed):
    """A test mask_fn: DC column plus random columns, seeded (mrijax.masks is not needed here)."""
    rng = np.random.default_rng(seed)
    cols = rng.random(shape[1]) < 0.4
    cols[shape[1] // 2] = True
    return np.broadcast_to(cols, shape).copy()


def _folder(tmp_path, sizes=((32, 32, 5), (36, 30, 3), (32, 28, 4)), coils=None):
    folder = tmp_path / "data"
    folder.mkdir()
    for i, (H, W, n) in enumerate(sizes):
        write_fastmri(folder / f"file{i:03d}.h5", slices=n, coils=coils, H=H, W=W, h=16, w=16, seed=i)
    return folder


def test_iterator_shapes_and_consistency(tmp_path):
    folder = _folder(tmp_path)
    batches = list(fastmri.iterate_slices(folder, (16, 16), batch_size=4, seed=0))
    assert len(batches) == 12 // 4
    for b in batches:
        assert b["kspace"].shape == (4, 16, 16) and b["kspace"].dtype == np.complex64
        assert b["target"].shape == (4, 16, 16) and b["target"].dtype == np.float32
        assert b["mask"].shape == (4, 16, 16) and b["mask"].dtype == bool and b["mask"].all()
        assert b["slice"].dtype == np.int32 and b["fname"].shape == (4,)
        # k-space is that of the cropped image, so the target is exactly its magnitude ...
        np.testing.assert_allclose(np.abs(_ifft2c(b["kspace"])), b["target"], atol=1e-5)
        # ... and, cropping to the recon size, equals the stored target.
        for fname, i, t in zip(b["fname"], b["slice"], b["target"]):
            with h5py.File(folder / fname) as f:
                np.testing.assert_allclose(t, f["reconstruction_esc"][i], atol=2e-6 * t.max())
    seen = sorted((str(f), int(i)) for b in batches for f, i in zip(b["fname"], b["slice"]))
    assert seen == sorted([(f"file{j:03d}.h5", i) for j, n in enumerate((5, 3, 4)) for i in range(n)])


def test_iterator_pads_and_keeps_multicoil(tmp_path):
    folder = _folder(tmp_path, sizes=((16, 16, 2), (16, 16, 2)), coils=3)
    b = next(fastmri.iterate_slices(folder, (20, 24), batch_size=4, seed=0, shuffle=False))
    assert b["kspace"].shape == (4, 3, 20, 24)
    image = _ifft2c(b["kspace"])
    # Zero-padded in the image domain: the border is empty, the centre is the original image.
    assert np.abs(image[..., :2, :]).max() < 1e-5 and np.abs(image[..., :, :4]).max() < 1e-5
    with h5py.File(folder / "file000.h5") as f:
        original = _ifft2c(f["kspace"][0].astype(np.complex128))
    np.testing.assert_allclose(image[0][:, 2:18, 4:20], original, atol=1e-5)
    np.testing.assert_allclose(b["target"], np.sqrt((np.abs(image) ** 2).sum(1)), atol=1e-5)
    assert list(b["fname"]) == ["file000.h5"] * 2 + ["file001.h5"] * 2 and list(b["slice"]) == [0, 1, 0, 1]


def test_iterator_determinism_and_seeded_masks(tmp_path):
    folder = _folder(tmp_path)
    run = lambda seed: list(fastmri.iterate_slices(folder, (16, 16), 3, seed, mask_fn=random_columns))
    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    order = lambda bs: [(str(f), int(i)) for x in bs for f, i in zip(x["fname"], x["slice"])]
    assert order(a) != order(c)
    masks = {}
    for x in a:
        for f, m in zip(x["fname"], x["mask"]):
            masks.setdefault(str(f), []).append(m)
    assert len(masks) == 3
    for f, ms in masks.items():
        # One mask per file, drawn from the file's seed.
        want = random_columns((16, 16), fastmri.mask_seed(f, 7))
        for m in ms:
            np.testing.assert_array_equal(m, want)
    assert not np.array_equal(masks["file000.h5"][0], masks["file001.h5"][0])
    assert fastmri.mask_seed("/a/b/file000.h5", 7) == fastmri.mask_seed("file000.h5", 7)
    assert fastmri.mask_seed("file000.h5", 7) != fastmri.mask_seed("file000.h5", 8)


def test_iterator_with_library_masks(tmp_path):
    from mrijax import masks

    folder = _folder(tmp_path)
    mask_fn = functools.partial(masks.random_lines, acceleration=4, center_fraction=0.25)
    b = next(fastmri.iterate_slices(folder, (16, 16), 12, 3, mask_fn=mask_fn))
    for f, m in zip(b["fname"], b["mask"]):
        np.testing.assert_array_equal(m, masks.random_lines((16, 16), 4, 0.25, seed=fastmri.mask_seed(f, 3)))


def test_iterator_filter_order_and_remainder(tmp_path):
    folder = _folder(tmp_path)
    keep_centre = lambda fname, i, n: 1 <= i < n - 1
    batches = list(fastmri.iterate_slices(folder, (16, 16), 2, 0, slice_filter=keep_centre,
                                          shuffle=False, drop_remainder=False))
    got = [(str(f), int(i)) for b in batches for f, i in zip(b["fname"], b["slice"])]
    assert got == [("file000.h5", 1), ("file000.h5", 2), ("file000.h5", 3), ("file001.h5", 1),
                   ("file002.h5", 1), ("file002.h5", 2)]
    assert [b["kspace"].shape[0] for b in batches] == [2, 2, 2]
    batches = list(fastmri.iterate_slices(folder, (16, 16), 4, 0, slice_filter=keep_centre,
                                          drop_remainder=False))
    assert [b["kspace"].shape[0] for b in batches] == [4, 2]
    assert len(list(fastmri.iterate_slices(folder, (16, 16), 4, 0, slice_filter=keep_centre))) == 1


def test_iterator_uses_stored_test_masks(tmp_path):
    folder = tmp_path / "test"
    folder.mkdir()
    write_fastmri(folder / "t0.h5", slices=2, H=32, W=16, kind="test", seed=0)
    write_fastmri(folder / "t1.h5", slices=2, H=32, W=16, kind="test", seed=1)
    b = next(fastmri.iterate_slices(folder, (16, 16), 4, 0, shuffle=False))
    for f, m in zip(b["fname"], b["mask"]):
        with h5py.File(folder / f) as hf:
            np.testing.assert_array_equal(m, np.broadcast_to(hf["mask"][()], (16, 16)))
    # Only measured columns can be non-zero after the H crop.
    assert np.all(b["kspace"][~b["mask"]] == 0)
    both = next(fastmri.iterate_slices(folder, (16, 16), 4, 0, mask_fn=random_columns, shuffle=False))
    np.testing.assert_array_equal(both["mask"], b["mask"] & np.stack(
        [random_columns((16, 16), fastmri.mask_seed(f, 0)) for f in b["fname"]]))
    with pytest.raises(FastMRIFileError, match="does not carry over"):
        fastmri.iterate_slices(folder, (16, 12), 2, 0)


def test_iterator_errors_before_any_batch(tmp_path):
    folder = _folder(tmp_path)
    _write(folder / "zz_bad.h5", kspace=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(FastMRIFileError, match="zz_bad.h5") as info:
        fastmri.iterate_slices(folder, (16, 16), 2, 0)  # raises on the call, not at the first next()
    assert info.value.key == "kspace"

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_fastmri(mixed / "a.h5", slices=2)
    write_fastmri(mixed / "b.h5", slices=2, coils=2)
    with pytest.raises(ValueError, match="mix single-coil and multi-coil"):
        fastmri.iterate_slices(mixed, (16, 16), 2, 0)
    with pytest.raises(ValueError, match="no .h5 files"):
        fastmri.iterate_slices(_empty(tmp_path), (16, 16), 2, 0)
    with pytest.raises(ValueError, match="shape"):
        fastmri.iterate_slices(mixed, (16,), 2, 0)
    with pytest.raises(ValueError, match="batch_size"):
        fastmri.iterate_slices(mixed, (16, 16), 0, 0)
    with pytest.raises(ValueError, match="mask_fn returned"):
        fastmri.iterate_slices(folder.parent / "mixed", (16, 16), 2, 0,
                               mask_fn=lambda shape, seed: np.ones((3, 3), bool))
    with pytest.raises(FileNotFoundError):
        fastmri.iterate_slices(tmp_path / "nowhere", (16, 16), 2, 0)


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d
