"""Slices of the MNI152 T1 template that ships inside nilearn's wheel."""

import importlib.util
import sys

import numpy as np
import pytest

from mrijax.data import io, mni

needs_template = pytest.mark.skipif(
    importlib.util.find_spec("nilearn") is None or importlib.util.find_spec("nibabel") is None,
    reason="nilearn (which ships the MNI152 template) and nibabel are optional: pip install mrijax[data]")


@needs_template
def test_template_found_without_importing_nilearn():
    was_imported = "nilearn" in sys.modules
    path = mni.mni_template_path()
    assert path.name == mni.MNI_T1_FILENAME and path.is_file()
    assert ("nilearn" in sys.modules) == was_imported


@needs_template
def test_shape_range_determinism():
    x = mni.mni_slices(size=48, plane="axial", count=3)
    assert x.shape == (3, 48, 48) and x.dtype == np.float32
    np.testing.assert_allclose(x.min(axis=(1, 2)), 0)
    np.testing.assert_allclose(x.max(axis=(1, 2)), 1)
    np.testing.assert_array_equal(x, mni.mni_slices(size=48, plane="axial", count=3))
    # Brain fills a good part of each slice (cropped to the brain's box), background is 0.
    brain = (x > 0.05).mean(axis=(1, 2))
    border = np.concatenate([x[:, 0, :], x[:, -1, :], x[:, :, 0], x[:, :, -1]], axis=1)
    assert np.all(brain > 0.3) and border.max() < 0.05
    for plane in ("coronal", "sagittal"):
        assert mni.mni_slices(size=32, plane=plane, count=2).shape == (2, 32, 32)


@needs_template
def test_default_slices_are_central_and_count_spreads_them():
    candidates = mni.brain_slice_indices("axial")
    assert 40 < candidates.size < 189  # central part only, not the whole 189-voxel axis
    assert np.all(np.diff(candidates) == 1)  # a contiguous slab
    every = mni.mni_slices(size=16, plane="axial")
    assert every.shape == (candidates.size, 16, 16)
    middle = candidates[candidates.size // 2]
    np.testing.assert_array_equal(mni.mni_slices(size=16, count=1),
                                  mni.mni_slices(size=16, indices=[middle]))


@needs_template
def test_slice_matches_template_voxels_in_display_orientation():
    # With size equal to the crop side there is no resize: the slice is the template's voxels,
    # shown anterior-up with the patient's right on the left.
    volume = mni._template()
    k = 95
    support = io.display_orientation((volume > mni._BRAIN_LEVEL * volume.max()).any(axis=2))
    top, left, side = mni._square_box(support)
    got = mni.mni_slices(size=int(side), indices=[k])[0]
    want = io.display_orientation(volume[:, :, k])
    want = mni._crop_padded(want[None], top, left, side)[0]
    np.testing.assert_allclose(got, io.scale_unit(want), atol=1e-6)
    # Anatomy check: the ventricles (dark) sit in the middle, the brain's front-back extent is
    # vertical (axial brains are longer front-to-back than left-to-right).
    rows = np.flatnonzero((got > 0.05).any(axis=1))
    cols = np.flatnonzero((got > 0.05).any(axis=0))
    assert rows.size > cols.size


@needs_template
def test_load_images_mni_spec():
    from mrijax.data.images import load_images

    np.testing.assert_array_equal(load_images("mni", 32, count=2), mni.mni_slices(32, "axial", count=2))
    np.testing.assert_array_equal(load_images("MNI:coronal", 32, count=1),
                                  mni.mni_slices(32, "coronal", count=1))


@needs_template
def test_errors():
    with pytest.raises(ValueError, match="plane"):
        mni.mni_slices(16, plane="oblique")
    with pytest.raises(ValueError, match="not both"):
        mni.mni_slices(16, indices=[90], count=1)
    with pytest.raises(ValueError, match="count"):
        mni.mni_slices(16, count=10_000)
    with pytest.raises(ValueError, match="indices"):
        mni.mni_slices(16, indices=[500])
    with pytest.raises(ValueError, match="size"):
        mni.mni_slices(0)


def test_missing_nilearn_message(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r"nilearn.*pip install mrijax\[data\]"):
        mni.mni_template_path()
