"""Worst case vs random perturbations: files, numbers equal to direct library calls, the
fractions, resume after an interruption, bad flags.

A tiny random-weight cascade saved as a checkpoint keeps compilation short.
"""

import json

import numpy as np
import pytest
import jax

from experiments import common, noise_vs_worst_case as nvw
from tests.conftest import interrupt_then_resume
from mrijax import attacks, masks

SIZE = 32
RADIUS = 0.05
TINY = [f"--size={SIZE}", "--images=ellipses", "--num_images=2", "--steps=4", "--chunk=2", f"--radius={RADIUS}",
        "--noise_draws=10", "--draw_chunk=4", "--sample_n=2", "--seed=1"]


@pytest.fixture(scope="module")
def tiny_model(make_tiny_cascade):
    return make_tiny_cascade(SIZE)


def _run(out_dir, model, *extra):
    return nvw.main(["noise_vs_worst_case", f"--out_dir={out_dir}", f"--model={model}", *TINY, *extra])


@pytest.fixture(scope="module")
def whole_run(tiny_model, tmp_path_factory):
    """The run every test reads: interrupted after the second chunk of draws, then resumed.

    Returns ``(out_dir, results, arrays, saved)``; ``saved`` lists the files the resumed run wrote.
    """
    out = tmp_path_factory.mktemp("run")
    saved = interrupt_then_resume(
        lambda resume: _run(out, tiny_model, *(["--resume"] if resume else [])), "noise_chunk1.npz")
    res = json.loads((out / "results.json").read_text())
    return out, res, common.load_npz(str(out / "arrays.npz")), saved


def _recon(model_dir):
    mask = masks.for_acceleration("gaussian_lines", (SIZE, SIZE), 3.0, 0, sample_n=2)
    recon, _ = common.load_reconstruction(model_dir, mask)
    return recon, mask


def test_files_and_the_resumed_run_redoes_only_what_was_unfinished(whole_run):
    out, _, _, saved = whole_run
    for name in ("noise_vs_worst_case.png", "results.json", "arrays.npz", "run_config.json", "worst_case.npz",
                 "noise_chunk0.npz", "noise_chunk1.npz", "noise_chunk2.npz"):
        assert (out / name).is_file(), name
    # The search and the first two chunks were finished before the interruption.
    assert "worst_case.npz" not in saved and "noise_chunk0.npz" not in saved and "noise_chunk1.npz" not in saved
    assert "noise_chunk2.npz" in saved


def test_worst_case_numbers_equal_library_calls(whole_run, tiny_model):
    _, res, arr, _ = whole_run
    recon, mask = _recon(tiny_model)
    np.testing.assert_array_equal(arr["mask"], mask)
    x = arr["x"]
    ev = attacks.evaluate(recon, x, mask, arr["worst_r"])
    change = np.asarray(ev["psnr_perturbed"]) - np.asarray(ev["psnr_clean"])       # negative = worse
    np.testing.assert_allclose(arr["worst_psnr_change"], change, atol=1e-3)
    np.testing.assert_allclose(arr["worst_diff_norm"], ev["diff_norm"], rtol=1e-4)
    for i, image in enumerate(res["images"]):
        xn = np.linalg.norm(x[i])
        rn = np.linalg.norm(arr["worst_r"][i])
        assert rn <= RADIUS * xn * (1 + 1e-5)             # the projected search stays in the ball
        assert image["r_norm"] == pytest.approx(rn, rel=1e-4)
        assert image["radius"] == pytest.approx(RADIUS * xn, rel=1e-5)
        assert image["worst_psnr_change"] == pytest.approx(float(change[i]), abs=1e-3)
        assert image["worst_gain"] == pytest.approx(float(ev["diff_norm"][i] / ev["Ar_norm"][i]), rel=1e-4)
    # The same search run directly gives the same perturbation.
    direct = attacks.worst_case(recon, x, mask, key=jax.random.fold_in(jax.random.key(1), 0), steps=4,
                                radius=RADIUS, radius_relative_to="x")
    np.testing.assert_allclose(arr["worst_r"], direct.r, atol=1e-5)


def test_random_draws_have_the_worst_case_norm_and_equal_the_baseline(whole_run, tiny_model):
    _, res, arr, _ = whole_run
    recon, mask = _recon(tiny_model)
    assert arr["noise_psnr_change"].shape == (2, 10)          # 3 chunks of 4, the surplus 2 dropped
    np.testing.assert_allclose(arr["noise_r_norm"], np.broadcast_to(arr["worst_r_norm"][:, None], (2, 10)),
                               rtol=1e-4)
    # A random image keeps only part of its norm on the sampled k-space.
    assert np.all(arr["noise_Ar_norm"] < arr["noise_r_norm"])
    # Chunk 1 (draws 4..7) is noise_baseline with its own key.
    nb = attacks.noise_baseline(recon, arr["x"], mask, arr["worst_r_norm"][:, None], 4,
                                jax.random.fold_in(jax.random.key(1), 1000 + 1))
    np.testing.assert_allclose(arr["noise_psnr_change"][:, 4:8],
                               np.asarray(nb["psnr_perturbed"] - nb["psnr_clean"])[:, 0], atol=1e-3)
    np.testing.assert_allclose(arr["noise_diff_norm"][:, 4:8], np.asarray(nb["diff_norm"])[:, 0], rtol=1e-4)
    assert res["summary"]["draws_per_image"] == 10


