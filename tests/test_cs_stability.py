"""The CS stability sweep: the zero-filled reference scores exactly 1, numbers equal direct library
calls, foreign perturbations, resume after an interruption, bad settings fail before any work."""

import json

import jax
import numpy as np
import pytest

from experiments import common, cs_stability
from tests.conftest import interrupt_then_resume
from mrijax import attacks, cs, fourier, masks, metrics

SIZE = 32
SETTINGS = ["--setting=zero_filled", "--setting=constrained:iters=15"]
TINY = [f"--size={SIZE}", "--images=ellipses", "--num_images=2", "--steps=4", "--chunk=2", "--starts=2",
        "--noise_draws=3", "--sample_n=2", "--seed=1", "--radius=0.05", "--lipschitz_iters=3"]


def _run(out_dir, *extra):
    return cs_stability.main(["cs_stability", f"--out_dir={out_dir}", *TINY, *extra])


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A stand-in for a worst_case run's arrays.npz: two images, a mask, two snapshots of random r."""
    from mrijax.data.images import load_images
    rng = np.random.default_rng(0)
    x = np.asarray(load_images("ellipses", SIZE, count=2, seed=1))
    mask = masks.for_acceleration("gaussian_lines", (SIZE, SIZE), 3.0, 0, sample_n=2)
    snaps = 0.05 * (rng.standard_normal((2,) + x.shape) + 1j * rng.standard_normal((2,) + x.shape))
    path = tmp_path_factory.mktemp("foreign") / "arrays.npz"
    np.savez(path, x=x, mask=mask, snapshots=snaps.astype(np.complex64))
    return path, x, mask, snaps.astype(np.complex64)


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, foreign):
    """Interrupted after the first setting, then resumed: ``(out_dir, results, arrays, saved)``.

    The images, mask and foreign perturbations come from ``foreign``'s file (``--perturbations``).
    """
    out = tmp_path_factory.mktemp("run")
    extra = [f"--perturbations={foreign[0]}", *SETTINGS]
    saved = interrupt_then_resume(lambda resume: _run(out, *extra, *(["--resume"] if resume else [])),
                                  "setting0.npz")
    res = json.loads((out / "results.json").read_text())
    return out, res, common.load_npz(str(out / "arrays.npz")), saved


def test_files_and_resume_redoes_only_unfinished_settings(whole_run):
    out, res, _, saved = whole_run
    for name in ("cs_stability.png", "results.json", "arrays.npz", "run_config.json",
                 "setting0.npz", "setting1.npz"):
        assert (out / name).is_file(), name
    assert "setting0.npz" not in saved and "setting1.npz" in saved
    assert [e["setting"] for e in res["settings"]] == [s.split("=", 1)[1] for s in SETTINGS]


def test_zero_filled_reference_scores_exactly_one(whole_run):
    # A* restricted to the sampled entries is an isometry: any e of one norm changes A* (y + e) by ||e||.
    _, res, _, _ = whole_run
    zf = res["settings"][0]
    assert zf["worst_gain"] == pytest.approx(1.0, abs=1e-4)
    assert zf["noise_gain"] == pytest.approx(1.0, abs=1e-4)
    assert zf["ratio_worst_to_noise"] == pytest.approx(1.0, abs=1e-4)
    assert zf["gain_over_zero_filled_db"] == pytest.approx(0.0, abs=1e-4)
    assert zf["worst_kernel_share"] == pytest.approx(0.0, abs=1e-3)
    assert zf["lipschitz_gain"] == pytest.approx(1.0, abs=1e-4)
    assert zf["ratio_lipschitz_to_noise"] == pytest.approx(1.0, abs=1e-4)


def test_numbers_equal_direct_library_calls(whole_run, foreign):
    _, res, arr, _ = whole_run
    x, mask = arr["x"], arr["mask"]
    np.testing.assert_array_equal(x, foreign[1])          # images and mask came from --perturbations
    np.testing.assert_array_equal(mask, foreign[2])
    recon = cs.reconstruction_map(mask, constrained=True, iters=15)
    row = res["settings"][1]
    assert row["options"] == {"iters": 15, "constrained": True}
    clean = np.asarray(recon(fourier.forward(x, mask)))
    np.testing.assert_allclose(arr["setting1_clean"], clean, rtol=1e-4, atol=1e-5)
    e = arr["setting1_r"]                       # measurement domain: masked k-space of norm 0.05 ||x||
    e_norm = np.linalg.norm(e.reshape(2, -1), axis=1)
    assert np.all(e_norm <= 0.05 * np.linalg.norm(x.reshape(2, -1), axis=1) * (1 + 1e-5))
    np.testing.assert_allclose([p["worst_r_norm"] for p in row["per_image"]], e_norm, rtol=1e-4)
    np.testing.assert_array_equal(e[:, ~mask], 0)
    perturbed = np.asarray(recon(fourier.forward(x, mask) + e))
    np.testing.assert_allclose(arr["setting1_perturbed"], perturbed, rtol=1e-4, atol=1e-5)
    diff = np.linalg.norm((perturbed - clean).reshape(2, -1), axis=1)
    assert row["worst_diff_norm"] == pytest.approx(diff.mean(), rel=1e-4)
    assert row["worst_gain"] == pytest.approx(np.mean(diff / np.linalg.norm(e.reshape(2, -1), axis=1)), rel=1e-4)
    psnr = np.asarray(metrics.psnr(clean, x))
    assert row["psnr_clean"] == pytest.approx(psnr.mean(), abs=1e-3)
    # PSNR change = perturbed - clean (measurement-domain e: against x), negative = worse.
    change = np.asarray(metrics.psnr(perturbed, x)) - psnr
    np.testing.assert_allclose([p["worst_psnr_change"] for p in row["per_image"]], change, atol=2e-3)
    assert row["worst_psnr_change"] == pytest.approx(change.mean(), abs=2e-3) and row["worst_psnr_change"] < 0
    zf = np.asarray(metrics.psnr(fourier.adjoint(fourier.forward(x, mask), mask), x))
    assert row["gain_over_zero_filled_db"] == pytest.approx((psnr - zf).mean(), abs=1e-3)
    # The ratio is the worst change over the mean change of the recorded random draws.
    per = row["per_image"]
    for i in range(2):
        assert per[i]["ratio_worst_to_noise"] == pytest.approx(diff[i] / per[i]["noise_diff_norm_mean"], rel=1e-4)
    # CS reacts to its worst case more than to noise, and more than zero filling does.
    assert row["ratio_worst_to_noise"] > 1.0
    assert row["worst_gain"] > res["settings"][0]["worst_gain"]
    # The linearised gain is local_lipschitz's (same key stream), and no random direction beats it.
    ll = attacks.local_lipschitz(recon, x, mask, 3, jax.random.fold_in(jax.random.key(1), 3000))
    np.testing.assert_allclose([p["lipschitz_gain"] for p in per], np.asarray(ll["gain"]), rtol=1e-3)
    assert row["lipschitz_gain"] > row["noise_gain"]


