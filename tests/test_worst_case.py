"""The main job end to end: files, numbers equal to library calls, resume, bad flags."""

import json
import os

import numpy as np
import pytest

from experiments import common, worst_case
from mrijax import attacks, masks, metrics, models

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
    # The final search state stays beside the batch: --resume with more --steps continues from it.
    assert (out / "state_batch0.npz").exists()
    res = json.loads((out / "results.json").read_text())
    arr = common.load_npz(str(out / "arrays.npz"))

    mask = masks.for_acceleration("gaussian_lines", (32, 32), 3.0, 0, sample_n=8)
    np.testing.assert_array_equal(arr["mask"], mask)
    recon, _ = common.load_reconstruction(common.DEFAULT_CHECKPOINT, mask)
    x = arr["x"]
    snaps = arr["snapshots"]                                   # (S, B, H, W)
    assert snaps.shape == (3, 2, 32, 32)
    ev = attacks.evaluate(recon, x, mask, snaps)
    change = np.asarray(ev["psnr_perturbed"]) - np.asarray(ev["psnr_clean"])     # negative = worse
    np.testing.assert_allclose(arr["psnr_change"], change, atol=1e-3)
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
            assert snap["psnr_change"] == pytest.approx(float(change[s, i]), abs=1e-3)
            # The noise baseline draws perturbations of exactly this norm.
            assert len(arr["noise_psnr_change"][i, s]) == 3
            assert snap["noise_psnr_change_min"] == pytest.approx(float(arr["noise_psnr_change"][i, s].min()))
    assert res["summary"]["min_psnr_change_final"] == pytest.approx(float(change[-1].min()), abs=1e-3)
    assert "psnr_change" in res["definitions"] and "negative = worse" in res["definitions"]["psnr_change"]
    assert "mean((|rec| - |ref|)^2)" in res["definitions"]["psnr"]
    for key in ("history_diff_norm", "history_r_rel", "history_ratio"):
        assert arr[key].shape == (2, 6), key                   # (images, steps)
    # The reported best start is the one with the largest output change.
    np.testing.assert_array_equal(arr["best_start"], np.argmax(arr["start_diff_norm"], axis=1))
    assert res["snapshot_iterations"] == [2, 4, 6]
    assert "lipschitz_gain" in res["images"][0]
    assert res["sampling_rate"] == pytest.approx(float(mask.mean()))


def test_resume_after_an_interruption_gives_the_uninterrupted_result(tmp_path, monkeypatch, capsys):
    # Two images in batches of one: the arrays stack the batches along the image axis.
    flags = ["--num_images=2", "--batch=1", "--noise_draws=0", "--nocompare_cs"]
    assert _run(tmp_path / "whole", *flags) == 0
    whole = common.load_npz(str(tmp_path / "whole" / "arrays.npz"))
    assert whole["x"].shape == (2, 32, 32)
    for key in ("history_diff_norm", "history_r_rel", "history_ratio", "history_Q"):
        assert whole[key].shape == (2, 6), key                 # (images, steps), not (12, 1)
    for i in range(2):                                         # each image's row is its own batch's history
        part = common.load_npz(str(tmp_path / "whole" / f"batch{i}.npz"))
        np.testing.assert_array_equal(whole["history_diff_norm"][i], part["history_diff_norm"][0])
    assert whole["snapshots"].shape == (3, 2, 32, 32) and whole["psnr_change"].shape == (3, 2)
    capsys.readouterr()

    # Ctrl-C in the second batch right after its first chunk was saved.
    real_save = common.save_npz

    def save_then_stop(path, **arrays):
        real_save(path, **arrays)
        if os.path.basename(path) == "state_batch1.npz":
            raise KeyboardInterrupt
    monkeypatch.setattr(common, "save_npz", save_then_stop)
    assert _run(tmp_path / "cut", *flags) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "interrupted at iteration 3 of batch 2/2; rerun with --resume"
    assert "Traceback" not in err and err.count("interrupted") == 1
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
    assert resumed.keys() == whole.keys()
    for k in ("r", "snapshots", "perturbed", "psnr_change", "history_diff_norm", "history_ratio"):
        assert resumed[k].shape == whole[k].shape, k
        np.testing.assert_allclose(resumed[k], whole[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_history_figure_plots_each_images_history(tmp_path):
    """history.png: one line per image whose points are that image's (images, steps) history."""
    rng = np.random.default_rng(0)
    arrays = {k: rng.random((3, 5)) for k, _ in worst_case.HISTORY_PANELS}
    fig = worst_case.history_figure(arrays)
    try:
        assert len(fig.axes) == len(worst_case.HISTORY_PANELS)
        for ax, (key, _) in zip(fig.axes, worst_case.HISTORY_PANELS):
            lines = ax.get_lines()
            assert len(lines) == 3, key                        # one per image, not one per iteration
            for i, line in enumerate(lines):
                np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 6))
                np.testing.assert_array_equal(line.get_ydata(), arrays[key][i], err_msg=key)
    finally:
        common.pyplot().close(fig)


