"""Readers for users' files (.npy/.npz/.mat, NIfTI, DICOM) and the load_images entry point."""

import numpy as np
import pytest
import scipy.io

from mrijax.data import images as images_mod
from mrijax.data import io
from mrijax.data.images import load_images


# ----------------------------------------------------------------------------- npy / npz


def test_npy_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    for a in (rng.standard_normal((3, 8, 9)).astype(np.float32),
              (rng.standard_normal((8, 8)) + 1j * rng.standard_normal((8, 8))).astype(np.complex64),
              np.arange(12, dtype=np.int16).reshape(3, 4)):
        p = tmp_path / f"a_{a.dtype}.npy"
        np.save(p, a)
        got = io.load_array(p)
        assert got.dtype == a.dtype
        np.testing.assert_array_equal(got, a)
    with pytest.raises(ValueError, match="key"):
        io.load_array(p, key="x")


def test_npy_pickle_refused(tmp_path):
    p = tmp_path / "evil.npy"
    np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="unpickl") as info:
        io.load_array(p)
    assert str(p) in str(info.value)
    q = tmp_path / "evil.npz"
    np.savez(q, images=np.zeros((2, 2)), meta=np.array([{"a": 1}], dtype=object))
    np.testing.assert_array_equal(io.load_array(q, "images"), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="unpickl") as info:
        io.load_array(q, "meta")
    assert str(q) in str(info.value) and "'meta'" in str(info.value)


def test_npz_keys(tmp_path):
    a, b = np.ones((2, 4, 4), np.float32), np.zeros((4, 4), np.complex64)
    one = tmp_path / "one.npz"
    np.savez(one, images=a)
    np.testing.assert_array_equal(io.load_array(one), a)
    two = tmp_path / "two.npz"
    np.savez_compressed(two, images=a, kspace=b)
    np.testing.assert_array_equal(io.load_array(two, "kspace"), b)
    with pytest.raises(ValueError, match=r"2 arrays \['images', 'kspace'\]; pass key="):
        io.load_array(two)
    with pytest.raises(KeyError, match="two.npz.*'target'.*images"):
        io.load_array(two, "target")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="bad.npz"):
        io.load_array(bad)


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npy"):
        io.load_array(tmp_path / "nothing.npy")
    p = tmp_path / "x.csv"
    p.write_text("1,2")
    with pytest.raises(ValueError, match="unsupported suffix '.csv'"):
        io.load_array(p)
    with pytest.raises(TypeError, match="path"):
        io.load_array(3)


# ----------------------------------------------------------------------------- .mat


def test_mat_v5_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.standard_normal((3, 6, 5))
    ksp = rng.standard_normal((6, 5)) + 1j * rng.standard_normal((6, 5))
    p = tmp_path / "data.mat"
    scipy.io.savemat(p, {"img": img, "ksp": ksp})
    np.testing.assert_array_equal(io.load_array(p, "img"), img)
    np.testing.assert_array_equal(io.load_array(p, "ksp"), ksp)
    with pytest.raises(ValueError, match="2 variables"):
        io.load_array(p)
    with pytest.raises(KeyError, match="'nope'"):
        io.load_array(p, "nope")
    single = tmp_path / "single.mat"
    scipy.io.savemat(single, {"x": img})
    np.testing.assert_array_equal(io.load_array(single), img)
    cells = tmp_path / "cells.mat"
    scipy.io.savemat(cells, {"c": np.array([np.zeros(2), "text"], dtype=object)})
    with pytest.raises(ValueError, match="'c' is not a numeric array"):
        io.load_array(cells)


def write_mat73(path, variables):
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte header block, arrays stored
    in reversed (column-major) axis order, complex as a {real, imag} compound."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for name, a in variables.items():
            a = np.asarray(a)
            if np.iscomplexobj(a):
                comp = np.empty(a.T.shape, dtype=[("real", "<f8"), ("imag", "<f8")])
                comp["real"], comp["imag"] = a.T.real, a.T.imag
                f.create_dataset(name, data=comp)
            else:
                f.create_dataset(name, data=a.T)
            f[name].attrs["MATLAB_class"] = np.bytes_(b"double")
        f.create_group("#refs#")
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"  # version 0x0200, endian 'IM'
    with open(path, "r+b") as f:
        f.write(header)


def test_mat_v73(tmp_path):
    pytest.importorskip("h5py")
    rng = np.random.default_rng(2)
    img = rng.standard_normal((3, 6, 5))
    ksp = rng.standard_normal((6, 5)) + 1j * rng.standard_normal((6, 5))
    p = tmp_path / "v73.mat"
    write_mat73(p, {"img": img, "ksp": ksp})
    with pytest.raises(NotImplementedError):  # the file really is what scipy calls v7.3
        scipy.io.loadmat(p)
    got = io.load_array(p, "img")
    assert got.shape == (3, 6, 5)
    np.testing.assert_array_equal(got, img)
    np.testing.assert_array_equal(io.load_array(p, "ksp"), ksp)
    with pytest.raises(ValueError, match="2 variables"):
        io.load_array(p)