def test_foreign_perturbations_are_evaluated_like_the_library(whole_run, foreign):
    _, res, _, _ = whole_run
    _, x, mask, snaps = foreign
    row = res["settings"][1]
    recon = cs.reconstruction_map(mask, constrained=True, iters=15)
    ev = attacks.evaluate(recon, x, mask, snaps)
    change = np.asarray(ev["psnr_perturbed"]) - np.asarray(ev["psnr_clean"])       # negative = worse
    np.testing.assert_allclose(row["foreign_psnr_change"], change.mean(axis=1), atol=2e-3)
    np.testing.assert_allclose(row["foreign_psnr_change_min"], change.min(axis=1), atol=2e-3)
    np.testing.assert_allclose(row["foreign_gain"],
                               (np.asarray(ev["diff_norm"]) / np.asarray(ev["Ar_norm"])).mean(axis=1), rtol=1e-3)
    assert len(row["foreign_noise_psnr_change"]) == 2
    # Zero filling passes A* A r straight through: gain exactly 1.
    np.testing.assert_allclose(res["settings"][0]["foreign_gain"], 1.0, atol=1e-4)


def test_parse_setting_reads_every_key():
    s = cs_stability.parse_setting("penalised:tv=0:wavelet_weight=1e-3:iters=7:wavelet=Haar:levels=2:"
                                   "penalise_approximation=true")
    assert s["form"] == "penalised"
    assert s["options"] == {"tv": 0.0, "wavelet_weight": 1e-3, "iters": 7, "wavelet": "haar", "levels": 2,
                            "penalise_approximation": True, "constrained": False}
    assert cs_stability.parse_setting("zero_filled")["options"] == {}
    assert cs_stability.parse_setting("constrained:delta=0.02")["options"] == {"delta": 0.02, "constrained": True}
    assert cs_stability.parse_setting("constrained:tgv=2e-3")["options"] == {"tgv": 2e-3, "constrained": True}


@pytest.mark.parametrize("setting, message", [
    ("lasso", "form must be one of"),
    ("penalised:tv", "expected key=value"),
    ("penalised:tv=-1", "bad value for tv"),
    ("constrained:iters=0", "bad value for iters"),
    ("constrained:wavelet=db99", "bad value for wavelet"),
    ("constrained:alpha=1", "unknown key 'alpha'"),
    ("constrained:tv=1:tv=2", "tv given twice"),
    ("zero_filled:tv=1", "zero_filled takes no options"),
    ("penalised:tv=0:wavelet_weight=0", "both 0"),
    ("constrained:penalise_approximation=yes", "bad value for penalise_approximation"),
    ("penalised:delta=0.1", "--setting='penalised:delta=0.1': delta=0.1 relaxes the constrained form"),
    ("constrained:tv=0:tgv=1e-3", "--setting='constrained:tv=0:tgv=1e-3': tgv needs tv > 0"),
])
def test_bad_settings_fail_before_any_work(tmp_path, capsys, setting, message):
    out = tmp_path / "out"
    assert cs_stability.main(["cs_stability", f"--out_dir={out}", f"--setting={setting}"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_bad_perturbation_files_fail_naming_the_problem(tmp_path, capsys):
    path = tmp_path / "p.npz"
    np.savez(path, x=np.zeros((1, 8, 8), np.float32), mask=np.ones((8, 8), bool))
    assert cs_stability.main(["cs_stability", f"--out_dir={tmp_path / 'o'}", f"--perturbations={path}"]) == 2
    assert "lacks ['snapshots']" in capsys.readouterr().err
    np.savez(path, x=np.zeros((1, 8, 8), np.float32), mask=np.ones((8, 8), bool),
             snapshots=np.full((1, 1, 8, 8), np.nan, np.complex64))
    assert cs_stability.main(["cs_stability", f"--out_dir={tmp_path / 'o'}", f"--perturbations={path}"]) == 2
    assert "snapshots holds NaN" in capsys.readouterr().err
    assert cs_stability.main(["cs_stability", f"--out_dir={tmp_path / 'o'}",
                              f"--perturbations={tmp_path / 'none.npz'}"]) == 2
    assert "no such file" in capsys.readouterr().err
