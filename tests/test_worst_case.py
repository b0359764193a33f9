"""The main job end to end: files, numbers equal to library calls, resume, bad flags."""

import json
import os

import numpy as np
import pytest

from experiments import common, worst_case
from mrijax import attacks, masks, metrics

TINY = ["--size=32", "--images=ellipses", "--steps=6", "--snapshots=2,4,6", "--chunk=3", "--radius=0.05"]


def _run(out_dir, *extra):
    return worst_case.main(["worst_case", f"--out_dir={out_dir}", *TINY, *extra])


def test_writes_every_file_and_its_numbers_equal_library_calls(tmp_path):
    out = tmp_path / "run"
    assert _run(out, "--num_images=2", "--batch=2", "--noise_draws=3", "--cs_iters=5",
                "--lipschitz_iters=3") == 0
    for name in ("perturbations_image0.png", "perturbations_image1.png", "perturbations_rescaled_image0.png",
                 "history.png", "results.json", "arrays.npz", "run_config.json", "batch0.npz"):
        assert (out / name).is_file(), name
    assert not (out / "state_batch0.npz").exists()  # the resume state goes once the batch is done
    res = json.loads((out / "results.json").read_text())
    arr = common.load_npz(str(out / "arrays.npz"))

    mask = masks.for_acceleration("gaussian_lines", (32, 32), 3.0, 0, sample_n=8)
    np.testing.assert_array_equal(arr["mask"], mask)
    recon, _ = common.load_reconstruction(common.DEFAULT_CHECKPOINT, mask)
    x = arr["x"]
    snaps = arr["snapshots"]                                   # (S, B, H, W)
    assert snaps.shape == (3, 2, 32, 32)
    ev = attacks.evaluate(recon, x, mask, snaps)
    np.testing.assert_allclose(arr["psnr_drop"], np.asarray(ev["psnr_drop"]), atol=1e-3)
    np.testing.assert_allclose(arr["diff_norm"], np.asarray(ev["diff_norm"]), rtol=1e-4, atol=1e-6)
    for i, image in enumerate(res["images"]):
        xn = np.linalg.norm(x[i])
        assert image["x_norm"] == pytest.approx(xn, rel=1e-5)
        assert image["radius"] == pytest.approx(0.05 * xn, rel=1e-5)
        assert image["psnr_clean"] == pytest.approx(float(metrics.psnr(np.abs(arr["clean"][i]), x[i])), abs=1e-3)
        for s, snap in enumerate(image["snapshots"]):
            rn = np.linalg.norm(snaps[s, i])
            assert snap["r_norm"] == pytest.approx(rn, rel=1e-4)
            assert rn <= 0.05 * xn * (1 + 1e-5)  # the projected search stays in the ball
            assert snap["psnr_drop"] == pytest.approx(float(ev["psnr_drop"][s, i]), abs=1e-3)
            # The noise baseline draws perturbations of exactly this norm.
            assert len(arr["noise_psnr_drop"][i, s]) == 3
    # The reported best start is the one with the largest output change.
    np.testing.assert_array_equal(arr["best_start"], np.argmax(arr["start_diff_norm"], axis=1))
    assert res["snapshot_iterations"] == [2, 4, 6]
    assert "lipschitz_gain" in res["images"][0]
    assert res["sampling_rate"] == pytest.approx(float(mask.mean()))