# ----------------------------------------------------------------------------- NIfTI


def test_display_orientation_is_radiological():
    # RAS+ axial slice (x: towards the patient's right, y: towards anterior).
    s = np.zeros((5, 7))
    s[4, 0] = 1  # far right, posterior
    s[0, 6] = 2  # far left, anterior
    d = io.display_orientation(s)
    assert d.shape == (7, 5)
    assert d[0, 4] == 2  # anterior at the top, patient's left on the image's right
    assert d[6, 0] == 1  # posterior at the bottom, patient's right on the image's left


def test_nifti_round_trip_and_reorientation(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(3)
    vol = rng.random((6, 7, 4)).astype(np.float32) * 100
    ras = tmp_path / "ras.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), ras)
    got = io.load_nifti(ras)
    assert got.shape == (4, 7, 6) and got.dtype == np.float32
    want = io.scale_unit(io.display_orientation(np.moveaxis(vol, 2, 0)))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.allclose(got.min(axis=(1, 2)), 0) and np.allclose(got.max(axis=(1, 2)), 1)
    coronal = io.load_nifti(ras, axis=1, scale=False)
    np.testing.assert_allclose(coronal, io.display_orientation(np.moveaxis(vol, 1, 0)), rtol=1e-6)
    # The same anatomy stored left-right flipped (an LAS affine) reads back identically.
    las = tmp_path / "las.nii"
    affine = np.diag([-1.0, 1, 1, 1])
    affine[0, 3] = 5
    nib.save(nib.Nifti1Image(vol[::-1].copy(), affine), las)
    np.testing.assert_allclose(io.load_nifti(las), got, atol=1e-6)
    # 2-D image, and a volume with a singleton 4th axis.
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(vol[:, :, 0], np.eye(4)), flat)
    assert io.load_nifti(flat).shape == (1, 7, 6)
    four = tmp_path / "four.nii"
    nib.save(nib.Nifti1Image(vol[..., None], np.eye(4)), four)
    np.testing.assert_allclose(io.load_nifti(four), got, atol=1e-6)


def test_nifti_errors(tmp_path):
    nib = pytest.importorskip("nibabel")
    p = tmp_path / "bad.nii"
    p.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="bad.nii"):
        io.load_nifti(p)
    four = tmp_path / "four.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)), four)
    with pytest.raises(ValueError, match="neither 2-D nor 3-D"):
        io.load_nifti(four)
    ok = tmp_path / "ok.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), ok)
    with pytest.raises(ValueError, match="axis"):
        io.load_nifti(ok, axis=3)
    nan = tmp_path / "nan.nii"
    nib.save(nib.Nifti1Image(np.full((2, 2, 2), np.nan, np.float32), np.eye(4)), nan)
    with pytest.raises(ValueError, match="NaN"):
        io.load_nifti(nan)


# ----------------------------------------------------------------------------- DICOM