def test_the_run_plots_the_history_it_saves(tmp_path, monkeypatch):
    figures = []
    real = worst_case.history_figure
    monkeypatch.setattr(worst_case, "history_figure", lambda arrays: figures.append(real(arrays)) or figures[-1])
    out = tmp_path / "run"
    assert _run(out, "--model=zero_filled", "--num_images=2", "--batch=1", "--noise_draws=0", "--nocompare_cs") == 0
    arr = common.load_npz(str(out / "arrays.npz"))
    (fig,) = figures
    for ax, (key, _) in zip(fig.axes, worst_case.HISTORY_PANELS):
        ys = [line.get_ydata() for line in ax.get_lines()]
        assert len(ys) == 2
        for i in range(2):
            np.testing.assert_allclose(ys[i], arr[key][i], err_msg=key)
            assert np.all(np.isfinite(ys[i]))                  # a line with points, not an empty plot
    assert (out / "history.png").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--region=0.5,0.5,0.2,0.9"], "--region"),
    (["--snapshots=0,3"], "--snapshots"),
    (["--model=/nonexistent/folder"], "checkpoint"),
    (["--model=deepmri_npz"], "--weights"),
    (["--radius=nan"], "--radius=nan: must be a finite number"),
    (["--radius=inf"], "--radius=inf: must be a finite number"),
    (["--lr=-0.1"], "--lr must be > 0"),
    (["--lr=0"], "--lr must be > 0"),
    (["--lam=-1"], "--lam"),
])
def test_bad_flags_fail_fast_with_a_message(tmp_path, capsys, extra, message):
    assert _run(tmp_path / "bad", *extra) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("error: ") and err.count("\n") == 1      # one line, no traceback
    assert not (tmp_path / "bad" / "run_config.json").exists()


@pytest.mark.parametrize("bad, index, count, message", [
    ("nan", 3, 2, "image 3 holds 2 non-finite value(s)"),      # --num_images=2 takes images 1 and 3 of 4
    ("inf", 1, 2, "image 1 holds 2 non-finite value(s)"),
    ("constant", 1, 4, "image 1 of the 4 loaded is constant"),
])
def test_a_bad_image_is_refused_before_any_work(tmp_path, capsys, monkeypatch, bad, index, count, message):
    x = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
    if bad == "constant":
        x[index] = 0.7
    else:
        x[index, 3, 4:6] = float(bad)
    path = tmp_path / "images.npy"
    np.save(path, x)
    monkeypatch.setattr(attacks, "setup", lambda *a, **k: pytest.fail("the search started"))
    monkeypatch.setattr(common, "reconstruction_factory", lambda *a, **k: pytest.fail("a model was loaded"))
    assert _run(tmp_path / "bad", f"--images={path}", f"--num_images={count}") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err and str(path) in err
    assert not (tmp_path / "bad").exists()