def test_resume_after_an_interruption_gives_the_uninterrupted_result(tmp_path, monkeypatch):
    flags = ["--num_images=2", "--batch=1", "--noise_draws=0", "--nocompare_cs"]
    assert _run(tmp_path / "whole", *flags) == 0
    whole = common.load_npz(str(tmp_path / "whole" / "arrays.npz"))

    # Interrupt the second batch right after its first chunk was saved.
    real_save = common.save_npz
    saves = []

    def save_then_stop(path, **arrays):
        real_save(path, **arrays)
        saves.append(os.path.basename(path))
        if os.path.basename(path) == "state_batch1.npz":
            raise KeyboardInterrupt
    monkeypatch.setattr(common, "save_npz", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "cut", *flags)
    monkeypatch.setattr(common, "save_npz", real_save)
    assert (tmp_path / "cut" / "batch0.npz").exists()
    state = common.load_npz(str(tmp_path / "cut" / "state_batch1.npz"))
    assert int(state["t"]) == 3

    # Resume: batch 0 is loaded, not recomputed; batch 1 goes on from iteration 3.
    calls = []
    real_attack = worst_case._attack_batch
    monkeypatch.setattr(worst_case, "_attack_batch", lambda fv, j, *a: calls.append(j) or real_attack(fv, j, *a))
    assert _run(tmp_path / "cut", *flags, "--resume") == 0
    assert calls == [1]
    resumed = common.load_npz(str(tmp_path / "cut" / "arrays.npz"))
    for k in ("r", "snapshots", "perturbed", "history_diff_norm"):
        np.testing.assert_allclose(resumed[k], whole[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("extra, message", [
    (["--region=0.5,0.5,0.2,0.9"], "--region"),
    (["--snapshots=0,3"], "--snapshots"),
    (["--model=/nonexistent/folder"], "checkpoint"),
    (["--model=deepmri_npz"], "--weights"),
])
def test_bad_flags_fail_fast_with_a_message(tmp_path, capsys, extra, message):
    assert _run(tmp_path / "bad", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad" / "run_config.json").exists()


def test_an_existing_run_needs_resume_and_the_same_flags(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    common.save_json(str(out / "run_config.json"), {"steps": 6})
    assert _run(out, "--noise_draws=0", "--nocompare_cs") == 2
    assert "--resume" in capsys.readouterr().err
    assert _run(out, "--noise_draws=0", "--nocompare_cs", "--resume") == 2
    assert "differ" in capsys.readouterr().err


def test_zero_filled_reference_has_gain_exactly_one(tmp_path):
    # f(y) = A* y: the output change A* A r has the norm of A r, whatever r the search finds.
    out = tmp_path / "zf"
    assert _run(out, "--model=zero_filled", "--noise_draws=0", "--nocompare_cs") == 0
    res = json.loads((out / "results.json").read_text())
    assert res["model"] == {"model": "zero_filled"}
    for snap in res["images"][0]["snapshots"]:
        assert snap["gain"] == pytest.approx(1.0, rel=1e-4)


def test_cs_flags_reach_the_solver(tmp_path):
    from mrijax import cs
    out = tmp_path / "cs"
    assert _run(out, "--model=cs", "--cs_iters=4", "--cs_tv=0.01", "--cs_wavelet_weight=0.002", "--cs_penalised",
                "--noise_draws=0", "--steps=2", "--snapshots=2") == 0
    res = json.loads((out / "results.json").read_text())
    assert res["model"] == {"model": "cs", "iters": 4, "tv": 0.01, "wavelet_weight": 0.002, "constrained": False}
    arr = common.load_npz(str(out / "arrays.npz"))
    mask = arr["mask"]
    recon = cs.reconstruction_map(mask, iters=4, tv=0.01, wavelet_weight=0.002, constrained=False)
    ev = attacks.evaluate(recon, arr["x"], mask, arr["snapshots"])
    np.testing.assert_allclose(arr["diff_norm"], np.asarray(ev["diff_norm"]), rtol=1e-4, atol=1e-6)


def test_cs_delta_and_tgv_reach_the_solver(tmp_path):
    from mrijax import cs
    out = tmp_path / "cs_delta"
    assert _run(out, "--model=cs", "--cs_iters=4", "--cs_delta=0.05", "--cs_tgv=2e-3", "--noise_draws=0",
                "--steps=2", "--snapshots=2") == 0
    res = json.loads((out / "results.json").read_text())
    assert res["model"] == {"model": "cs", "iters": 4, "delta": 0.05, "tgv": 2e-3}
    arr = common.load_npz(str(out / "arrays.npz"))
    recon = cs.reconstruction_map(arr["mask"], iters=4, delta=0.05, tgv=2e-3)
    ev = attacks.evaluate(recon, arr["x"], arr["mask"], arr["snapshots"])
    np.testing.assert_allclose(arr["diff_norm"], np.asarray(ev["diff_norm"]), rtol=1e-4, atol=1e-6)
    assert _run(tmp_path / "bad", "--model=cs", "--cs_delta=0.05", "--cs_penalised") == 2
    assert _run(tmp_path / "bad_tgv", "--model=cs", "--cs_tgv=2e-3", "--cs_tv=0") == 2


# ----------------------------------------------------------------------------- multi-coil (--coil_maps)


@pytest.fixture(scope="module")
def multicoil_file(tmp_path_factory):
    """2 random-ellipse phantoms times 4 smooth coil maps, as centred k-space (2, 4, 32, 32)."""
    from mrijax.data import phantoms
    from tests.test_sensitivity import _fft2c, smooth_coil_maps

    d = tmp_path_factory.mktemp("multicoil")
    x = np.stack([np.asarray(phantoms.random_ellipses(32, s)) for s in range(2)])
    np.save(d / "k.npy", _fft2c(smooth_coil_maps(32, 4)[None] * x[:, None]).astype(np.complex64))
    return d / "k.npy"


def _operator_norm_sq(maps, mask, iters=30):
    """||A||^2 of the SENSE operator with ``maps`` (C, H, W), by power iteration on A*A."""
    from mrijax import fourier
    v = np.random.default_rng(0).standard_normal(mask.shape) + 0j
    lam = 0.0
    for _ in range(iters):
        v = v / np.linalg.norm(v)
        w = np.asarray(fourier.normal(v, mask, maps))
        lam = float(np.real(np.vdot(v, w)))
        v = w
    return lam


def test_zero_filled_sense_adjoint_has_gain_at_most_one(tmp_path, multicoil_file):
    from mrijax import fourier
    from mrijax.data import images, sensitivity
    out = tmp_path / "zf"
    assert _run(out, f"--images=kspace:{multicoil_file}", "--coil_maps=estimate", "--model=zero_filled",
                "--num_images=2", "--batch=2", "--starts=2", "--noise_draws=2", "--nocompare_cs") == 0
    res = json.loads((out / "results.json").read_text())
    arr = common.load_npz(str(out / "arrays.npz"))
    assert res["coil_maps"] == "estimate" and res["coils"] == 4
    maps, mask, x = arr["coil_maps"], arr["mask"], arr["x"]
    assert maps.shape == (2, 4, 32, 32) and x.shape == (2, 32, 32)
    # x is the SENSE combination of the loaded coil k-space with maps from the mask's calibration block.
    k = images.load_multicoil_kspace(f"kspace:{multicoil_file}", 32, count=2)
    n_cal = sensitivity.calibration_size_from_mask(mask)
    assert res["calibration_size"] == [n_cal, n_cal]
    np.testing.assert_allclose(maps, sensitivity.estimate_coil_maps(k, calib_size=n_cal), atol=1e-5)
    np.testing.assert_allclose(x, fourier.adjoint(k, np.ones((32, 32), bool), maps), atol=1e-5)
    # The claim behind the bound: RSS-normalised maps give ||A|| <= 1, so ||A* A r|| <= ||A r||.
    for i in range(2):
        assert float(np.max(np.sum(np.abs(maps[i]) ** 2, axis=0))) <= 1 + 1e-5
        assert _operator_norm_sq(maps[i], mask) <= 1 + 1e-4
    for image in res["images"]:
        for snap in image["snapshots"]:
            assert snap["gain"] <= 1 + 1e-4
            assert snap["gain"] > 0.5   # and not trivially small
    assert arr["start_diff_norm"].shape == (2, 2)                 # --starts=2 per image
    np.testing.assert_array_equal(arr["best_start"], np.argmax(arr["start_diff_norm"], axis=1))
    # Each image is its own compiled call, whatever --batch says.
    assert (out / "batch1.npz").is_file()


def test_cascade_with_coil_maps_reports_numbers_equal_to_library_calls(tmp_path, multicoil_file):
    out = tmp_path / "cascade"
    assert _run(out, f"--images=kspace:{multicoil_file}", "--coil_maps=estimate", "--num_images=1",
                "--noise_draws=0", "--nocompare_cs", "--lipschitz_iters=2") == 0
    res = json.loads((out / "results.json").read_text())
    arr = common.load_npz(str(out / "arrays.npz"))
    assert res["coil_maps"] == "estimate" and res["coils"] == 4
    maps, mask = arr["coil_maps"], arr["mask"]
    recon, _ = common.load_reconstruction(common.DEFAULT_CHECKPOINT, mask, coil_maps=maps[0])
    ev = attacks.evaluate(recon, arr["x"], mask, arr["snapshots"], coil_maps=maps)
    np.testing.assert_allclose(arr["diff_norm"], np.asarray(ev["diff_norm"]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(arr["Ar_norm"], np.asarray(ev["Ar_norm"]), rtol=1e-4, atol=1e-6)
    for s, snap in enumerate(res["images"][0]["snapshots"]):
        assert snap["diff_norm"] == pytest.approx(float(ev["diff_norm"][s, 0]), rel=1e-4)
        assert np.linalg.norm(arr["snapshots"][s, 0]) <= 0.05 * np.linalg.norm(arr["x"][0]) * (1 + 1e-5)
    assert "lipschitz_gain" in res["images"][0]


def test_coil_maps_with_cs_comparison_is_penalised(tmp_path, multicoil_file):
    from mrijax import cs
    out = tmp_path / "cs"
    assert _run(out, f"--images=kspace:{multicoil_file}", "--coil_maps=estimate", "--model=zero_filled",
                "--cs_iters=3", "--noise_draws=0", "--steps=2", "--snapshots=2") == 0
    res = json.loads((out / "results.json").read_text())
    assert res["cs_constrained"] is False
    arr = common.load_npz(str(out / "arrays.npz"))
    cs_recon = cs.reconstruction_map(arr["mask"], coil_maps=arr["coil_maps"][0], iters=3, constrained=False)
    evc = attacks.evaluate(cs_recon, arr["x"], arr["mask"], arr["snapshots"], coil_maps=arr["coil_maps"])
    np.testing.assert_allclose(arr["cs_diff_norm"], np.asarray(evc["diff_norm"]), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("images_spec, extra, message", [
    ("single", [], "single-coil k-space of shape (2, 32, 32)"),
    ("ellipses", [], "not a multi-coil k-space source"),
    ("multi", ["--domain=measurement"], "--domain=measurement is for one coil"),
])
def test_coil_maps_refuse_single_coil_input_fast(tmp_path, capsys, multicoil_file, images_spec, extra, message):
    if images_spec == "single":
        np.save(tmp_path / "single.npy", np.load(multicoil_file)[:, 0])
        spec = f"kspace:{tmp_path / 'single.npy'}"
    else:
        spec = f"kspace:{multicoil_file}" if images_spec == "multi" else images_spec
    assert _run(tmp_path / "bad", f"--images={spec}", "--coil_maps=estimate", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad" / "run_config.json").exists()


def test_coil_maps_refuse_an_automap_checkpoint(tmp_path, capsys, monkeypatch, multicoil_file):
    from mrijax import checkpoint
    from mrijax.models import Automap
    # A stand-in AUTOMAP checkpoint: the refusal needs only the model's type.
    monkeypatch.setattr(checkpoint, "load_model", lambda path: (Automap(n=32, m=100), {}, {"model": {}}))
    (tmp_path / "automap").mkdir()
    assert _run(tmp_path / "bad", f"--images=kspace:{multicoil_file}", "--coil_maps=estimate",
                f"--model={tmp_path / 'automap'}") == 2
    assert "AUTOMAP" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "run_config.json").exists()