def write_dicom(path, pixels, instance=None, position=None, slope=None, intercept=None):
    """A minimal single-frame MR DICOM file (uncompressed, explicit VR little endian)."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    if instance is not None:
        ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = [0.0, 0.0, float(position)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.save_as(path, enforce_file_format=True)


def test_dicom_folder_sorted_and_scaled(tmp_path):
    pytest.importorskip("pydicom")
    rng = np.random.default_rng(4)
    slices = [rng.integers(0, 1000, (6, 5)).astype(np.uint16) for _ in range(3)]
    folder = tmp_path / "series"
    folder.mkdir()
    # File names in the opposite order to the instance numbers.
    for i, s in enumerate(slices):
        write_dicom(folder / f"z{9 - i}.dcm", s, instance=i + 1, slope=2.0, intercept=-10.0)
    (folder / "notes.txt").write_text("not DICOM")  # skipped
    got = io.load_dicom(folder)
    assert got.shape == (3, 6, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, io.scale_unit(np.stack(slices).astype(float)), atol=1e-6)
    raw = io.load_dicom(folder, scale=False)
    np.testing.assert_allclose(raw, np.stack(slices) * 2.0 - 10.0)
    one = io.load_dicom(folder / "z8.dcm", scale=False)
    np.testing.assert_allclose(one, slices[1][None] * 2.0 - 10.0)


def test_dicom_position_beats_instance_number(tmp_path):
    pytest.importorskip("pydicom")
    folder = tmp_path / "series"
    folder.mkdir()
    for i, (inst, pos) in enumerate(((1, 30.0), (2, 10.0), (3, 20.0))):
        write_dicom(folder / f"s{i}.dcm", np.full((4, 4), 100 * (i + 1), np.uint16), instance=inst, position=pos)
    raw = io.load_dicom(folder, scale=False)
    np.testing.assert_array_equal(raw[:, 0, 0], [200, 300, 100])  # by position 10, 20, 30


def test_dicom_errors(tmp_path):
    pytest.importorskip("pydicom")
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="bad.dcm"):
        io.load_dicom(bad)
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_dicom(folder / "a.dcm", np.zeros((4, 4), np.uint16), instance=1)
    write_dicom(folder / "b.dcm", np.zeros((5, 4), np.uint16), instance=2)
    with pytest.raises(ValueError, match="different sizes"):
        io.load_dicom(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.txt").write_text("no")
    with pytest.raises(ValueError, match="no DICOM image"):
        io.load_dicom(empty)


def test_missing_optional_dependency(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImportError, match=r"pydicom.*pip install mrijax\[data\]") as e:
        io.load_dicom(tmp_path)
    # The hint works in a checkout too, where mrijax[data] is not an installable name.
    assert "in a checkout: pip install -e '.[data]'" in str(e.value)


def test_scale_unit():
    x = np.array([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]])
    got = io.scale_unit(x)
    np.testing.assert_allclose(got[0], [[0, 0.5], [0.25, 1]])
    np.testing.assert_array_equal(got[1], 0)  # a constant slice is 0, not NaN


# ----------------------------------------------------------------------------- load_images


def test_load_images_from_arrays(tmp_path):
    rng = np.random.default_rng(5)
    stack = rng.random((5, 20, 28)).astype(np.float32) * 7 + 1
    p = tmp_path / "stack.npy"
    np.save(p, stack)
    # Already square after the crop: no resize, only the centre crop and the [0, 1] scaling.
    got = load_images(str(p), 20, count=None)
    assert got.shape == (5, 20, 20) and got.dtype == np.float32
    np.testing.assert_allclose(got, io.scale_unit(stack[:, :, 4:24]), atol=1e-6)
    # count picks evenly spread images; count=1 is the middle one.
    np.testing.assert_allclose(load_images(p, 20, count=1), got[2:3])
    np.testing.assert_allclose(load_images(p, 20, count=2), got[[1, 3]])
    small = load_images(p, 10, count=None)
    assert small.shape == (5, 10, 10)
    assert small.min() >= 0 and np.allclose(small.max(axis=(1, 2)), 1)
    with pytest.raises(ValueError, match="holds only 5"):
        load_images(p, 10, count=6)


def test_load_images_complex_keeps_phase(tmp_path):
    rng = np.random.default_rng(6)
    z = (rng.standard_normal((16, 16)) + 1j * rng.standard_normal((16, 16))).astype(np.complex64)
    p = tmp_path / "z.npz"
    np.savez(p, img=z, other=np.zeros(3))
    got = load_images(f"{p}:img", 16)
    assert got.shape == (1, 16, 16) and got.dtype == np.complex64
    np.testing.assert_allclose(got[0], z / np.abs(z).max(), rtol=1e-5, atol=1e-6)
    resized = load_images(f"{p}:img", 8)
    assert resized.dtype == np.complex64 and np.abs(resized).max() == pytest.approx(1.0)


def test_load_images_resize_is_antialiased(tmp_path):
    # A fine checkerboard cannot be represented at half size: an antialiased resize turns it
    # grey, a naive subsample would keep a full-contrast (aliased) pattern.
    n = 32
    board = np.indices((n, n)).sum(0) % 2 + 0.0
    board[:, :2] = 0.0
    board[:, -2:] = 1.0  # keep the range at [0, 1] after resize
    p = tmp_path / "board.npy"
    np.save(p, board)
    got = load_images(p, 16)[0]
    centre = got[4:12, 4:12]
    assert centre.std() < 0.05


def test_load_images_mat_fastmri_nifti_dicom(tmp_path):
    h5py = pytest.importorskip("h5py")
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(7)
    # .mat (v5) with a single variable.
    m = tmp_path / "img.mat"
    scipy.io.savemat(m, {"im": rng.random((12, 12))})
    assert load_images(m, 12).shape == (1, 12, 12)
    # fastMRI: the targets of the chosen slices, from the k-space.
    h5 = tmp_path / "file1.h5"
    kspace = (rng.standard_normal((3, 24, 20)) + 1j * rng.standard_normal((3, 24, 20))).astype(np.complex64)
    with h5py.File(h5, "w") as f:
        f.create_dataset("kspace", data=kspace)
        f.create_dataset("reconstruction_esc", data=np.zeros((3, 12, 12), np.float32))
    from mrijax.data.fastmri import target_image

    got = load_images(h5, 12, count=1)
    np.testing.assert_allclose(got[0], io.scale_unit(np.asarray(target_image(kspace[1], (12, 12)))), atol=1e-5)
    # NIfTI: axial slices.
    nii = tmp_path / "v.nii.gz"
    vol = rng.random((10, 10, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), nii)
    np.testing.assert_allclose(load_images(nii, 10, count=None), io.load_nifti(nii), atol=1e-6)
    # DICOM file and folder.
    pytest.importorskip("pydicom")
    folder = tmp_path / "dcm"
    folder.mkdir()
    for i in range(2):
        write_dicom(folder / f"{i}.dcm", rng.integers(0, 500, (8, 8)).astype(np.uint16), instance=i)
    np.testing.assert_allclose(load_images(folder, 8, count=None), io.load_dicom(folder), atol=1e-6)
    assert load_images(folder / "0.dcm", 8).shape == (1, 8, 8)


def test_load_images_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown image spec 'cats'.*shepp_logan.*mni:axial.*PATH.h5"):
        load_images("cats", 16)
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        load_images(str(tmp_path / "nope.npy"), 16)
    p = tmp_path / "nan.npy"
    a = np.ones((4, 4))
    a[1, 1] = np.nan
    np.save(p, a)
    with pytest.raises(ValueError, match="non-finite"):
        load_images(p, 4)
    q = tmp_path / "vec.npy"
    np.save(q, np.ones(5))
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(H, W\)"):
        load_images(q, 4)
    with pytest.raises(ValueError, match="size"):
        load_images("phantom", 0)
    with pytest.raises(ValueError, match="count"):
        load_images("phantom", 8, count=0)


def test_load_images_phantoms():
    phantoms = pytest.importorskip("mrijax.data.phantoms", reason="mrijax.data.phantoms not written yet")
    sl = load_images("shepp_logan", 32, count=2)
    assert sl.shape == (2, 32, 32) and sl.dtype == np.float32
    np.testing.assert_allclose(sl[0], io.scale_unit(np.asarray(phantoms.shepp_logan(32))), atol=1e-6)
    np.testing.assert_array_equal(sl[0], sl[1])
    np.testing.assert_array_equal(load_images("Phantom", 32), sl[:1])
    ell = load_images("ellipses", 32, count=3, seed=1)
    assert ell.shape == (3, 32, 32) and ell.min() >= 0 and np.allclose(ell.max(axis=(1, 2)), 1)
    np.testing.assert_array_equal(ell, load_images("ellipses", 32, count=3, seed=1))
    assert not np.array_equal(ell, load_images("ellipses", 32, count=3, seed=2))


def test_load_images_shepp_logan_variants():
    from mrijax.data import phantoms

    got = load_images("shepp_logan_variants", 32, count=3, seed=1)
    assert got.shape == (3, 32, 32) and got.dtype == np.float32
    assert len({im.tobytes() for im in got}) == 3
    # load_images scales each image by its own min (0, outside the head) and max.
    expected = phantoms.shepp_logan_variants(3, 32, 1)
    np.testing.assert_allclose(got, io.scale_unit(expected), atol=1e-6)
    np.testing.assert_allclose(got, expected / expected.max(axis=(1, 2), keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(got, load_images(" Shepp-Logan-Variants ", 32, count=3, seed=1))
    np.testing.assert_array_equal(load_images("shepp_logan_variants", 32, seed=1), got[:1])
    assert not np.array_equal(got, load_images("shepp_logan_variants", 32, count=3, seed=2))
    assert "shepp_logan_variants" in images_mod.SPEC_OPTIONS
    # The generator of the unlimited sources (what a training loop draws fresh images from).
    assert images_mod.image_generator("shepp_logan_variants") is phantoms.shepp_logan_variant
    assert images_mod.image_generator("Ellipses") is phantoms.random_ellipses
    for spec in ("shepp_logan", "phantom", "mni:axial", "fastmri:/data", "x.npy"):
        assert images_mod.image_generator(spec) is None
    np.testing.assert_array_equal(images_mod.image_generator("shepp_logan_variants")(32, [1, 2]), expected[2])


def test_center_crop_square():
    x = np.arange(2 * 5 * 8).reshape(2, 5, 8)
    np.testing.assert_array_equal(io.center_crop_square(x), x[:, :, 1:6])
    y = np.arange(7 * 4).reshape(7, 4)
    np.testing.assert_array_equal(io.center_crop_square(y), y[1:5])