def test_fractions_max_and_mean_are_computed_from_the_draws(whole_run):
    _, res, arr, _ = whole_run
    change, diff = arr["noise_psnr_change"], arr["noise_diff_norm"]          # PSNR change: negative = worse
    wchange, wdiff = arr["worst_psnr_change"], arr["worst_diff_norm"]
    assert res["thresholds"] == [0.5, 0.9]
    for i, image in enumerate(res["images"]):
        assert image["noise_psnr_change_mean"] == pytest.approx(change[i].mean(), abs=1e-5)
        assert image["noise_psnr_change_min"] == pytest.approx(change[i].min(), abs=1e-5)   # the strongest draw
        assert image["noise_diff_norm_max"] == pytest.approx(diff[i].max(), rel=1e-6)
        assert image["max_noise_over_worst_diff_norm"] == pytest.approx(diff[i].max() / wdiff[i], rel=1e-5)
        assert image["strongest_noise_over_worst_psnr_change"] == pytest.approx(change[i].min() / wchange[i],
                                                                                rel=1e-5)
        for t in (0.5, 0.9):
            expected = np.mean(diff[i] >= t * wdiff[i])
            assert image[f"fraction_within_{t:g}_diff_norm"] == pytest.approx(expected)
            got = image[f"fraction_within_{t:g}_psnr_change"]
            if wchange[i] < 0:
                # At least t times the worst case's PSNR loss: a change at most t times its change.
                assert got == pytest.approx(np.mean(change[i] <= t * wchange[i]))
            else:
                assert got is None                            # NaN in JSON: no harm done, no fraction
        assert image["fraction_beating_worst_diff_norm"] == pytest.approx(np.mean(diff[i] > wdiff[i]))
        assert image["fraction_beating_worst_psnr_change"] == pytest.approx(np.mean(change[i] < wchange[i]))
    assert res["summary"]["min_noise_psnr_change"] == pytest.approx(change.min(), abs=1e-5)
    assert res["summary"]["mean_noise_diff_norm"] == pytest.approx(diff.mean(), rel=1e-5)
    assert "negative = worse" in res["definitions"]["psnr_change"]
    # Even four steps of the search beat every random draw of the same norm.
    assert np.all(diff.max(axis=1) < wdiff)


def test_near_fraction_known_answers():
    noise = np.array([[0.0, 0.4, 0.5, 0.95, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0], [0.3, 0.1, 0.2, 0.0, 0.0]])
    worst = np.array([1.0, 4.0, 0.0])
    got = nvw.near_fraction(noise, worst, 0.5)
    np.testing.assert_allclose(got[:2], [3 / 5, 0.0])
    assert np.isnan(got[2])                                  # the worst case did no harm
    np.testing.assert_allclose(nvw.near_fraction(noise, worst, 0.9)[:2], [2 / 5, 0.0])
    np.testing.assert_allclose(nvw.near_fraction(noise, worst, 0.25)[:2], [4 / 5, 1.0])


def test_measurement_domain_draws_live_on_the_sampled_entries(tiny_model, tmp_path):
    out = tmp_path / "meas"
    assert _run(out, tiny_model, "--domain=measurement", "--noise_draws=4", "--draw_chunk=4", "--steps=2") == 0
    arr = common.load_npz(str(out / "arrays.npz"))
    # In the measurement domain r is masked k-space: ||A r|| = ||r||, for the search and the draws.
    np.testing.assert_allclose(arr["noise_Ar_norm"], arr["noise_r_norm"], rtol=1e-4)
    np.testing.assert_allclose(arr["worst_Ar_norm"], arr["worst_r_norm"], rtol=1e-4)


@pytest.mark.parametrize("extra, message", [
    (["--thresholds=0.5,1.5"], "--thresholds"),
    (["--thresholds=a"], "--thresholds"),
    (["--radius=0"], "--radius"),
    (["--real", "--domain=measurement"], "--real"),
    (["--example_image=2"], "--example_image"),
    (["--model=/nonexistent/folder"], "checkpoint"),
    (["--lr=-0.01"], "--lr must be > 0"),
    (["--tau=nan"], "--tau=nan: must be a finite number"),
])
def test_bad_flags_fail_fast_with_a_message(tmp_path, capsys, tiny_model, extra, message):
    assert _run(tmp_path / "bad", tiny_model, *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad" / "run_config.json").exists()


def test_an_existing_run_needs_resume_and_the_same_flags(whole_run, tiny_model, capsys):
    out = whole_run[0]
    assert _run(out, tiny_model) == 2
    assert "--resume" in capsys.readouterr().err
    assert _run(out, tiny_model, "--resume", "--noise_draws=12") == 2
    err = capsys.readouterr().err
    assert "differ" in err and "--noise_draws stored 10, requested 12" in err and err.count("\n") == 1
