"""End-to-end tests of experiments/sampling_demo.py at 32x32."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from experiments import sampling_demo
from mrijax import checkpoint, fourier, masks, metrics
from mrijax.data import phantoms

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = {"sampling.png", "results.json", "arrays.npz"}


def _load(out_dir):
    with open(out_dir / "results.json") as f:
        result = json.load(f)
    with np.load(out_dir / "arrays.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return result, arrays


def test_command_line_run_writes_the_files_and_numbers_equal_library_calls(tmp_path):
    out_dir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.sampling_demo", "--size=32", f"--out_dir={out_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # Exactly the three files, no temporary leftovers, nothing written elsewhere in tmp_path.
    assert set(os.listdir(out_dir)) == FILES
    assert os.listdir(tmp_path) == ["demo"]
    assert (out_dir / "sampling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result, arrays = _load(out_dir)
    assert result["flags"] == dict(size=32, mask="gaussian_lines", acceleration=3.0, seed=0, noise=0.0,
                                   out_dir=str(out_dir))
    # The same experiment through the library directly.
    mask = masks.make("gaussian_lines", (32, 32), acceleration=3.0, seed=0)
    target = phantoms.shepp_logan(32)
    zero_filled = fourier.adjoint(fourier.forward(target, mask), mask)
    np.testing.assert_array_equal(arrays["mask"], mask)
    np.testing.assert_array_equal(arrays["target"], target)
    np.testing.assert_allclose(arrays["zero_filled"], np.asarray(zero_filled), atol=1e-6)
    assert result["sampling_rate"] == pytest.approx(mask.mean(), abs=1e-12)
    assert result["samples"] == int(mask.sum())
    assert result["psnr_db"] == pytest.approx(float(metrics.psnr(zero_filled, target)), abs=1e-4)
    assert result["ssim"] == pytest.approx(float(metrics.ssim(zero_filled, target)), abs=1e-5)
    assert result["nmse"] == pytest.approx(float(metrics.nmse(zero_filled, target)), rel=1e-5)
    # Zero filling at R = 3 is visibly worse than the target, but not garbage.
    assert 10 < result["psnr_db"] < 30 and 0.2 < result["ssim"] < 0.95
    assert f"PSNR {result['psnr_db']:.2f} dB" in proc.stdout


def test_in_process_noisy_radial_run_is_consistent_and_reproducible(tmp_path):
    args = ["sampling_demo", "--size=32", "--mask=radial", "--acceleration=4", "--noise=0.05", "--seed=3"]
    assert sampling_demo.main(args + [f"--out_dir={tmp_path / 'a'}"]) == 0
    assert sampling_demo.main(args + [f"--out_dir={tmp_path / 'b'}"]) == 0
    result, arrays = _load(tmp_path / "a")
    result_b, arrays_b = _load(tmp_path / "b")
    for name in arrays:
        np.testing.assert_array_equal(arrays[name], arrays_b[name])
    assert {k: v for k, v in result.items() if k != "flags"} == {k: v for k, v in result_b.items() if k != "flags"}

    mask, kspace, zf, target = arrays["mask"], arrays["kspace"], arrays["zero_filled"], arrays["target"]
    assert result["sampling_rate"] >= 0.25 and result["sampling_rate"] == pytest.approx(mask.mean())
    np.testing.assert_array_equal(mask, masks.nested("radial", (32, 32), [0.25])[0])
    # Noise only on the samples, of about the requested size, and zf = A* y.
    assert np.all(kspace[~mask] == 0)
    residual = kspace[mask] - np.asarray(fourier.forward(target, mask))[mask]
    assert 0.03 < np.sqrt(np.mean(np.abs(residual) ** 2)) < 0.07
    np.testing.assert_allclose(zf, np.asarray(fourier.adjoint(kspace, mask)), atol=1e-6)
    # The JSON numbers are the metrics of the saved arrays.
    assert result["psnr_db"] == pytest.approx(float(metrics.psnr(zf, target)), abs=1e-4)
    assert result["ssim"] == pytest.approx(float(metrics.ssim(zf, target)), abs=1e-5)
    # Noise costs quality relative to the noiseless run with the same mask.
    assert sampling_demo.main(args[:-2] + ["--noise=0", f"--out_dir={tmp_path / 'c'}"]) == 0
    clean, _ = _load(tmp_path / "c")
    assert clean["psnr_db"] > result["psnr_db"]


def test_every_mask_kind_runs_at_its_acceleration(tmp_path):
    for kind in masks.KINDS:
        mask = masks.for_acceleration(kind, (32, 32), 3.0, seed=1)
        assert mask.shape == (32, 32) and mask.dtype == bool
        assert 0.2 < mask.mean() < 0.45, kind


def test_bad_flags_and_impossible_masks_fail_cleanly_without_writing(tmp_path, capsys):
    out_dir = tmp_path / "never"
    assert sampling_demo.main(["sampling_demo", "--size=32"]) == 2                       # --out_dir missing
    err = capsys.readouterr().err
    assert "out_dir" in err and err.startswith("error: ") and err.count("\n") == 1   # one line
    assert sampling_demo.main(["sampling_demo", f"--out_dir={out_dir}", "--mask=spiral"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert sampling_demo.main(["sampling_demo", f"--out_dir={out_dir}", "--noise=nan"]) == 2
    assert "--noise=nan: must be a finite number" in capsys.readouterr().err
    assert sampling_demo.main(["sampling_demo", f"--out_dir={out_dir}", "--size=4"]) == 2
    assert sampling_demo.main(["sampling_demo", f"--out_dir={out_dir}", "--acceleration=0.5"]) == 2
    # gaussian_lines keeps 10 centre lines; 16 // 4 = 4 lines cannot hold them.
    assert sampling_demo.main(["sampling_demo", f"--out_dir={out_dir}", "--size=16", "--acceleration=4"]) == 2
    assert "sample_n" in capsys.readouterr().err
    assert not out_dir.exists()
    assert sampling_demo.main(["sampling_demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--acceleration" in out
    assert out.splitlines()[0] == sampling_demo.__doc__.strip().splitlines()[0]   # what it does, first


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    path = tmp_path / "x.bin"
    checkpoint.write_atomically(str(path), lambda f: f.write(b"old"))
    checkpoint.write_atomically(str(path), lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"

    def failing(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        checkpoint.write_atomically(str(path), failing)
    assert path.read_bytes() == b"new"          # the old complete file survives
    assert os.listdir(tmp_path) == ["x.bin"]    # and no temporary file is left
