"""load_images: a bad image is refused naming its index in the file, and what the loader does
to a user's file (crop, resize, scaling) is logged in one line; the embedded phantoms stay quiet."""

import numpy as np
import pytest

from mrijax import _checks
from mrijax.data.images import load_images


def test_check_finite_images_names_the_first_bad_image():
    x = np.zeros((4, 3, 3), np.float32)
    _checks.check_finite_images(x, "x")                         # all finite: nothing
    x[2, 0, 0] = np.nan
    x[2, 1, 1] = np.inf
    x[3, 0, 1] = -np.inf
    with pytest.raises(ValueError, match=r"^x: image 2 holds 2 non-finite value\(s\) \(NaN or inf\) "
                                         r"\(and 1 more image\(s\)\)$"):
        _checks.check_finite_images(x, "x")
    # With the images' indices in their source, the message names the source's index.
    with pytest.raises(ValueError, match=r"^x: image 7 holds"):
        _checks.check_finite_images(x[2:3], "x", indices=[7])
    _checks.check_finite_images(np.zeros((3, 3), np.int32), "ints")   # integers are always finite


def test_a_nan_image_is_refused_naming_its_index_in_the_file(tmp_path):
    x = np.random.default_rng(0).random((5, 16, 16))
    x[3, 2, 2] = np.nan
    path = tmp_path / "stack.npy"
    np.save(path, x)
    # count=2 of 5 takes images 1 and 3: the message names 3, the file's index, and the spec.
    with pytest.raises(ValueError, match=rf"--images '{path}': image 3 holds 1 non-finite value"):
        load_images(str(path), 16, count=2)
    assert load_images(str(path), 16, count=1).shape == (1, 16, 16)    # image 2 alone is fine


def test_a_cropped_resized_rescaled_file_is_logged_once(tmp_path):
    x = np.random.default_rng(1).random((2, 40, 50)) * 3 + 2        # values in [2, 5]
    path = tmp_path / "stack.npy"
    np.save(path, x)
    lines = []
    out = load_images(str(path), 32, count=None, log=lines.append)
    assert out.shape == (2, 32, 32)
    (line,) = lines
    assert line.startswith(f"--images '{path}': 2 image(s) of 40x50")
    assert "centre-cropped to 40x40" in line and "resized to 32x32" in line
    assert "scaled to [0, 1] from its own [min, max]" in line
    lo, hi = out.min(), out.max()
    assert lo == 0 and hi == pytest.approx(1.0)


def test_a_complex_file_logs_its_division_and_an_unchanged_file_logs_nothing(tmp_path):
    rng = np.random.default_rng(2)
    z = (rng.standard_normal((16, 16)) + 1j * rng.standard_normal((16, 16))) * 4
    np.save(tmp_path / "z.npy", z.astype(np.complex64))
    lines = []
    load_images(str(tmp_path / "z.npy"), 16, log=lines.append)
    (line,) = lines
    assert "1 image(s) of 16x16" in line and "divided by its largest modulus" in line and "phase kept" in line
    assert "cropped" not in line and "resized" not in line
    # Already square, of the requested size and in [0, 1] with min 0 and max 1: nothing to say.
    u = rng.random((16, 16))
    u = (u - u.min()) / (u.max() - u.min())
    np.save(tmp_path / "u.npy", u)
    lines = []
    load_images(str(tmp_path / "u.npy"), 16, log=lines.append)
    assert lines == []


@pytest.mark.parametrize("spec", ["shepp_logan", "ellipses", "shepp_logan_variants"])
def test_embedded_phantoms_are_quiet(spec):
    lines = []
    load_images(spec, 24, count=2, log=lines.append)
    assert lines == []


def test_the_default_log_is_the_module_logger(tmp_path, caplog):
    np.save(tmp_path / "big.npy", np.random.default_rng(3).random((1, 20, 20)))
    with caplog.at_level("INFO", logger="mrijax.data.images"):
        load_images(str(tmp_path / "big.npy"), 10)
    messages = [r.getMessage() for r in caplog.records if r.name == "mrijax.data.images"]
    assert len(messages) == 1 and "1 image(s) of 20x20, resized to 10x10" in messages[0]


def test_a_missing_npz_key_is_a_value_error_naming_the_keys(tmp_path):
    # A bad --images value like every other (a ValueError: one "error:" line in the scripts).
    np.savez(tmp_path / "two.npz", images=np.zeros((1, 8, 8)), target=np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match=r"two.npz: no array 'nope'; it holds \['images', 'target'\]"):
        load_images(f"{tmp_path / 'two.npz'}:nope", 8)
    with pytest.raises(ValueError, match=r"no array 'nope'"):
        load_images(f"kspace:{tmp_path / 'two.npz'}:nope", 8)


def test_an_empty_array_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "empty.npy"
    np.save(path, np.zeros((0, 0)))
    with pytest.raises(ValueError, match="empty.npy.*the array is empty"):
        load_images(str(path), 32)