def test_a_missing_optional_reader_is_one_line_with_the_install_hint(tmp_path, capsys, monkeypatch):
    import sys
    (tmp_path / "slice.dcm").write_bytes(b"not really DICOM")
    monkeypatch.setitem(sys.modules, "pydicom", None)          # as if pydicom were not installed
    assert _run(tmp_path / "out", f"--images={tmp_path / 'slice.dcm'}") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: pydicom is needed") and err.count("\n") == 1
    assert "pip install -e '.[data]'" in err
    assert not (tmp_path / "out").exists()


def test_an_existing_run_needs_resume_and_the_same_flags(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["worst_case", f"--out_dir={out}", *TINY, "--model=zero_filled", "--noise_draws=0", "--nocompare_cs"]
    stored = {k: v for k, v in common.flag_dict(common.parse(worst_case.define_flags, argv)).items()
              if k not in worst_case._NOT_NUMERIC}
    stored.update(steps=5, batch=2)
    out.mkdir()
    common.save_json(str(out / "run_config.json"), stored)
    assert worst_case.main(argv) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and err.startswith("error: ") and err.count("\n") == 1
    assert worst_case.main(argv + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    # Each flag that differs, with the stored and the requested value; nothing else.
    assert "differ" in err and "--batch stored 2, requested 4; --steps stored 5, requested 6 " in err
    assert "--size" not in err


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
    monkeypatch.setattr(models, "load", lambda path: (Automap(n=32, m=100), {}, {"model": {}}))
    (tmp_path / "automap").mkdir()
    assert _run(tmp_path / "bad", f"--images=kspace:{multicoil_file}", "--coil_maps=estimate",
                f"--model={tmp_path / 'automap'}") == 2
    assert "'automap' model, which takes no coil maps" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "run_config.json").exists()


def test_a_model_trained_on_another_mask_kind_gets_a_warning(tmp_path, capsys):
    # The shipped cascade was trained with gaussian_lines masks; radial masks are a distribution shift.
    assert _run(tmp_path / "radial", "--mask=radial", "--noise_draws=0", "--nocompare_cs", "--steps=2",
                "--snapshots=2") == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "trained with 'gaussian_lines' masks" in err and "--mask=radial" in err
    res = json.loads((tmp_path / "radial" / "results.json").read_text())
    assert res["model"]["trained_mask_kind"] == "gaussian_lines"
    assert _run(tmp_path / "lines", "--noise_draws=0", "--nocompare_cs", "--steps=2", "--snapshots=2") == 0
    assert "warning:" not in capsys.readouterr().err


def test_resume_with_more_steps_continues_a_constant_step_search(tmp_path, capsys):
    grow = ["--schedule=constant", "--snapshots=2,4", "--noise_draws=0", "--nocompare_cs", "--num_images=2",
            "--batch=1"]
    assert _run(tmp_path / "grown", *grow, "--steps=4") == 0
    assert _run(tmp_path / "grown", *grow, "--steps=7", "--resume") == 0
    assert "--steps 4 -> 7" in capsys.readouterr().out
    assert _run(tmp_path / "straight", *grow, "--steps=7") == 0
    grown = np.load(tmp_path / "grown" / "arrays.npz")
    straight = np.load(tmp_path / "straight" / "arrays.npz")
    assert grown["history_Q"].shape == (2, 7)
    for key in ("r", "snapshots", "history_Q", "history_diff_norm", "stopped_at"):
        np.testing.assert_array_equal(grown[key], straight[key], err_msg=key)
    # With the cosine schedule (the default with a radius) the steps so far depend on --steps.
    assert _run(tmp_path / "cosine", "--noise_draws=0", "--nocompare_cs", "--steps=4", "--snapshots=2,4") == 0
    capsys.readouterr()
    assert _run(tmp_path / "cosine", "--noise_draws=0", "--nocompare_cs", "--steps=6", "--snapshots=2,4",
                "--resume") == 2
    err = capsys.readouterr().err
    assert "--steps stored 4, requested 6" in err and "--schedule=constant" in err


# ----------------------------------------------------------------------------- corrupt files


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_load_npz_names_a_corrupt_or_truncated_file(tmp_path):
    path = tmp_path / "a.npz"
    common.save_npz(str(path), x=np.arange(1000.0))
    np.testing.assert_array_equal(common.load_npz(str(path))["x"], np.arange(1000.0))
    for damage in (_truncate, lambda p: p.write_bytes(b""), lambda p: p.write_bytes(b"PK\x03\x04junk")):
        common.save_npz(str(path), x=np.arange(1000.0))
        damage(path)
        with pytest.raises(ValueError, match="corrupt or truncated") as err:
            common.load_npz(str(path))
        assert str(path) in str(err.value) and isinstance(err.value, common.CorruptFileError)
    with pytest.raises(FileNotFoundError):
        common.load_npz(str(tmp_path / "missing.npz"))


def test_corrupt_saved_files_on_resume_never_lose_the_run(tmp_path, monkeypatch, capsys):
    import shutil
    from mrijax import checkpoint
    flags = ["--num_images=1", "--batch=1", "--noise_draws=0", "--nocompare_cs"]   # chunk 3 of 6 steps
    assert _run(tmp_path / "whole", *flags) == 0
    whole = common.load_npz(str(tmp_path / "whole" / "arrays.npz"))

    def same_as_whole(out):
        resumed = common.load_npz(str(out / "arrays.npz"))
        for k in ("r", "snapshots", "psnr_change", "history_diff_norm", "history_ratio"):
            np.testing.assert_allclose(resumed[k], whole[k], rtol=1e-5, atol=1e-6, err_msg=k)

    # A corrupt finished batch is recomputed (from its saved final state), with one line; stale
    # temporaries of killed writes go.
    done = tmp_path / "done"
    shutil.copytree(tmp_path / "whole", done)
    _truncate(done / "batch0.npz")
    stale = done / ".batch0.npz.abcdefgh.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (checkpoint._STARTED - 60,) * 2)
    capsys.readouterr()
    assert _run(done, *flags, "--resume") == 0
    out = capsys.readouterr().out
    assert f"[batch 1/1] {done / 'batch0.npz'} is corrupt or truncated; recomputing it" in out
    assert "already finished" not in out and not stale.exists()
    same_as_whole(done)

    real_save = common.save_npz
    for saves, line in ((2, "is corrupt or truncated (removed); resuming from the previous state "
                            "state_batch0.prev.npz at iteration 3"),
                        (1, "is corrupt or truncated (removed) and no good state is left; restarting this "
                            "batch from iteration 0")):
        # Ctrl-C right after the search state was saved for the `saves`-th time, then that state is damaged.
        count = []

        def save_then_stop(path, **arrays):
            real_save(path, **arrays)
            if os.path.basename(path) == "state_batch0.npz":
                count.append(1)
                if len(count) == saves:
                    raise KeyboardInterrupt
        monkeypatch.setattr(common, "save_npz", save_then_stop)
        cut = tmp_path / f"cut{saves}"
        assert _run(cut, *flags) == 130
        monkeypatch.setattr(common, "save_npz", real_save)
        assert (cut / "state_batch0.prev.npz").exists() == (saves == 2)
        _truncate(cut / "state_batch0.npz")
        capsys.readouterr()
        assert _run(cut, *flags, "--resume") == 0
        printed = capsys.readouterr()
        assert f"[batch 1/1] {cut / 'state_batch0.npz'} {line}" in printed.out
        assert "Traceback" not in printed.err
        same_as_whole(cut)


def test_a_target_image_with_nan_is_refused_in_one_line(tmp_path, capsys):
    target = np.zeros((32, 32))
    target[3, 4] = np.nan
    np.save(tmp_path / "target.npy", target)
    assert _run(tmp_path / "run", f"--target={tmp_path / 'target.npy'}", "--noise_draws=0", "--nocompare_cs") == 2
    assert "holds NaN" in capsys.readouterr().err
